"""Fused ops of ALAE/StyleALAE. Each takes impl='auto'|'ref'|'cpu'|'cuda'|'triton'."""

from alae_fast.ops._backend import get_default_impl, set_default_impl, use_impl
from alae_fast.ops.constants import LEAKY_SLOPE
from alae_fast.ops.adain import modulated_adain, modulated_adain_ref
from alae_fast.ops.blend import (
    FROM_RGB_SLOPE,
    blend_down,
    blend_down_ref,
    blend_real,
    blend_real_ref,
    blend_up,
    blend_up_ref,
)
from alae_fast.ops.noise import noise_inject, noise_inject_ref
from alae_fast.ops.style import style_extract, style_extract_ref

__all__ = [
    "FROM_RGB_SLOPE",
    "LEAKY_SLOPE",
    "blend_down",
    "blend_down_ref",
    "blend_real",
    "blend_real_ref",
    "blend_up",
    "blend_up_ref",
    "get_default_impl",
    "modulated_adain",
    "modulated_adain_ref",
    "noise_inject",
    "noise_inject_ref",
    "set_default_impl",
    "style_extract",
    "style_extract_ref",
    "use_impl",
]
