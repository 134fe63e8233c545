"""Modules of ALAE/StyleALAE built on alae_fast.ops. The backend comes from alae_fast.use_impl or the process
default; a module's optional `impl` overrides it for that module alone."""

from alae_fast.nn.blur import Blur
from alae_fast.nn.epilogue import ModulatedAdaIN, NoiseInjection, StyleExtract
from alae_fast.nn.equalized import EqualizedConv2d, EqualizedLinear
from alae_fast.nn.rgb import FromRGB, ToRGB

__all__ = [
    "Blur",
    "EqualizedConv2d",
    "EqualizedLinear",
    "FromRGB",
    "ModulatedAdaIN",
    "NoiseInjection",
    "StyleExtract",
    "ToRGB",
]
