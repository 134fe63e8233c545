"""Progressive-growing schedule counted in images seen.

lod = min(L-1, images // images_per_lod). The first half of every level after lod 0 is
a transition with blend = sin(pi*t - pi/2)/2 + 1/2, t going 0 -> 1; blend is 1 otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    lod: int
    blend: float
    batch: int
    lr: float


class Schedule:
    def __init__(self, num_lods: int, images_per_lod: int, batch_per_lod, lr_per_lod):
        if images_per_lod < 1:
            raise ValueError(f"Schedule: images_per_lod must be >= 1, got {images_per_lod}")
        self.num_lods = int(num_lods)
        self.images_per_lod = int(images_per_lod)
        self.batch_per_lod = _per_lod(batch_per_lod, self.num_lods, "batch_per_lod")
        self.lr_per_lod = _per_lod(lr_per_lod, self.num_lods, "lr_per_lod")

    def lod(self, images: int) -> int:
        return min(self.num_lods - 1, int(images) // self.images_per_lod)

    def blend(self, images: int) -> float:
        lod = self.lod(images)
        if lod == 0:
            return 1.0
        t = (int(images) - lod * self.images_per_lod) / (self.images_per_lod / 2)
        if t >= 1.0:
            return 1.0
        return math.sin(math.pi * t - math.pi / 2) / 2 + 0.5

    def at(self, images: int) -> Phase:
        lod = self.lod(images)
        return Phase(lod, self.blend(images), int(self.batch_per_lod[lod]), float(self.lr_per_lod[lod]))


def _per_lod(values, num_lods: int, name: str) -> list:
    """A scalar or a list; a list shorter than num_lods repeats its last entry."""
    if not isinstance(values, (list, tuple)):
        return [values] * num_lods
    if not values:
        raise ValueError(f"Schedule: {name} is empty")
    values = list(values)[:num_lods]
    return values + [values[-1]] * (num_lods - len(values))
