"""Drop-in modules of ALAE/StyleALAE built on alae_fast.ops. Each takes impl='auto' and forwards it."""

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
