"""Real StyleALAE layer shapes, computed from the official configs.

Convention: the batch of a lod is the per-GPU batch of the official 8-GPU schedule,
i.e. LOD_2_BATCH_8GPU[lod] / 8. At lod k the largest layer is generator block k
(C_k channels at 4·2^k pixels), which is also the encoder's first block at that lod.
"""

from __future__ import annotations

from dataclasses import dataclass

from alae_fast.models import ModelConfig
from alae_fast.models.style_alae import block_channels
from alae_fast.train.config import load_config

GPUS_OF_SCHEDULE = 8

# Official DATASET.SIZE (images per epoch) of each config; the run configs do not carry it.
TRAIN_IMAGES = {"ffhq": 60_000, "celeba-hq256": 29_000, "mnist": 60_000}


@dataclass(frozen=True)
class Config:
    """A built-in run config, seen as the layer shapes and the schedule it implies."""

    name: str
    model: ModelConfig
    epochs_per_lod: int
    epochs: int
    batch_8gpu: tuple[int, ...]
    train_images: int

    @classmethod
    def load(cls, name: str) -> "Config":
        run = load_config(name)
        return cls(name, run.model, run.train.epochs_per_lod, run.train.epochs,
                   tuple(run.train.batch_per_lod), TRAIN_IMAGES[name])

    @property
    def layer_count(self) -> int:
        return self.model.layer_count

    @property
    def latent(self) -> int:
        return self.model.latent_size

    @property
    def channels(self) -> int:
        return self.model.channels

    def gen_channels(self, block: int) -> int:
        return block_channels(self.model, block)

    def resolution(self, lod: int) -> int:
        return 4 * 2**lod

    def batch(self, lod: int) -> int:
        """Per-GPU batch of the official 8-GPU schedule."""
        return self.batch_8gpu[lod] // GPUS_OF_SCHEDULE

    def epochs_at(self, lod: int) -> int:
        """Epochs trained at `lod`: epochs_per_lod each, the last lod takes the rest."""
        last = self.layer_count - 1
        return self.epochs - self.epochs_per_lod * last if lod == last else self.epochs_per_lod


CONFIGS = {name: Config.load(name) for name in TRAIN_IMAGES}


@dataclass(frozen=True)
class OpShape:
    """The case shape of one op, and every (config, lod) that runs the op at it."""

    op: str
    shape: tuple[int, int, int, int]
    where: tuple[str, ...]

    @property
    def label(self) -> str:
        return "x".join(map(str, self.shape))


def _case_shape(op: str, cfg: Config, lod: int):
    """Argument `shape` of testing.op_cases.CASES[op].make at `lod`, or None if the op is idle."""
    n, r = cfg.batch(lod), cfg.resolution(lod)
    c = cfg.gen_channels(lod)
    if op in ("modulated_adain", "style_extract", "noise_inject"):
        return (n, c, r, r)  # generator block lod / encoder block L−1−lod
    if lod == 0:
        return None  # the blends exist only in a transition to a new lod
    if op in ("blend_up", "blend_real"):
        return (n, cfg.channels, r, r)  # RGB images; blend_up's low input is half size
    if op == "blend_down":
        return (n, cfg.gen_channels(lod - 1), r, r)  # from_rgb[lod−1] output at r/2
    raise KeyError(op)


def op_shapes(op: str, configs=None, lods=None) -> list[OpShape]:
    """Distinct shapes of `op` over the configs and lods (ffhq and celeba-hq256 share many)."""
    seen: dict[tuple, list[str]] = {}
    for cfg in (CONFIGS[name] for name in (configs or CONFIGS)):
        for lod in range(cfg.layer_count):
            if lods is not None and lod not in lods:
                continue
            shape = _case_shape(op, cfg, lod)
            if shape is not None:
                seen.setdefault(shape, []).append(f"{cfg.name}@lod{lod}")
    return [OpShape(op, s, tuple(w)) for s, w in seen.items()]


def same_network(a: str, b: str, lod: int) -> bool:
    """True when configs a and b train identical networks and batches at `lod`."""
    ca, cb = CONFIGS[a], CONFIGS[b]
    return (
        (ca.latent, ca.model.mapping_layers, ca.channels) == (cb.latent, cb.model.mapping_layers, cb.channels)
        and ca.batch(lod) == cb.batch(lod)
        and all(ca.gen_channels(i) == cb.gen_channels(i) for i in range(lod + 1))
    )
