"""Shared by tests/ and benchmarks/: Triton's CPU interpreter without a GPU, and `gpu` tests skipped there."""

import os

# Triton's CPU interpreter must be chosen before triton is imported; use it when no NVIDIA driver is present.
if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/proc/driver/nvidia"):
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


def _round_bf16_like_the_gpu() -> None:
    """Triton's interpreter truncates fp32 -> bf16, where the GPU (and torch) round to nearest even,
    which would double every bf16 store's error; make it round, so that tests measure the kernels."""
    try:
        from triton import language as tl
        from triton.runtime import interpreter
    except ImportError:
        return
    truncating = getattr(interpreter, "_convert_float", None)
    if truncating is None or getattr(truncating, "rounds_to_nearest", False):
        return

    def convert(data, src, dst, rounding_mode):
        if src == tl.float32 and dst == tl.bfloat16 and rounding_mode in (None, interpreter._ir.ROUNDING_MODE.RTNE):
            rounded = torch.from_numpy(data.astype("float32", copy=True)).to(torch.bfloat16)
            return rounded.view(torch.int16).numpy().view("uint16").reshape(data.shape)
        return truncating(data, src, dst, rounding_mode)

    convert.rounds_to_nearest = True
    interpreter._convert_float = convert


if os.environ.get("TRITON_INTERPRET") == "1":
    _round_bf16_like_the_gpu()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
