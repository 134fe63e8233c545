"""StyleALAE: generator G, encoder E and the model with progressive growing.

Block indices follow the official layout: generator block i works at 4·2^i pixels;
encoder block j mirrors generator block L−1−j, so encoder block 0 sees the full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alae_fast.models.alae import ALAEBase
from alae_fast.models.config import ModelConfig
from alae_fast.nn import Blur, EqualizedConv2d, FromRGB, ModulatedAdaIN, StyleExtract, ToRGB
from alae_fast.ops import blend_real

FUSED_RESOLUTION = 128  # at and above this side, resampling convs are fused (stride-2, 4×4)
NOISE_MODES = ("random", "fixed", "const")


def block_channels(cfg: ModelConfig, i: int) -> int:
    """C_i = min(maxf, startf·2^(L−1−i)): channels of generator block i."""
    return min(cfg.maxf, cfg.startf * 2 ** (cfg.layer_count - 1 - i))


def draw_noise(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Fresh N(0, 1) noise [batch, 1, H, W] for the activations x [N, C, H, W], expanded to N.

    Drawn as the official code draws it (default dtype, x's device), so that a seeded run draws
    the same numbers. batch is N, or 1 for one map shared by the whole batch.
    """
    n, _, h, w = x.shape
    return torch.randn(batch, 1, h, w, device=x.device).expand(n, -1, -1, -1)


