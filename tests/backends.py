"""The (backend, device) pairs of the op tests, as pytest params. The CUDA ones carry the `gpu`
mark: `-m gpu` selects exactly them, and conftest.py skips them without a CUDA device."""

import pytest

from alae_fast.ops import _backend

_needs_ext = pytest.mark.skipif(not _backend.EXT_LOADED, reason="needs alae_fast._C")
_needs_interpreter = pytest.mark.skipif(_backend.unavailable_reason("triton", "cpu") is not None,
                                        reason="CPU tensors need triton with TRITON_INTERPRET=1")

REF = pytest.param("ref", "cpu", id="ref")
CPU = pytest.param("cpu", "cpu", marks=_needs_ext, id="cpu")
TRITON_INTERPRETER = pytest.param("triton", "cpu", marks=_needs_interpreter, id="triton-interpreter")
CUDA = pytest.param("cuda", "cuda", marks=pytest.mark.gpu, id="cuda")
TRITON_CUDA = pytest.param("triton", "cuda", marks=pytest.mark.gpu, id="triton-cuda")

# The kernel backends at full test sizes (the interpreter is too slow for them: see test_triton.py).
KERNELS = [CPU, CUDA, TRITON_CUDA]
# Everything, for the small edge-case tests.
EVERY_BACKEND = [REF, CPU, TRITON_INTERPRETER, CUDA, TRITON_CUDA]
