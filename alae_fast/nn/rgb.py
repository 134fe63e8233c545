"""1×1 conversions between features and RGB, with the fused progressive-growing blends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alae_fast import ops
from alae_fast.nn.equalized import EqualizedConv2d


class ToRGB(nn.Module):
    """Generator output: 1×1 conv with gain 0.03 and a bias, no activation."""

    def __init__(self, in_channels: int, channels: int, impl: str | None = None):
        super().__init__()
        self.impl = impl or "auto"  # an optional override of the ambient backend
        self.conv = EqualizedConv2d(in_channels, channels, 1, gain=0.03)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def blend(self, low: torch.Tensor, high: torch.Tensor, alpha: float) -> torch.Tensor:
        """lerp(nearest_up2(self(low)), high, alpha): fades in the next level's RGB `high`."""
        return ops.blend_up(self(low), high, alpha, impl=self.impl)


class FromRGB(nn.Module):
    """Encoder input: 1×1 conv + bias, then leaky ReLU 0.2 twice (= slope 0.04)."""

    def __init__(self, channels: int, out_channels: int, impl: str | None = None):
        super().__init__()
        self.impl = impl or "auto"  # an optional override of the ambient backend
        self.conv = EqualizedConv2d(channels, out_channels, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(img), ops.FROM_RGB_SLOPE)

    def blend(self, img: torch.Tensor, new: torch.Tensor, alpha: float) -> torch.Tensor:
        """lerp(self(avgpool2(img)), new, alpha): fades the next level's features `new` in, fused."""
        weight = (self.conv.weight * self.conv.weight_gain).flatten(1)
        return ops.blend_down(img.to(new.dtype), weight, self.conv.scaled_bias(), new, alpha,
                              slope=ops.FROM_RGB_SLOPE, impl=self.impl)
