"""The Adversarial Autoencoder (Makhzani et al., 2016) on flattened images, the MNIST baseline of ALAE.

E is q(z|x) (deterministic), G the decoder p(x|z), D a discriminator on codes z that tells prior draws
z ~ N(0, I) from codes E(x). E and G have the widths of the MLP ALAE's, so the two compare fairly.
There is no mapping network: the generator is fed prior draws directly (F is the identity), so
sampling, encoding and reconstruction share the ALAE interface (num_ws = 1, max_lod = 0).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from alae_fast.models.alae import ALAEBase
from alae_fast.models.config import ModelConfig
from alae_fast.models.mlp_alae import MLP


class CodeDiscriminator(nn.Module):
    """D: codes [N, ℓ] -> logits [N]; two hidden layers of `hidden` units with leaky ReLU 0.2."""

    def __init__(self, latent_size: int, hidden: int):
        super().__init__()
        self.mlp = MLP([latent_size, hidden, hidden, 1], final_act=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(z)[:, 0]


class AAE(ALAEBase):
    """E: pixels→hidden→hidden→ℓ (linear output: codes match a Gaussian); G: ℓ→hidden→hidden→pixels;
    D on codes. Images are [N, channels, S, S] in [-1, 1]; lod, blend and noise are accepted and ignored."""

    def __init__(self, cfg: ModelConfig):
        if cfg.kind != "aae":
            raise ValueError(f"AAE: argument 'cfg.kind' must be 'aae', got {cfg.kind!r}")
        super().__init__(cfg, mapping_layers=0)
        self.mapping_f = nn.Identity()  # codes are prior draws: no pixel norm, no mapping layers
        self.mapping_d = CodeDiscriminator(cfg.latent_size, cfg.hidden)
        self.num_ws = 1
        self.max_lod = 0
        self.image_shape = (cfg.channels, cfg.image_size, cfg.image_size)
        pixels = cfg.channels * cfg.image_size ** 2
        self.encoder = MLP([pixels, cfg.hidden, cfg.hidden, cfg.latent_size], final_act=False)
        self.generator = MLP([cfg.latent_size, cfg.hidden, cfg.hidden, pixels], final_act=False)

    def resolution(self, lod: int = 0) -> int:
        return self.cfg.image_size

    def generate(self, ws: torch.Tensor, lod: int = 0, blend: float = 1.0, noise: str = "random") -> torch.Tensor:
        """G: codes [N, ℓ] or [N, 1, ℓ] -> images [N, channels, S, S]."""
        return self.generator(self._broadcast_ws(ws)[:, 0]).view(-1, *self.image_shape)

    def encode(self, x: torch.Tensor, lod: int = 0, blend: float = 1.0) -> torch.Tensor:
        """E: images [N, channels, S, S] -> codes z [N, ℓ]."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"encode: argument 'x' must have shape [N, {', '.join(map(str, self.image_shape))}], "
                             f"got {list(x.shape)}")
        return self.encoder(x.flatten(1))

    def parameters_ae(self):
        """Parameters of E and G (the reconstruction phase)."""
        return itertools.chain(self.encoder.parameters(), self.generator.parameters())
