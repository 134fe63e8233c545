"""Precise timing: CUDA events on a GPU, perf_counter on the CPU; warm-up first, medians after.

Each repetition can take the next of several input sets, so that small inputs are not
timed out of a warm cache (METHOD.md: rotate when the inputs fit in the cache).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch

# Input sets are rotated until together they exceed this many bytes (about 5x the L2 of an H100).
ROTATE_BYTES = {"cuda": 256 << 20, "cpu": 64 << 20}
MAX_SETS = 16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sets_needed(bytes_per_set: int, device: torch.device) -> int:
    """How many input sets make a rotation larger than the device's caches."""
    target = ROTATE_BYTES.get(device.type, ROTATE_BYTES["cpu"])
    return max(1, min(MAX_SETS, -(-target // max(bytes_per_set, 1))))


def measure(fns: Sequence[Callable[[], object]], device: torch.device, *, warmup: int = 5,
            reps: int = 50, min_s: float = 0.2, max_reps: int = 2000) -> dict:
    """Median seconds of one call, cycling through `fns` (one closure per input set).

    Runs at least `reps` calls and keeps going until `min_s` seconds were timed.
    """
    for i in range(warmup):
        fns[i % len(fns)]()
    sync(device)
    times: list[float] = []
    total = 0.0
    while len(times) < reps or (total < min_s and len(times) < max_reps):
        fn = fns[len(times) % len(fns)]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
        times.append(t)
        total += t
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return {"median_s": statistics.median(times), "p10_s": q[0], "p90_s": q[-1], "reps": len(times),
            "input_sets": len(fns)}


def copy_bandwidth(device: torch.device) -> dict:
    """Bytes/s of a large device copy (bytes read + bytes written), the bandwidth ceiling."""
    nbytes = (512 << 20) if device.type == "cuda" else (128 << 20)
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    stats = measure([lambda: dst.copy_(src)], device, warmup=3, reps=20, min_s=0.5)
    return {"copy_bytes": 2 * nbytes, "copy_GBps": 2 * nbytes / stats["median_s"] / 1e9, **stats}


def matmul_tflops(device: torch.device, n: int = 8192, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Dense n×n×n matmul rate on random inputs (2n³ FLOP per product), the arithmetic ceiling."""
    gen = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=gen) for _ in range(2))
    stats = measure([lambda: a @ b], device, warmup=3, reps=20, min_s=0.3)
    return {"matmul_n": n, "matmul_dtype": str(dtype).replace("torch.", ""),
            "TFLOPs": 2 * n**3 / stats["median_s"] / 1e12, **stats}


class PeakMemory:
    """Peak bytes allocated on a CUDA device inside the block; None on the CPU (torch has no counter)."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
