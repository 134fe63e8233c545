"""style_extract: bias + leaky ReLU + instance-norm statistics (the encoder epilogue), differentiable twice.

op.py holds the contract, the reference and the registration; triton.py the Triton kernels;
csrc/style/ the C++ (cpu.cpp) and CUDA (cuda.cu) kernels."""

from alae_fast.ops.style.op import style_extract, style_extract_ref

__all__ = ["style_extract", "style_extract_ref"]
