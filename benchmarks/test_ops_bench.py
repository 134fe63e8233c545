"""Fused ops: parity against the fp64 reference, then forward and forward+backward timing.

Grid: op × backend × dtype × shape × mode. Backends: 'ref' (eager reference), 'compile'
(the reference under torch.compile), and the kernels 'cpu' (CPU only), 'cuda', 'triton'
(GPU only; Triton's CPU interpreter is far too slow to time). Shapes are StyleALAE's real
layer shapes (benchmarks/shapes.py). A parity mismatch fails the case before any timing: the
parity rule of testing.op_cases (at most 2x the error of the eager reference in the same
dtype against the fp64 reference, both computed on the benchmark device). The torch.compile
cases run after all others (benchmarks/conftest.py), so a time limit cuts them first.

Minimal bytes (each tensor read or written once):
  forward  = Σ inputs + Σ outputs
  backward = Σ grad_outputs + Σ BWD_READS inputs + Σ grads of the differentiable inputs
BWD_READS are the forward inputs a backward must read: all of them for the normalising ops,
img/weight/bias for blend_down (the leaky ReLU's sign), none for the linear blends.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import pytest
import torch

from alae_fast.ops import _backend
from testing.op_cases import CASES, check_parity, make_reference
from benchmarks import shapes, timing
from benchmarks.conftest import DTYPES, bench_device, device_name, option_list

MODES = ("fwd", "fwd+bwd")
BASELINES = ("ref", "compile")
BWD_READS = {
    "modulated_adain": (0, 1, 2, 3, 4),
    "style_extract": (0, 1),
    "noise_inject": (0, 1, 2, 3),
    "blend_up": (),
    "blend_real": (),
    "blend_down": (0, 1, 2),
}
SMOKE_SHAPE = (2, 8, 8, 8)


def _backends(device: torch.device) -> list[str]:
    kernels = ["cpu"] if device.type == "cpu" else ["cuda", "triton"]
    return [*BASELINES, *kernels]


def _grid(config) -> list[tuple]:
    """(op, OpShape, dtype name, mode, backend), baselines first within each group."""
    device = bench_device(config)
    ops = option_list(config, "ops") or list(CASES)
    dtypes = option_list(config, "dtypes") or list(DTYPES)
    configs = option_list(config, "configs") or (["mnist"] if device.type == "cpu" else None)
    lods = option_list(config, "lods")
    lods = None if lods is None else [int(v) for v in lods]
    backends = [b for b in _backends(device) if b in (option_list(config, "backends") or _backends(device))]
    return [(op, s, dt, mode, b) for op in ops for s in shapes.op_shapes(op, configs, lods)
            for dt in dtypes for mode in MODES for b in backends]


def pytest_generate_tests(metafunc):
    if "grid_case" in metafunc.fixturenames:
        cases = _grid(metafunc.config)
        ids = [f"{op}-{s.label}-{dt}-{mode}-{b}" for op, s, dt, mode, b in cases]
        metafunc.parametrize("grid_case", cases, ids=ids)


def _unavailable(op: str, backend: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why `backend` cannot run `op` here, or None. A missing kernel is probed on a tiny input."""
    if backend in BASELINES:
        return None
    reason = _backend.unavailable_reason(backend, device.type)
    return reason if reason is not None else _probe(op, backend, device.type, dtype)


@functools.cache
def _probe(op: str, backend: str, device_type: str, dtype: torch.dtype) -> str | None:
    case = CASES[op]
    args = case.make((2, 2, 4, 4), dtype, device_type, torch.Generator().manual_seed(0))
    args = [a.requires_grad_(i in case.differentiable) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(args)]
    try:
        outs = case.run(args, backend)
        torch.autograd.grad(outs, [args[i] for i in case.differentiable], [torch.ones_like(o) for o in outs])
    except (NotImplementedError, RuntimeError) as exc:
        msg = str(exc)
        if isinstance(exc, NotImplementedError) or "not implemented for" in msg or "Could not run" in msg:
            return f"{backend} kernel of {op} is missing for {dtype}: {msg.splitlines()[0][:160]}"
        raise
    return None


def _bench_case(op: str, backend: str):
    """The OpCase that runs `backend`: for 'compile', the reference under torch.compile."""
    case = CASES[op]
    if backend != "compile":
        return case
    torch._dynamo.reset()  # one shape per compiled function: no recompile limit, no stale guards
    compiled = torch.compile(case.reference, fullgraph=True, dynamic=False)
    return dataclasses.replace(case, public=lambda *args, impl: compiled(*args))


