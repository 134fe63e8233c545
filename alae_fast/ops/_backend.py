"""Backend discovery and the `impl` choice shared by every fused op.

impl is one of 'auto' | 'ref' | 'cpu' | 'cuda' | 'triton'.
  ref    : the pure-PyTorch reference (any device, gradients of any order).
  cpu    : C++ kernels of alae_fast._C on CPU tensors.
  cuda   : CUDA kernels of alae_fast._C on CUDA tensors.
  triton : Triton kernels (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1).
'auto' means, in order: the backend of the innermost `use_impl(...)` block (process-wide, read
when an op is called: under torch.compile, when it is traced); else the process default
(set_default_impl, initialised from ALAE_FAST_IMPL); else, on CPU, 'cpu' (then 'ref'); on CUDA, the
backend that the dispatch table (dispatch_table.json, written by `python -m benchmarks.report
--dispatch-table`) measured fastest for this GPU, op and size, and for a GPU, op or size not in
the table 'cuda', then 'triton', then 'ref'. An explicit impl that cannot run raises and says why.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch

IMPLS = ("auto", "ref", "cpu", "cuda", "triton")


def _load_extension():
    try:
        from alae_fast import _C  # registers torch.ops.alae_fast_C
    except ImportError as exc:
        reason = f"alae_fast._C did not import ({exc})"
        warnings.warn(
            f"alae_fast: {reason}; every op runs on the pure-PyTorch reference. "
            "Build it with `pip install --no-build-isolation -e .`.",
            stacklevel=3,
        )
        return None, reason
    return _C, None


_EXT, _EXT_ERROR = _load_extension()
EXT_LOADED = _EXT is not None
EXT_HAS_CUDA = bool(EXT_LOADED and _EXT.WITH_CUDA)


def _triton_status() -> tuple[bool, str | None]:
    # Found, not imported: importing triton costs most of a second, and only the Triton kernels need it.
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install triton)"
    return True, None


TRITON_INSTALLED, _TRITON_ERROR = _triton_status()
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _read_env_impl() -> str:
    impl = os.environ.get("ALAE_FAST_IMPL", "auto")
    if impl not in IMPLS:
        raise ValueError(f"ALAE_FAST_IMPL must be one of {IMPLS}, got {impl!r}")
    return impl


_default_impl = _read_env_impl()


# The innermost use_impl block's backend. A plain module global, not a ContextVar, so that
# torch.compile can read it while tracing (and guard on it: another block recompiles).
_block_impl: str | None = None


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return impl


def set_default_impl(impl: str) -> None:
    """Set what impl='auto' means process-wide (same as ALAE_FAST_IMPL)."""
    global _default_impl
    _default_impl = _check_impl(impl)


@contextlib.contextmanager
def use_impl(impl: str):
    """Within the block, ops called with impl='auto' use `impl` ('auto' restores the automatic choice).

        with alae_fast.use_impl("triton"):
            images = model.generate(ws, lod)
    """
    global _block_impl
    outer, _block_impl = _block_impl, _check_impl(impl)
    try:
        yield
    finally:
        _block_impl = outer


def get_default_impl() -> str:
    """What impl='auto' means here: the innermost use_impl block's backend, else the process default."""
    return _default_impl if _block_impl is None or _block_impl == "auto" else _block_impl


def unavailable_reason(backend: str, device_type: str) -> str | None:
    """None when `backend` can run on tensors of `device_type`, else why not."""
    if backend == "ref":
        return None
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    if backend == "cpu":
        if device_type != "cpu":
            return f"impl='cpu' needs CPU tensors, got {device_type} tensors"
        return None if EXT_LOADED else _EXT_ERROR
    if backend == "cuda":
        if device_type != "cuda":
            return f"impl='cuda' needs CUDA tensors, got {device_type} tensors"
        if not EXT_LOADED:
            return _EXT_ERROR
        return None if EXT_HAS_CUDA else "alae_fast._C was built without CUDA (CPU-only torch or ALAE_FAST_BUILD_CUDA=0)"
    if backend == "triton":
        if not TRITON_INSTALLED:
            return _TRITON_ERROR
        if device_type == "cuda" or (device_type == "cpu" and TRITON_INTERPRET):
            return None
        return f"impl='triton' runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1; got {device_type}"
    raise ValueError(f"impl must be one of {IMPLS}, got {backend!r}")


DISPATCH_TABLE_PATH = Path(__file__).with_name("dispatch_table.json")
CUDA_FALLBACK = ("cuda", "triton")  # impl='auto' on CUDA where the table has no entry


