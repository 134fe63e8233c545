"""blend_up, blend_real, blend_down: the blended resampling of progressive growing.

op.py holds the contract, the references and the registration; triton.py the Triton kernels;
csrc/blend/ the C++ (cpu.cpp) and CUDA (cuda.cu) kernels."""

from alae_fast.ops.blend.op import (FROM_RGB_SLOPE, blend_down, blend_down_ref, blend_real, blend_real_ref,
                                    blend_up, blend_up_ref)

__all__ = ["FROM_RGB_SLOPE", "blend_down", "blend_down_ref", "blend_real", "blend_real_ref", "blend_up",
           "blend_up_ref"]
