"""The [1,2,1]⊗[1,2,1]/16 depthwise blur of StyleALAE (SPEC §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Blur(nn.Module):
    """Depthwise 3×3 binomial blur, padding 1. weight is a buffer [C, 1, 3, 3] (not saved)."""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(k, k) / 16
        self.channels = channels
        self.register_buffer("weight", k.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), padding=1, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
