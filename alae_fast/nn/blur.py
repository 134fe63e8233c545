"""The [1,2,1]⊗[1,2,1]/16 depthwise blur of StyleALAE, with its own backward.

The kernel is symmetric, so with zero padding the blur is self-adjoint: its backward is the same
blur of the incoming gradient. Defining it so makes every order of gradient one depthwise
convolution; PyTorch's own double backward of a grouped convolution would instead loop over the
groups (one single-channel convolution per channel), which R1 pays through the encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def binomial_kernel(channels: int) -> torch.Tensor:
    """[channels, 1, 3, 3]: [1,2,1]⊗[1,2,1] / 16 per channel."""
    k = torch.tensor([1.0, 2.0, 1.0])
    return (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).clone()


class _SelfAdjointBlur(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(weight)
        return F.conv2d(x, weight, padding=1, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return _SelfAdjointBlur.apply(grad, weight.to(grad.dtype)), None


def blur(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise 3×3 blur with padding 1. x [N, C, H, W]; weight [C, 1, 3, 3], symmetric (binomial_kernel)."""
    if x.dim() != 4 or weight.shape != (x.shape[1], 1, 3, 3):
        raise ValueError(f"blur: argument 'weight' must have shape [C, 1, 3, 3] for x of shape {list(x.shape)}, "
                         f"got {list(weight.shape)}")
    return _SelfAdjointBlur.apply(x, weight.to(x.dtype))


class Blur(nn.Module):
    """Depthwise 3×3 binomial blur, padding 1. weight is a buffer [C, 1, 3, 3] (not saved)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("weight", binomial_kernel(channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blur(x, self.weight)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
