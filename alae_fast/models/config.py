"""Model hyper-parameters shared by the trainer, the benchmarks and the checkpoint converter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KINDS = ("style", "mlp", "aae")


@dataclass
class ModelConfig:
    kind: str                       # 'style' (StyleALAE), 'mlp' (permutation-invariant MNIST ALAE) or 'aae'
    layer_count: int = 4            # L; the image side is 2^(L+1)
    startf: int = 64
    maxf: int = 256
    latent_size: int = 32           # ℓ
    mapping_layers: int = 4
    channels: int = 1
    truncation_psi: float = 0.7
    truncation_cutoff: int = 8
    style_mixing_prob: float = 0.9
    w_avg_beta: float = 0.995
    image_size: int = 28            # mlp, aae: the side of the (flattened) image
    hidden: int = 1024              # mlp, aae: hidden width of E and G (and the AAE's code discriminator)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ModelConfig: argument 'kind' must be one of {KINDS}, got {self.kind!r}")
        for name in ("layer_count", "startf", "maxf", "latent_size", "mapping_layers", "channels", "image_size",
                     "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig: argument '{name}' must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict, where: str = "model config") -> "ModelConfig":
        """A config from a checkpoint's or a file's dict; the backend key older versions stored is dropped."""
        values = {k: v for k, v in values.items() if k != "impl"}
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        return cls(**values)