def load_dispatch_table(path=DISPATCH_TABLE_PATH) -> dict:
    """The table's devices: {device name: {"provenance": {...}, "ops": {op: [bucket, ...]}}}, where a
    bucket is {"max_numel": int or null (no bound), "backend": "cuda" | "triton"}, ascending."""
    with open(path) as f:
        return json.load(f)["devices"]


_dispatch_table = load_dispatch_table()


@torch.compiler.assume_constant_result
def _cuda_device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def table_choice(device_name: str, op: str, numel: int) -> str | None:
    """The measured backend for `op` at `numel` elements on `device_name`, or None if not in the table."""
    buckets = _dispatch_table.get(device_name, {}).get("ops", {}).get(op)
    for bucket in buckets or ():
        if bucket["max_numel"] is None or numel <= bucket["max_numel"]:
            return bucket["backend"]
    return None


def resolve(impl: str, x: torch.Tensor, op: str | None = None, numel: int | None = None) -> str:
    """The concrete backend for `impl` and the device of `x`; for impl='auto' on CUDA, the dispatch
    table's choice for `op` at `numel` elements (default x.numel()) when it has one."""
    if impl == "auto":
        impl = get_default_impl()
    if impl == "auto":
        if x.device.type == "cuda":
            index = x.device.index if x.device.index is not None else torch.cuda.current_device()
            measured = None if op is None else table_choice(
                _cuda_device_name(index), op, x.numel() if numel is None else numel)
            for backend in ((measured,) if measured else ()) + CUDA_FALLBACK:
                if unavailable_reason(backend, "cuda") is None:
                    return backend
            return "ref"
        return "cpu" if unavailable_reason("cpu", x.device.type) is None else "ref"
    reason = unavailable_reason(impl, x.device.type)
    if reason is not None:
        raise RuntimeError(f"alae_fast: impl={impl!r} is unavailable: {reason}")
    return impl


def kernel(backend: str, name: str):
    """The kernel `name` of a concrete backend: `<op>_<pass>` lives in csrc/<op>/ (cpu, cuda) and
    alae_fast/ops/<op>/triton.py."""
    if backend in ("cpu", "cuda"):
        return getattr(torch.ops.alae_fast_C, name)
    if backend == "triton":
        module = importlib.import_module(f"alae_fast.ops.{name.split('_')[0]}.triton")
        return getattr(module, name)
    raise ValueError(f"no kernels for backend {backend!r}")


def kernel_op(name: str, kernel_name: str, *constants):
    """Declares the custom op alae_fast::<name> from its fake implementation.

    The decorated function gives the schema (its annotated signature, ending in `backend: str`)
    and, for tracing, the outputs' shapes and layouts. The op runs the backend's kernel
    `kernel_name` on the other arguments followed by `constants` (the op's fixed eps, slope).
    """
    def declare(fake):
        def run(*args):
            *operands, backend = args
            return kernel(backend, kernel_name)(*operands, *constants)

        schema = torch.library.infer_schema(fake, mutates_args=())
        op = torch.library.custom_op(f"alae_fast::{name}", run, mutates_args=(), schema=schema)
        op.register_fake(fake)
        return op
    return declare


# Backends whose kernels read and write channels_last activations in place (others get NCHW copies):
# every Triton op, and the CUDA instance-norm rows (adain, style forward and backward).
NHWC_BACKENDS = ("triton",)
ROW_NHWC_BACKENDS = ("triton", "cuda")


def is_nhwc(t: torch.Tensor) -> bool:
    """A dense channels_last activation that is not also NCHW-contiguous."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def dense(t: torch.Tensor, backend: str, nhwc_backends: tuple[str, ...] = NHWC_BACKENDS) -> torch.Tensor:
    """`t` as `backend`'s kernels take it: NHWC stays in place where the backend reads it, else NCHW."""
    return t if backend in nhwc_backends and is_nhwc(t) else t.contiguous()


def dense_like(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`t` dense in the layout (NCHW or NHWC) of the dense activation `like`; copied only when it differs."""
    return t.contiguous(memory_format=torch.channels_last if is_nhwc(like) else torch.contiguous_format)


def empty_dense_like(t: torch.Tensor, shape=None) -> torch.Tensor:
    """An uninitialised tensor shaped like `t` (or `shape`), laid out (NCHW or NHWC) like the dense activation `t`."""
    return torch.empty(t.shape if shape is None else shape, dtype=t.dtype, device=t.device,
                       memory_format=torch.channels_last if is_nhwc(t) else torch.contiguous_format)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of statistics, per-channel parameters and styles inside the kernels."""
    return torch.float64 if dtype == torch.float64 else torch.float32
