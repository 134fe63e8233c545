"""Shared fixtures and options of the benchmark suite.

Options narrow the grid (comma lists, default: everything for the device):
  --bench-device cuda|cpu  --bench-ops  --bench-dtypes fp32,bf16,fp16  --bench-configs  --bench-lods
  --bench-backends ref,compile,cpu,cuda,triton  --bench-threads N (torch CPU threads)
and bound the run (tools/gpu_verify.sh uses them to finish inside one device call):
  --bench-env ENV.json   take the copy bandwidth (the "% of bandwidth" ceiling) from tools/gpu_env.py
  --bench-time-limit S   cases that would start S seconds after the session began are skipped
  --bench-case-timeout S a case still running after S seconds fails (and the session goes on)
The commit recorded in the JSON is ALAE_FAST_COMMIT if set (a copy of the tree without .git).
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import time

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
    group.addoption("--bench-env", default=None, help="env JSON of tools/gpu_env.py: its copy bandwidth is the ceiling")
    group.addoption("--bench-time-limit", type=float, default=None, help="skip cases starting later than S s in")
    group.addoption("--bench-case-timeout", type=float, default=None, help="fail a case running longer than S s")


_SESSION_START = time.monotonic()


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


class CaseTimeout(BaseException):
    """A case overran its time (a BaseException, so that no `except Exception` in torch swallows it)."""


def pytest_collection_modifyitems(config, items):
    """torch.compile cases run last: they dominate the wall time, so --bench-time-limit cuts them first."""
    items.sort(key=lambda item: "compile" in getattr(getattr(item, "callspec", None), "id", ""))


@pytest.fixture(autouse=True)
def _time_bounds(request):
    """--bench-time-limit and --bench-case-timeout: skip cases past the limit, fail one that overruns."""
    limit, case_timeout = (request.config.getoption(o) for o in ("--bench-time-limit", "--bench-case-timeout"))
    if limit is None and case_timeout is None:
        yield
        return
    left = float("inf") if limit is None else limit - (time.monotonic() - _SESSION_START)
    if left <= 0:
        pytest.skip(f"past --bench-time-limit {limit:g} s")
    seconds = min(left, case_timeout or float("inf"))

    def overrun(signum, frame):
        raise CaseTimeout(f"still running after {seconds:.0f} s (--bench-case-timeout / --bench-time-limit)")

    previous = signal.signal(signal.SIGALRM, overrun)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def copy_bw(request):
    """copy_bw(device): the device's copy bandwidth (the % of bandwidth ceiling), from --bench-env for
    its device, else measured once per session."""
    cache: dict = {}
    env_path = request.config.getoption("--bench-env")
    if env_path:
        with open(env_path) as f:
            env = json.load(f)
        if env.get("copy"):
            cache[torch.device("cuda")] = env["copy"]

    def get(device: torch.device) -> dict:
        key = torch.device(device.type) if device.index in (None, 0) else device
        if key not in cache:
            cache[key] = timing.copy_bandwidth(device)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def baseline_times() -> dict:
    """Median times of the ref and compile cases run so far, for speedups: key (case id, backend)."""
    return {}


def _git_commit() -> str | None:
    if os.environ.get("ALAE_FAST_COMMIT"):
        return os.environ["ALAE_FAST_COMMIT"]
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
