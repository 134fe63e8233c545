"""noise_inject: per-channel-weighted noise, optionally with bias and leaky ReLU.

op.py holds the contract, the reference and the registration; triton.py the Triton kernels;
csrc/noise/ the C++ (cpu.cpp) and CUDA (cuda.cu) kernels."""

from alae_fast.ops.noise.op import noise_inject, noise_inject_ref

__all__ = ["noise_inject", "noise_inject_ref"]
