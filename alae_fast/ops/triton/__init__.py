"""Triton kernels of the fused ops, selected by impl='triton'.

Every launcher has the signature and contract of the C++ kernel of the same name (the
"Kernel contract" comments in alae_fast/ops/{adain,style,noise,blend}.py, schemas in
csrc/ops.cpp). They run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.

The 'auto' crossover between the CUDA and Triton backends is not yet measured:
alae_fast/ops/_backend.py resolve() prefers 'cuda', then 'triton', on CUDA tensors.
"""

from alae_fast.ops.triton.adain import adain_bwd, adain_fwd
from alae_fast.ops.triton.blend import blend_down_bwd, blend_down_fwd, blend_real_fwd, blend_up_bwd, blend_up_fwd
from alae_fast.ops.triton.noise import noise_bwd, noise_fwd
from alae_fast.ops.triton.style import style_bwd, style_bwd2, style_fwd

__all__ = [
    "adain_bwd",
    "adain_fwd",
    "blend_down_bwd",
    "blend_down_fwd",
    "blend_real_fwd",
    "blend_up_bwd",
    "blend_up_fwd",
    "noise_bwd",
    "noise_fwd",
    "style_bwd",
    "style_bwd2",
    "style_fwd",
]
