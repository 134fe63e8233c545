"""The two latent MLPs: F maps z to w, D maps w to a real/fake logit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alae_fast.nn import EqualizedLinear
from alae_fast.ops import LEAKY_SLOPE

MAPPING_LRMUL = 0.1
SLOPE = LEAKY_SLOPE


def pixel_norm(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + eps)


class MappingBlock(nn.Module):
    def __init__(self, latent_size: int):
        super().__init__()
        self.fc = EqualizedLinear(latent_size, latent_size, lrmul=MAPPING_LRMUL)

    def forward(self, x):
        return F.leaky_relu(self.fc(x), SLOPE)


class MappingF(nn.Module):
    """F: pixel norm, then `num_layers` × [Linear ℓ→ℓ (lrmul 0.1), lrelu 0.2]. [N, ℓ] -> [N, ℓ]."""

    def __init__(self, latent_size: int, num_layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(MappingBlock(latent_size) for _ in range(num_layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for block in self.blocks:
            x = block(x)
        return x


class MappingD(nn.Module):
    """D: Linear ℓ→ℓ → Linear ℓ→ℓ → Linear ℓ→2ℓ, lrmul 0.1, no activation. [N, ℓ] -> logits [N]."""

    def __init__(self, latent_size: int):
        super().__init__()
        outs = (latent_size, latent_size, 2 * latent_size)
        self.blocks = nn.ModuleList(EqualizedLinear(latent_size, o, lrmul=MAPPING_LRMUL) for o in outs)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            w = block(w)
        return w[:, 0]
