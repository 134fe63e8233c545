"""The permutation-invariant MLP ALAE of the MNIST experiment (the official MNIST-FC model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alae_fast.models.alae import ALAEBase
from alae_fast.models.config import ModelConfig
from alae_fast.nn import EqualizedLinear
from alae_fast.ops import LEAKY_SLOPE

SLOPE = LEAKY_SLOPE


class MLP(nn.Module):
    """EqualizedLinear layers, each followed by leaky ReLU 0.2; the last one too when final_act."""

    def __init__(self, widths: list[int], final_act: bool):
        super().__init__()
        self.final_act = final_act
        self.blocks = nn.ModuleList(EqualizedLinear(i, o) for i, o in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, block in enumerate(self.blocks):
            x = block(x)
            if self.final_act or k < len(self.blocks) - 1:
                x = F.leaky_relu(x, SLOPE)
        return x


class MLPALAE(ALAEBase):
    """E: pixels→hidden→hidden→ℓ; G: ℓ→hidden→hidden→pixels; F and D as in StyleALAE.

    As the official EncoderFC/GeneratorFC: E applies leaky ReLU after its last layer too, G does not;
    images are in [-1, 1] both ways (the official run feeds x/127.5 − 1 to the FC model as to every
    other). Images are [N, channels, S, S] (flattened inside); lod, blend and noise are accepted and ignored.
    """

    KIND = "mlp"
    ENCODER_FINAL_ACT = True  # the official EncoderFC activates its output too

    def __init__(self, cfg: ModelConfig):
        if cfg.kind != self.KIND:
            raise ValueError(f"{type(self).__name__}: argument 'cfg.kind' must be {self.KIND!r}, got {cfg.kind!r}")
        super().__init__(cfg, cfg.mapping_layers)
        self.num_ws = 1
        self.max_lod = 0
        self.image_shape = (cfg.channels, cfg.image_size, cfg.image_size)
        pixels = cfg.channels * cfg.image_size ** 2
        self.encoder = MLP([pixels, cfg.hidden, cfg.hidden, cfg.latent_size], final_act=self.ENCODER_FINAL_ACT)
        self.generator = MLP([cfg.latent_size, cfg.hidden, cfg.hidden, pixels], final_act=False)

    def resolution(self, lod: int = 0) -> int:
        return self.cfg.image_size

    def generate(self, ws: torch.Tensor, lod: int = 0, blend: float = 1.0, noise: str = "random") -> torch.Tensor:
        """G: ws [N, ℓ] or [N, 1, ℓ] -> images [N, channels, S, S]."""
        return self.generator(self._broadcast_ws(ws)[:, 0]).view(-1, *self.image_shape)

    def encode(self, x: torch.Tensor, lod: int = 0, blend: float = 1.0) -> torch.Tensor:
        """E: images [N, channels, S, S] -> w [N, ℓ]."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"encode: argument 'x' must have shape [N, {', '.join(map(str, self.image_shape))}], "
                             f"got {list(x.shape)}")
        return self.encoder(x.flatten(1))
