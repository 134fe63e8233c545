"""Shared fixtures and options of the benchmark suite.

Options narrow the grid (comma lists, default: everything for the device):
  --bench-device cuda|cpu  --bench-ops  --bench-dtypes fp32,bf16,fp16  --bench-configs  --bench-lods
  --bench-backends ref,compile,cpu,cuda,triton  --bench-threads N (torch CPU threads)
"""

from __future__ import annotations

import platform
import re
import subprocess

import pytest
import torch

from benchmarks import timing

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pytest_addoption(parser):
    group = parser.getgroup("alae_fast benchmarks")
    group.addoption("--bench-device", default=None, help="cuda or cpu (default: cuda when available)")
    group.addoption("--bench-threads", type=int, default=None, help="torch.set_num_threads for CPU timing")
    for name, what in (("ops", "op names"), ("dtypes", "fp32,bf16,fp16"), ("configs", "config names"),
                       ("lods", "lod indices"), ("backends", "ref,compile,cpu,cuda,triton")):
        group.addoption(f"--bench-{name}", default=None, help=f"comma list of {what} (default: all)")


def pytest_configure(config):
    # pyproject.toml declares these too; registering here keeps `pytest benchmarks` strict-marker safe anywhere.
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "smoke: tiny benchmark cases that run on CPU in CI")
    if config.getoption("--bench-threads", None):
        torch.set_num_threads(config.getoption("--bench-threads"))


def option_list(config, name: str):
    """The comma list given to --bench-<name>, or None."""
    value = config.getoption(f"--bench-{name}")
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def bench_device(config) -> torch.device:
    name = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    return bench_device(request.config)


@pytest.fixture(scope="session")
def copy_bw():
    """copy_bw(device): the device's copy bandwidth, measured once per session (the % of bandwidth ceiling)."""
    cache: dict = {}

    def get(device: torch.device) -> dict:
        if device not in cache:
            cache[device] = timing.copy_bandwidth(device)
        return cache[device]

    return get


@pytest.fixture(scope="session")
def baseline_times() -> dict:
    """Median times of the ref and compile cases run so far, for speedups: key (case id, backend)."""
    return {}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def pytest_benchmark_update_machine_info(config, machine_info):
    device = bench_device(config)
    info = {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "cuda": torch.version.cuda, "commit": _git_commit(), "cpu_threads": torch.get_num_threads()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    machine_info["alae_fast"] = info
