"""Equalized-learning-rate layers: weights stored as N(0,1)/lrmul, scaled at runtime.

The runtime scale is c = gain / sqrt(fan_in) · lrmul with fan_in = k²·C_in; biases start at 0
and are multiplied by lrmul.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _scaled(bias: torch.Tensor | None, lrmul: float) -> torch.Tensor | None:
    """The runtime bias lrmul·b (b itself, with no op, when lrmul is 1)."""
    return bias if bias is None or lrmul == 1.0 else bias * lrmul


class EqualizedLinear(nn.Module):
    """y = x · (c·W)ᵀ + lrmul·b.  weight [out, in]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = math.sqrt(2),
                 lrmul: float = 1.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.lrmul = lrmul
        self.weight_gain = gain / math.sqrt(in_features) * lrmul
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lrmul)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def scaled_bias(self):
        return _scaled(self.bias, self.lrmul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (x·c)·Wᵀ rather than x·(c·W)ᵀ: the weight enters as the leaf parameter, so autocast casts it
        # once per region, and the scale touches the small input instead of the weight.
        return F.linear(x * self.weight_gain, self.weight, self.scaled_bias())

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, gain={self.weight_gain:.4g}, lrmul={self.lrmul}"


def _fuse_3x3_to_4x4(w: torch.Tensor, scale: float) -> torch.Tensor:
    """scale × the sum of the 4 one-pixel shifts of a padded 3x3 kernel: the 4x4 kernel of a stride-2
    resampling conv (a 2x2 average of the padded kernel, times 4)."""
    return F.avg_pool2d(F.pad(w, (1, 1, 1, 1)), 2, stride=1) * (4 * scale)


class EqualizedConv2d(nn.Module):
    """Same-padded k×k conv with equalized lr; optionally a fused 2× up or down resampling.

    up=True  : nearest ×2 upsample + 3×3 conv, computed as a stride-2 transposed conv with the
               3×3 kernel fused to 4×4. weight [in, out, 3, 3] (the transposed layout).
    down=True: 3×3 conv + 2×2 average pool, computed as a stride-2 conv with the kernel fused
               to 4×4 (and ×1/4). weight [out, in, 3, 3].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 gain: float = math.sqrt(2), lrmul: float = 1.0, up: bool = False, down: bool = False):
        super().__init__()
        if up and down:
            raise ValueError("EqualizedConv2d: arguments 'up' and 'down' are mutually exclusive")
        if (up or down) and kernel_size != 3:
            raise ValueError(f"EqualizedConv2d: argument 'kernel_size' must be 3 with up/down, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.up, self.down, self.lrmul = up, down, lrmul
        self.weight_gain = gain / math.sqrt(in_channels * kernel_size ** 2) * lrmul
        shape = (in_channels, out_channels) if up else (out_channels, in_channels)
        self.weight = nn.Parameter(torch.randn(*shape, kernel_size, kernel_size) / lrmul)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def scaled_bias(self):
        return _scaled(self.bias, self.lrmul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.scaled_bias()
        if self.up:
            return F.conv_transpose2d(x, _fuse_3x3_to_4x4(self.weight, self.weight_gain), b, stride=2, padding=1)
        if self.down:
            return F.conv2d(x, _fuse_3x3_to_4x4(self.weight, self.weight_gain * 0.25), b, stride=2, padding=1)
        return F.conv2d(x, self.weight * self.weight_gain, b, padding=self.kernel_size // 2)

    def extra_repr(self) -> str:
        mode = ", up" if self.up else ", down" if self.down else ""
        return (f"in={self.in_channels}, out={self.out_channels}, k={self.kernel_size}{mode}, "
                f"gain={self.weight_gain:.4g}, lrmul={self.lrmul}")
