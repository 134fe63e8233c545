"""The original code's Model (its model.py): F, G, E, D, dlatent_avg and the three ALAE losses."""

from __future__ import annotations

import itertools
import random

import torch
from torch import nn

from alae_fast.official.net import ENCODERS, GENERATORS, MAPPINGS
from alae_fast.train import losses

R1_GAMMA = 10.0


class DLatent(nn.Module):
    """The tracked average of w, per generator layer: buffer buff [layer_count, dlatent_size]."""

    def __init__(self, dlatent_size, layer_count):
        super().__init__()
        self.register_buffer("buff", torch.zeros(layer_count, dlatent_size))


class Model(nn.Module):
    """mapping_f (F), decoder (G), encoder (E), mapping_d (D) and dlatent_avg, built from the registries.

    forward(x, lod, blend_factor, d_train, ae) returns one loss: the latent autoencoder loss when ae,
    else the D loss with R1 (γ = 10) when d_train, else the G loss. Randomness follows the original:
    z and noise from the torch RNG (on the model's device), style mixing from Python's `random`.
    """

    def __init__(self, startf=32, maxf=256, layer_count=3, latent_size=128, mapping_layers=5, dlatent_avg_beta=None,
                 truncation_psi=None, truncation_cutoff=None, style_mixing_prob=None, channels=3, generator="",
                 encoder="", z_regression=False):
        super().__init__()
        self.layer_count = layer_count
        self.z_regression = z_regression
        self.mapping_d = MAPPINGS["MappingD"](latent_size=latent_size, dlatent_size=latent_size,
                                              mapping_fmaps=latent_size, mapping_layers=3)
        self.mapping_f = MAPPINGS["MappingF"](num_layers=2 * layer_count, latent_size=latent_size,
                                              dlatent_size=latent_size, mapping_fmaps=latent_size,
                                              mapping_layers=mapping_layers)
        nets = dict(startf=startf, layer_count=layer_count, maxf=maxf, latent_size=latent_size, channels=channels)
        self.decoder = GENERATORS[generator](**nets)
        self.encoder = ENCODERS[encoder](**nets)
        self.dlatent_avg = DLatent(latent_size, self.mapping_f.num_layers)
        self.latent_size = latent_size
        self.dlatent_avg_beta = dlatent_avg_beta
        self.truncation_psi = truncation_psi
        self.style_mixing_prob = style_mixing_prob
        self.truncation_cutoff = truncation_cutoff

    def _layer_index(self, styles):
        return torch.arange(self.mapping_f.num_layers, device=styles.device)[None, :, None]

    def generate(self, lod, blend_factor, z=None, count=32, mixing=True, noise=True, return_styles=False,
                 no_truncation=False):
        if z is None:
            z = torch.randn(count, self.latent_size, device=self.dlatent_avg.buff.device)
        styles = self.mapping_f(z)
        s = styles[:, :1]
        if self.dlatent_avg_beta is not None:
            with torch.no_grad():
                self.dlatent_avg.buff.lerp_(styles.mean(0), 1.0 - self.dlatent_avg_beta)
        if mixing and self.style_mixing_prob is not None and random.random() < self.style_mixing_prob:
            styles2 = self.mapping_f(torch.randn(count, self.latent_size, device=z.device))
            cutoff = random.randint(1, (lod + 1) * 2)
            styles = torch.where(self._layer_index(styles) < cutoff, styles, styles2)
        if self.truncation_psi is not None and not no_truncation:
            coefs = torch.where(self._layer_index(styles) < self.truncation_cutoff, self.truncation_psi, 1.0)
            styles = torch.lerp(self.dlatent_avg.buff, styles, coefs)
        rec = self.decoder.forward(styles, lod, blend_factor, noise)
        return (s, rec) if return_styles else rec

    def encode(self, x, lod, blend_factor):
        """-> (E(x) [N, 1, ℓ], D logits [N])."""
        Z = self.encoder(x, lod, blend_factor)
        if Z.dim() == 2:  # EncoderFC; the original Model fails on it (its D indexes a third axis)
            Z = Z[:, None]
        return Z[:, :1], self.mapping_d(Z)

    def forward(self, x, lod, blend_factor, d_train, ae):
        if ae:
            self.encoder.requires_grad_(True)
            z = torch.randn(x.shape[0], self.latent_size, device=x.device)
            s, rec = self.generate(lod, blend_factor, z=z, mixing=False, noise=True, return_styles=True)
            Z, _ = self.encode(rec, lod, blend_factor)
            return losses.latent_ae(Z[:, 0], z) if self.z_regression else losses.latent_ae(Z, s)
        if d_train:
            with torch.no_grad():
                fake = self.generate(lod, blend_factor, count=x.shape[0], noise=True)
            self.encoder.requires_grad_(True)
            _, real_logits = self.encode(x, lod, blend_factor)
            _, fake_logits = self.encode(fake, lod, blend_factor)
            r1 = losses.r1_penalty(real_logits, x)
            return losses.d_adversarial(real_logits, fake_logits) + R1_GAMMA * 0.5 * r1
        with torch.no_grad():
            z = torch.randn(x.shape[0], self.latent_size, device=x.device)
        self.encoder.requires_grad_(False)
        rec = self.generate(lod, blend_factor, count=x.shape[0], z=z, noise=True)
        _, fake_logits = self.encode(rec, lod, blend_factor)
        return losses.g_adversarial(fake_logits)

    def _averaged_parameters(self):
        # dlatent_avg holds a buffer, not parameters: the original's EMA leaves it alone.
        return itertools.chain(self.mapping_d.parameters(), self.mapping_f.parameters(),
                               self.decoder.parameters(), self.encoder.parameters())

    def lerp(self, other, betta):
        """EMA: every parameter p <- lerp(p, other's, 1 − betta)."""
        other = getattr(other, "module", other)
        with torch.no_grad():
            for p, q in zip(self._averaged_parameters(), other._averaged_parameters()):
                p.lerp_(q, 1.0 - betta)
