"""Shared cursor, resolution and resume logic of the on-disk loaders (torch and DALI).

The order is stream.epoch_order, identical to TensorStream, so every loader shards and
resumes the same way. Loaders produce uint8 batches at the source's level resolution;
the last 2x2 box halvings to the requested resolution and the [-1, 1] scaling run here,
on the output device (exactly the same, whichever loader read the data).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import ImageStream, check_resolution, check_shard, check_state, iter_order, to_unit_range


class SourceStream(ImageStream):
    def __init__(self, source, *, device="cpu", rank=0, world_size=1, seed=0, mirror=False):
        name = type(self).__name__
        check_shard(rank, world_size, source.num_images, name)
        self.source, self.device = source, torch.device(device)
        self.channels, self.num_images = source.channels, source.num_images
        self.full_resolution = source.full_resolution
        self.rank, self.world_size, self.seed, self.mirror = rank, world_size, seed, mirror
        self.epoch, self.position = 0, 0
        self.resolution = None
        self.set_resolution(self.full_resolution)

    def set_resolution(self, res: int) -> None:
        halvings = check_resolution(res, self.full_resolution, type(self).__name__)
        if res == self.resolution:
            return
        # Encoded images are decoded at full resolution; records come at a stored level.
        level = self.source.level_for(res) if hasattr(self.source, "level_for") else self.full_resolution
        self.resolution, self.level = int(res), level
        self._halvings = halvings - check_resolution(level, self.full_resolution, "level")
        self._restart()

    def _items(self):
        return iter_order(self.num_images, self.seed, self.rank, self.world_size,
                          self.epoch, self.position)

    def _restart(self) -> None:
        """Drop anything read ahead; continue from (epoch, position) at self.level."""
        raise NotImplementedError

    def _finish(self, images: torch.Tensor, flips=None) -> torch.Tensor:
        """uint8 [B,C,level,level] (any device) -> float [-1,1] at self.resolution."""
        if self.device.type == "cuda" and images.device.type == "cpu":
            images = images.pin_memory()
        x = to_unit_range(images.to(self.device, non_blocking=True), self._halvings)
        if flips is not None:  # None: the loader already mirrored
            mask = torch.as_tensor(np.asarray(flips, bool), device=self.device)
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
        return x

    def state_dict(self) -> dict:
        return {"kind": type(self).__name__, "epoch": self.epoch, "position": self.position,
                "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "resolution": self.resolution}

    def load_state_dict(self, state: dict) -> None:
        check_state(self, state, type(self).__name__)
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.resolution = None  # forces a restart at the saved cursor
        self.set_resolution(int(state["resolution"]))
