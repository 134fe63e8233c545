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

from alae_fast.models.config import ModelConfig
from alae_fast.models.mlp_alae import MLP, MLPALAE


class CodeDiscriminator(nn.Module):
    """D: codes [N, ℓ] -> logits [N]; two hidden layers of `hidden` units with leaky ReLU 0.2."""

    def __init__(self, latent_size: int, hidden: int):
        super().__init__()
        self.mlp = MLP([latent_size, hidden, hidden, 1], final_act=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(z)[:, 0]


class AAE(MLPALAE):
    """E: pixels→hidden→hidden→ℓ (linear output: codes match a Gaussian); G: ℓ→hidden→hidden→pixels;
    D on codes. Images are [N, channels, S, S] in [-1, 1]; lod, blend and noise are accepted and ignored."""

    KIND = "aae"
    ENCODER_FINAL_ACT = False

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.mapping_f = nn.Identity()  # codes are prior draws: no pixel norm, no mapping layers
        self.mapping_d = CodeDiscriminator(cfg.latent_size, cfg.hidden)

    def parameters_ae(self):
        """Parameters of E and G (the reconstruction phase)."""
        return itertools.chain(self.encoder.parameters(), self.generator.parameters())
