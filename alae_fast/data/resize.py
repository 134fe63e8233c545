"""Resizing float image batches to a model's resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, res: int) -> torch.Tensor:
    """Float images to res x res: 2x2 box halving when possible, else antialiased bilinear."""
    while x.shape[-1] > res and x.shape[-1] % 2 == 0 and x.shape[-1] // 2 >= res:
        x = F.avg_pool2d(x, 2)
    if x.shape[-1] != res:
        x = F.interpolate(x, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
    return x
