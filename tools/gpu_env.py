"""Step `env` of tools/gpu_verify.sh: the machine, its software and its two measured ceilings, as JSON.

    python3 tools/gpu_env.py OUT.json

Records nvidia-smi's view (name, driver, memory, clocks, power limit), the torch, CUDA, triton
and tool versions, the device's SM count, L2 and memory, and measures the ceilings that every
"% of bandwidth" and FLOP rate of the benchmarks is read against: a device-to-device copy of
512 MiB (GB/s counting bytes read + written) and a dense 8192³ bf16 matmul on random inputs
(TFLOP/s). Exits 3, after writing what it knows, when no CUDA device is visible.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from benchmarks import timing  # noqa: E402

NO_CUDA = 3
SMI_FIELDS = ("name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "clocks.mem",
              "power.limit", "temperature.gpu", "persistence_mode")
PACKAGES = ("torch", "triton", "numpy", "pytest", "pytest-xdist", "pytest-benchmark", "setuptools", "ninja")


def _run(*cmd: str) -> str | None:
    """stdout of a command, or None if it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def nvidia_smi() -> dict | None:
    out = _run("nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader")
    if not out:
        return None
    return dict(zip(SMI_FIELDS, (v.strip() for v in out.splitlines()[0].split(","))))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def software() -> dict:
    nvcc = _run("nvcc", "--version")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "packages": {p: _version(p) for p in PACKAGES},
        "nvcc": nvcc.splitlines()[-1] if nvcc else None,
        "compute_sanitizer": shutil.which("compute-sanitizer"),
    }


def device_properties(device: torch.device) -> dict:
    props = torch.cuda.get_device_properties(device)
    return {"device": props.name, "device_type": "cuda", "compute_capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count, "memory_bytes": props.total_memory,
            "l2_bytes": getattr(props, "L2_cache_size", None)}


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.json")
    env = {"kind": "env", "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": os.environ.get("ALAE_FAST_COMMIT"), "host": platform.node(),
           "nvidia_smi": nvidia_smi(), **software()}
    status = 0
    if torch.cuda.is_available():
        device = torch.device("cuda")
        env.update(device_properties(device))
        env["copy"] = timing.copy_bandwidth(device)
        env["matmul"] = timing.matmul_tflops(device)
        env["copy_GBps"], env["matmul_TFLOPs"] = env["copy"]["copy_GBps"], env["matmul"]["TFLOPs"]
    else:
        env.update(device=None, device_type="cpu", error="no CUDA device is visible to torch")
        status = NO_CUDA
    with open(sys.argv[1], "w") as f:
        json.dump(env, f, indent=1)
    print(json.dumps(env, indent=1))
    if status:
        print(f"gpu_env: {env['error']}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
