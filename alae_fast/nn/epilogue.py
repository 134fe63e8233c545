"""Per-layer epilogues: noise injection, the generator's modulated AdaIN, the encoder's style extraction."""

from __future__ import annotations

import torch
from torch import nn

from alae_fast import ops
from alae_fast.nn.equalized import EqualizedLinear


class NoiseInjection(nn.Module):
    """y = x + weight[c]·noise[n,0], optionally + bias and leaky ReLU 0.2 (ops.noise_inject)."""

    def __init__(self, channels: int, impl: str | None = None):
        super().__init__()
        self.impl = impl or "auto"  # an optional override of the ambient backend
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x, noise, bias=None, act: bool = False):
        return ops.noise_inject(x, noise, self.weight, bias, act=act, impl=self.impl)


class ModulatedAdaIN(nn.Module):
    """Generator epilogue: noise, bias, lrelu, instance norm, style modulation by w.

    noise_weight [C] and bias [C] start at 0; style = EqualizedLinear(ℓ → 2C, gain 1) gives (ys | yb)
    and the output is IN(t)·(1 + ys) + yb.
    """

    def __init__(self, channels: int, latent_size: int, impl: str | None = None):
        super().__init__()
        self.impl = impl or "auto"  # an optional override of the ambient backend
        self.noise_weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style = EqualizedLinear(latent_size, 2 * channels, gain=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return ops.modulated_adain(x, noise, self.noise_weight, self.bias, self.style(w), impl=self.impl)


class StyleExtract(nn.Module):
    """Encoder epilogue: bias, lrelu, instance norm; the [N, 2C] (mean | std) statistics
    are mapped to a latent by style = EqualizedLinear(2C → ℓ) (default gain √2, as in the official code).

    Returns (y [N, C, H, W], w [N, ℓ]).
    """

    def __init__(self, channels: int, latent_size: int, impl: str | None = None):
        super().__init__()
        self.impl = impl or "auto"  # an optional override of the ambient backend
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style = EqualizedLinear(2 * channels, latent_size)

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y [N, C, H, W], the statistics [N, 2C] that `style` maps to w, in fp32 (fp64 for fp64 x))."""
        stats_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return ops.style_extract(x, self.bias, impl=self.impl, style_dtype=stats_dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, stats = self.statistics(x)
        return y, self.style(stats)