def _make(op: str, shape, dtype, device, seed: int, grad: bool) -> list:
    case = CASES[op]
    args = case.make(shape, dtype, device, torch.Generator().manual_seed(seed))
    return [a.requires_grad_(grad and i in case.differentiable) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(args)]


def _seed(op: str, shape, dtype_name: str) -> int:
    return zlib.crc32(f"{op}{shape}{dtype_name}".encode())


@functools.lru_cache(maxsize=1)
def _reference(op: str, shape, dtype_name: str, seed: int, device: torch.device):
    """Both references (with gradients) on input set `seed`, shared by every backend and mode."""
    return make_reference(CASES[op], _make(op, shape, DTYPES[dtype_name], device, seed, False), seed=seed)


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _min_bytes(op: str, args, outs, mode: str) -> int:
    """The minimal bytes of the module docstring."""
    fwd = _nbytes(args) + _nbytes(outs)
    if mode == "fwd":
        return fwd
    grad_outputs = _nbytes(outs)  # one per output, of its size
    bwd = grad_outputs + _nbytes(args[i] for i in BWD_READS[op]) + _nbytes(args[i] for i in CASES[op].differentiable)
    return fwd + bwd


def _step(op, fn, args, gouts, mode):
    """The timed closure for one input set."""
    if mode == "fwd":
        return lambda: fn(args)
    diff = [args[i] for i in CASES[op].differentiable]
    return lambda: torch.autograd.grad(fn(args), diff, gouts)


def run_case(benchmark, op, shape, dtype_name, mode, backend, device, copy_bw, baselines, where=()):
    """Parity, then (unless benchmarks are disabled) timing into benchmark.extra_info.

    copy_bw(device) gives the device's copy bandwidth; baselines holds the ref/compile medians."""
    dtype = DTYPES[dtype_name]
    reason = _unavailable(op, backend, device, dtype)
    if reason:
        pytest.skip(reason)
    label = f"{op}[{backend}, {dtype_name}, {mode}, {'x'.join(map(str, shape))}]"
    case, grad, seed = _bench_case(op, backend), mode == "fwd+bwd", _seed(op, shape, dtype_name)
    fn = functools.partial(case.run, impl=backend)
    first = _make(op, shape, dtype, device, seed, grad)
    outs, gouts = check_parity(case, first, backend, grads=grad, label=label,
                               reference=_reference(op, shape, dtype_name, seed, device))
    n_sets = 1 if benchmark.disabled else timing.sets_needed(_nbytes(first) + _nbytes(outs), device)
    steps = [_step(op, fn, first, gouts, mode)] + [
        _step(op, fn, _make(op, shape, dtype, device, seed + 7 * k, grad), gouts, mode) for k in range(1, n_sets)]

    def once():
        steps[0]()
        timing.sync(device)

    with torch.set_grad_enabled(grad):
        benchmark.pedantic(once, rounds=1 if benchmark.disabled else 10, warmup_rounds=0 if benchmark.disabled else 1)
        if benchmark.disabled:
            return
        stats = timing.measure(steps, device)
        with timing.PeakMemory(device) as peak:
            once()
    key = (op, shape, dtype_name, mode)
    if backend in BASELINES:
        baselines[(key, backend)] = stats["median_s"]
    nbytes = _min_bytes(op, first, outs, mode)
    gbps = nbytes / stats["median_s"] / 1e9
    ceiling = copy_bw(device)["copy_GBps"]
    benchmark.extra_info.update({
        "kind": "op", "op": op, "shape": list(shape), "where": list(where), "dtype": dtype_name, "mode": mode,
        "backend": backend, "device": device_name(device), **stats, "bytes": nbytes, "GBps": gbps,
        "copy_GBps": ceiling, "pct_copy_bw": 100 * gbps / ceiling,
        "peak_mem_bytes": peak.peak, "parity": "passed: within 2x eager's error vs fp64",
        **{f"speedup_vs_{b}": (baselines[(key, b)] / stats["median_s"] if (key, b) in baselines else None)
           for b in BASELINES},
    })


def test_op(benchmark, grid_case, device, copy_bw, baseline_times):
    op, op_shape, dtype_name, mode, backend = grid_case
    run_case(benchmark, op, op_shape.shape, dtype_name, mode, backend, device, copy_bw, baseline_times,
             op_shape.where)


@pytest.mark.smoke
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("op", list(CASES))
def test_op_smoke(benchmark, op, backend, dtype_name, mode, copy_bw, baseline_times):
    cpu = torch.device("cpu")
    run_case(benchmark, op, SMOKE_SHAPE, dtype_name, mode, backend, cpu, copy_bw, baseline_times)
