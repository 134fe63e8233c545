"""What StyleALAE and the MLP ALAE share: F and D, style mixing, truncation, w_avg tracking."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from alae_fast.models.config import ModelConfig
from alae_fast.models.mapping import MappingD, MappingF


class ALAEBase(nn.Module):
    """Subclasses set generator, encoder, num_ws, max_lod and implement generate, encode, resolution."""

    def __init__(self, cfg: ModelConfig, mapping_layers: int):
        super().__init__()
        self.cfg = cfg
        self.latent_size = cfg.latent_size
        self.channels = cfg.channels
        self.mapping_f = MappingF(cfg.latent_size, mapping_layers)
        self.mapping_d = MappingD(cfg.latent_size)
        self.register_buffer("w_avg", torch.zeros(cfg.latent_size))

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """F: z [N, ℓ] -> w [N, ℓ]."""
        if z.dim() != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"map: argument 'z' must have shape [N, {self.latent_size}], got {list(z.shape)}")
        return self.mapping_f(z)

    def _check_lod(self, lod: int) -> None:
        if not 0 <= lod <= self.max_lod:
            raise ValueError(f"argument 'lod' must be in [0, {self.max_lod}], got {lod}")

    def styles(self, z: torch.Tensor, lod: int, mixing_prob: float | None = None) -> torch.Tensor:
        """F(z) repeated per layer, [N, num_ws, ℓ]; with probability `mixing_prob` layers >= a cutoff
        ~ U{1..2(lod+1)} take F(z2) of a second z2 ~ N(0, 1) (global torch RNG)."""
        self._check_lod(lod)
        p = self.cfg.style_mixing_prob if mixing_prob is None else mixing_prob
        w = self.map(z)
        ws = w[:, None].expand(-1, self.num_ws, -1)
        active = min(2 * (lod + 1), self.num_ws)
        if p <= 0 or self.num_ws < 2 or torch.rand(()).item() >= p:
            return ws
        cutoff = int(torch.randint(1, active + 1, ()).item())
        w2 = self.map(torch.randn_like(z))
        layer = torch.arange(self.num_ws, device=w.device)[None, :, None]
        return torch.where(layer < cutoff, w[:, None], w2[:, None])

    def discriminate(self, w: torch.Tensor) -> torch.Tensor:
        """D: w [N, ℓ] -> logits [N]."""
        return self.mapping_d(w)

    @torch.no_grad()
    def update_w_avg(self, w: torch.Tensor) -> None:
        """w_avg <- lerp(batch mean of w, w_avg, β). w is [N, ℓ] (or [N, num_ws, ℓ], reduced over layers)."""
        mean = w.detach().float().reshape(-1, self.latent_size).mean(0)
        self.w_avg.copy_(mean.lerp(self.w_avg, self.cfg.w_avg_beta))

    def truncate(self, ws: torch.Tensor, psi: float | None = None, cutoff: int | None = None) -> torch.Tensor:
        """Layers < cutoff take lerp(w_avg, w, psi). ws [N, num_ws, ℓ]."""
        psi = self.cfg.truncation_psi if psi is None else psi
        cutoff = self.cfg.truncation_cutoff if cutoff is None else cutoff
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.latent_size):
            raise ValueError(f"truncate: argument 'ws' must have shape [N, {self.num_ws}, {self.latent_size}], "
                             f"got {list(ws.shape)}")
        layer = torch.arange(self.num_ws, device=ws.device)[None, :, None]
        avg = self.w_avg.to(ws.dtype)
        return torch.where(layer < cutoff, avg.lerp(ws, psi), ws)

    def _broadcast_ws(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.dim() == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.latent_size):
            raise ValueError(f"generate: argument 'ws' must have shape [N, {self.latent_size}] or "
                             f"[N, {self.num_ws}, {self.latent_size}], got {list(ws.shape)}")
        return ws

    def parameters_ed(self):
        """Parameters of E and D (the discriminator-side optimizer)."""
        return itertools.chain(self.encoder.parameters(), self.mapping_d.parameters())

    def parameters_fg(self):
        """Parameters of F and G (the generator-side optimizer)."""
        return itertools.chain(self.mapping_f.parameters(), self.generator.parameters())
