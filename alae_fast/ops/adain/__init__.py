"""modulated_adain: noise + bias + leaky ReLU + instance norm + style modulation (the generator epilogue).

op.py holds the contract, the reference and the registration; triton.py the Triton kernels;
csrc/adain/ the C++ (cpu.cpp) and CUDA (cuda.cu) kernels."""

from alae_fast.ops.adain.op import modulated_adain, modulated_adain_ref

__all__ = ["modulated_adain", "modulated_adain_ref"]
