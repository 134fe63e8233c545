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

    def forward(self, x: torch.Tensor, lod: int | None = None, blend: float = 1.0,
                noise: str = "random") -> torch.Tensor:
        """The autoencoder: G(E(x)) for images x [N, channels, R, R] at `lod` (default: the top level).

        Training uses encode/generate/discriminate separately (the three steps differ in what
        they differentiate); this is the reconstruction, raw (not clamped to [-1, 1]).
        """
        lod = self.max_lod if lod is None else lod
        return self.generate(self.encode(x, lod, blend), lod, blend, noise=noise)

    def _check_lod(self, lod: int) -> None:
        if not 0 <= lod <= self.max_lod:
            raise ValueError(f"argument 'lod' must be in [0, {self.max_lod}], got {lod}")

    def mixing_cutoff(self, lod: int, mixing_prob: float | None = None,
                      generator: torch.Generator | None = None) -> int | None:
        """With probability `mixing_prob` (default: the config's), the first layer that takes a second
        latent, drawn from U{1..2(lod+1)}; None for no mixing. Draws from `generator` (CPU) or the global RNG."""
        self._check_lod(lod)
        p = self.cfg.style_mixing_prob if mixing_prob is None else mixing_prob
        if p <= 0 or self.num_ws < 2 or torch.rand((), generator=generator).item() >= p:
            return None
        active = min(2 * (lod + 1), self.num_ws)
        return int(torch.randint(1, active + 1, (), generator=generator).item())

    def mixed_styles(self, z: torch.Tensor, z2: torch.Tensor | None, cutoff: int | None) -> torch.Tensor:
        """[N, num_ws, ℓ]: layers < cutoff take F(z), the others F(z2); F(z) everywhere when cutoff is None."""
        if cutoff is None:
            return self.map(z)[:, None].expand(-1, self.num_ws, -1)
        w, w2 = self.map(torch.cat([z, z2])).chunk(2)
        layer = torch.arange(self.num_ws, device=w.device)[None, :, None]
        return torch.where(layer < cutoff, w[:, None], w2[:, None])

    def styles(self, z: torch.Tensor, lod: int, mixing_prob: float | None = None) -> torch.Tensor:
        """F(z) per layer, [N, num_ws, ℓ], style-mixed with probability `mixing_prob` with F(z2) of a
        second z2 ~ N(0, 1); every draw comes from the global torch RNG."""
        cutoff = self.mixing_cutoff(lod, mixing_prob)
        return self.mixed_styles(z, None if cutoff is None else torch.randn_like(z), cutoff)

    def fade_reals(self, x: torch.Tensor, lod: int, blend: float) -> torch.Tensor:
        """Real images as E sees them while level `lod` fades in (identity when nothing fades)."""
        return x

    def discriminate(self, w: torch.Tensor) -> torch.Tensor:
        """D: w [N, ℓ] -> logits [N]."""
        return self.mapping_d(w)

    @torch.no_grad()
    def update_w_avg(self, w: torch.Tensor) -> None:
        """w_avg <- lerp(batch mean of w, w_avg, β), leaving entries whose mean is not finite unchanged.
        w is [N, ℓ] (or [N, num_ws, ℓ], reduced over layers)."""
        mean = w.detach().float().reshape(-1, self.latent_size).mean(0)
        moved = mean.lerp(self.w_avg, self.cfg.w_avg_beta)
        self.w_avg.copy_(torch.where(torch.isfinite(moved), moved, self.w_avg))

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