class DecodeBlock(nn.Module):
    """[conv_1 (up) → blur] → adain_1(w_{2i}) → conv_2 → adain_2(w_{2i+1}). Block 0 has no conv_1."""

    def __init__(self, index: int, in_channels: int, out_channels: int, latent_size: int):
        super().__init__()
        self.index = index
        self.resolution = 4 * 2 ** index
        self.fused = self.resolution >= FUSED_RESOLUTION
        if index > 0:
            self.conv_1 = EqualizedConv2d(in_channels, out_channels, 3, bias=False, up=self.fused)
            self.blur = Blur(out_channels)
        self.adain_1 = ModulatedAdaIN(out_channels, latent_size)
        self.conv_2 = EqualizedConv2d(out_channels, out_channels, 3, bias=False)
        self.adain_2 = ModulatedAdaIN(out_channels, latent_size)
        # Deterministic per-layer noise for noise='fixed' (not saved: it is rebuilt from the seed).
        gen = torch.Generator().manual_seed(1000 + index)
        size = (1, 1, self.resolution, self.resolution)
        self.register_buffer("noise_fixed_1", torch.randn(size, generator=gen), persistent=False)
        self.register_buffer("noise_fixed_2", torch.randn(size, generator=gen), persistent=False)

    def _noise(self, x: torch.Tensor, mode: str, fixed: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """shared: one random map for the whole batch (always so with 'const')."""
        if mode == "fixed":
            return fixed.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        return draw_noise(x, 1 if shared or mode == "const" else x.shape[0])

    def forward(self, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, noise: str) -> torch.Tensor:
        if self.index > 0:
            if not self.fused:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.blur(self.conv_1(x))
        # The official block 0 adds its first noise to the batch-1 constant: one map for the batch.
        x = self.adain_1(x, w1, self._noise(x, noise, self.noise_fixed_1, shared=self.index == 0))
        x = self.conv_2(x)
        return self.adain_2(x, w2, self._noise(x, noise, self.noise_fixed_2))


class Generator(nn.Module):
    """G: ws [N, 2L, ℓ] -> image [N, channels, 4·2^lod, 4·2^lod]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layer_count = cfg.layer_count
        chans = [block_channels(cfg, i) for i in range(cfg.layer_count)]
        self.const = nn.Parameter(torch.ones(1, chans[0], 4, 4))
        self.blocks = nn.ModuleList(
            DecodeBlock(i, chans[max(i - 1, 0)], chans[i], cfg.latent_size) for i in range(cfg.layer_count))
        self.to_rgb = nn.ModuleList(ToRGB(c, cfg.channels) for c in chans)

    def forward(self, ws: torch.Tensor, lod: int, blend: float = 1.0, noise: str = "random") -> torch.Tensor:
        x = self.const.to(ws.dtype).expand(ws.shape[0], -1, -1, -1)
        for i in range(lod):
            x = self.blocks[i](x, ws[:, 2 * i], ws[:, 2 * i + 1], noise)
        high = self.to_rgb[lod](self.blocks[lod](x, ws[:, 2 * lod], ws[:, 2 * lod + 1], noise))
        if lod == 0 or blend >= 1.0:
            return high
        return self.to_rgb[lod - 1].blend(x, high, blend)


class EncodeBlock(nn.Module):
    """conv_1 → extract_1 → blur → conv_2 (down) → extract_2. Returns (x, [stats_1, stats_2]): the fp32
    [N, 2C] instance-norm statistics that extract_1.style and extract_2.style map to latents."""

    def __init__(self, index: int, in_channels: int, out_channels: int, latent_size: int, in_resolution: int):
        super().__init__()
        self.index = index
        self.fused = in_resolution >= FUSED_RESOLUTION
        self.conv_1 = EqualizedConv2d(in_channels, in_channels, 3, bias=False)
        self.extract_1 = StyleExtract(in_channels, latent_size)
        self.blur = Blur(in_channels)
        self.conv_2 = EqualizedConv2d(in_channels, out_channels, 3, bias=False, down=self.fused)
        self.extract_2 = StyleExtract(out_channels, latent_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, stats_1 = self.extract_1.statistics(self.conv_1(x))
        x = self.conv_2(self.blur(x))
        if not self.fused:
            x = F.avg_pool2d(x, 2)
        x, stats_2 = self.extract_2.statistics(x)
        return x, [stats_1, stats_2]


class Encoder(nn.Module):
    """E: image [N, channels, 4·2^lod, 4·2^lod] -> w [N, ℓ] = Σ over active blocks (w1 + w2).

    The per-layer style linears are summed as one matmul over the concatenated statistics: with
    s_j the statistics, W_j, b_j, c_j a style layer's weight, bias and runtime scale,
    Σ_j (c_j·s_j·W_jᵀ + b_j) = (s ⊙ c)·[W_1 … W_k]ᵀ + Σ_j b_j (the new block's terms times blend).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layer_count = cfg.layer_count
        chans = [block_channels(cfg, cfg.layer_count - 1 - j) for j in range(cfg.layer_count)]
        outs = [min(cfg.maxf, cfg.startf * 2 ** (j + 1)) for j in range(cfg.layer_count)]
        side = 2 ** (cfg.layer_count + 1)
        self.blocks = nn.ModuleList(
            EncodeBlock(j, chans[j], outs[j], cfg.latent_size, side >> j) for j in range(cfg.layer_count))
        self.from_rgb = nn.ModuleList(FromRGB(cfg.channels, c) for c in chans)
        styles = [layer.style for block in self.blocks for layer in (block.extract_1, block.extract_2)]
        gains = [torch.full((s.in_features,), s.weight_gain) for s in styles]
        self.register_buffer("style_gains", torch.cat(gains), persistent=False)  # [Σ 2C] over every layer
        self.style_offsets = [0]
        for s in styles:
            self.style_offsets.append(self.style_offsets[-1] + s.in_features)

    def forward(self, img: torch.Tensor, lod: int, blend: float = 1.0) -> torch.Tensor:
        first = self.layer_count - 1 - lod
        x, stats = self.blocks[first](self.from_rgb[first](img))
        transition = lod > 0 and blend < 1.0
        if transition:
            x = self.from_rgb[first + 1].blend(img, x, blend)
        for block in self.blocks[first + 1:]:
            x, block_stats = block(x)
            stats += block_stats
        return self._summed_styles(first, stats, blend if transition else 1.0)

    def _summed_styles(self, first: int, stats: list[torch.Tensor], blend: float) -> torch.Tensor:
        layers = [layer.style for block in self.blocks[first:] for layer in (block.extract_1, block.extract_2)]
        start, new = self.style_offsets[2 * first], self.style_offsets[2 * first + 2] - self.style_offsets[2 * first]
        gains = self.style_gains[start:]
        biases = torch.stack([layer.bias for layer in layers])
        if blend < 1.0:  # the new block's two layers fade in
            gains = torch.cat([gains[:new] * blend, gains[new:]])
            bias = biases[2:].sum(0) + biases[:2].sum(0) * blend
        else:
            bias = biases.sum(0)
        weight = torch.cat([layer.weight for layer in layers], dim=1)
        return F.linear(torch.cat(stats, dim=1) * gains.to(stats[0].dtype), weight, bias)


class StyleALAE(ALAEBase):
    """StyleALAE with F (mapping_f), G (generator), E (encoder), D (mapping_d)."""

    def __init__(self, cfg: ModelConfig):
        if cfg.kind != "style":
            raise ValueError(f"StyleALAE: argument 'cfg.kind' must be 'style', got {cfg.kind!r}")
        super().__init__(cfg, cfg.mapping_layers)
        self.num_ws = 2 * cfg.layer_count
        self.max_lod = cfg.layer_count - 1
        self.generator = Generator(cfg)
        self.encoder = Encoder(cfg)

    def resolution(self, lod: int) -> int:
        return 4 * 2 ** lod

    def fade_reals(self, x: torch.Tensor, lod: int, blend: float) -> torch.Tensor:
        """blend·x + (1 − blend)·nearest_up2(avgpool2(x)) during level lod's fade-in, as G's output fades."""
        return blend_real(x, self._check_blend(blend)) if lod > 0 and blend < 1.0 else x

    def _check_blend(self, blend: float) -> float:
        blend = float(blend)
        if not 0.0 <= blend <= 1.0:
            raise ValueError(f"argument 'blend' must be in [0, 1], got {blend}")
        return blend

    def generate(self, ws: torch.Tensor, lod: int, blend: float = 1.0, noise: str = "random") -> torch.Tensor:
        """G: ws [N, ℓ] or [N, 2L, ℓ] -> images [N, channels, R, R], R = resolution(lod).

        noise: 'random' draws fresh maps from the global torch RNG in the official shapes and order
        (a seeded call gives the official images); 'fixed' uses per-layer maps built from a fixed
        seed; 'const' draws one map per layer shared by the batch.
        """
        self._check_lod(lod)
        if noise not in NOISE_MODES:
            raise ValueError(f"generate: argument 'noise' must be one of {NOISE_MODES}, got {noise!r}")
        return self.generator(self._broadcast_ws(ws), lod, self._check_blend(blend), noise)

    def encode(self, x: torch.Tensor, lod: int, blend: float = 1.0) -> torch.Tensor:
        """E: images [N, channels, R, R] -> w [N, ℓ]."""
        self._check_lod(lod)
        r = self.resolution(lod)
        if x.dim() != 4 or x.shape[1:] != (self.channels, r, r):
            raise ValueError(f"encode: argument 'x' must have shape [N, {self.channels}, {r}, {r}] at lod {lod}, "
                             f"got {list(x.shape)}")
        return self.encoder(x, lod, self._check_blend(blend))
