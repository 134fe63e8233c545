"""The ImageStream interface and its in-memory implementation, TensorStream.

Every loader yields float32 NCHW batches in [-1, 1] (uint8 / 127.5 - 1) at the current
resolution. Lower resolutions come from repeated 2x2 box filtering. Epoch order
is a permutation drawn from a generator seeded with seed + epoch: the same on every rank,
then sharded rank::world_size, so each sample is seen exactly once per epoch across ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ImageStream:
    """An endless stream of image batches; epochs roll over and reshuffle transparently.

    Attributes: channels (C), num_images (dataset size over all ranks), device,
    full_resolution (largest available side), resolution (current output side).
    """

    channels: int
    num_images: int
    device: torch.device
    full_resolution: int
    resolution: int

    def set_resolution(self, res: int) -> None:
        """Switch the output resolution; the data position is kept."""
        raise NotImplementedError

    def next_batch(self, batch_size: int) -> torch.Tensor:
        """float32 [batch_size, C, res, res] in [-1, 1] on self.device."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Data position for an exact resume (plain ints/str/lists only)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers/pipelines. Safe to call twice."""


def check_resolution(res: int, full: int, what: str) -> int:
    """res must be full / 2^k; returns k (the number of 2x2 halvings)."""
    res = int(res)
    if res < 1 or full % res or (full // res) & (full // res - 1):
        raise ValueError(f"{what}: resolution {res} must be {full} / 2^k")
    return (full // res).bit_length() - 1


def to_unit_range(x: torch.Tensor, halvings: int) -> torch.Tensor:
    """uint8 (or float 0..255) NCHW -> float32 in [-1, 1], box-downsampled 2^halvings times."""
    x = x.float()
    for _ in range(halvings):
        x = F.avg_pool2d(x, 2)
    return x.div_(127.5).sub_(1.0)


def epoch_order(num: int, seed: int, epoch: int, rank: int, world_size: int):
    """(indices, flips) of this rank's share of epoch `epoch`; same draw on every rank."""
    gen = torch.Generator().manual_seed(int(seed) + int(epoch))
    perm = torch.randperm(num, generator=gen)
    flips = torch.rand(num, generator=gen) < 0.5
    return perm[rank::world_size], flips[rank::world_size]


def check_shard(rank: int, world_size: int, num_images: int, what: str) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"{what}: rank {rank} outside world_size {world_size}")
    if num_images < world_size:
        raise ValueError(f"{what}: {num_images} images cannot be split over {world_size} ranks")


class TensorStream(ImageStream):
    """Batches from an in-memory uint8 [N, C, H, W] tensor (kept on `device`)."""

    def __init__(self, images: torch.Tensor, *, device="cpu", rank=0, world_size=1,
                 seed=0, mirror=False, resolution: int | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(f"TensorStream: images must be uint8 [N,C,H,H], got "
                             f"{images.dtype} {tuple(images.shape)}")
        check_shard(rank, world_size, images.shape[0], "TensorStream")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.channels = images.shape[1]
        self.num_images = images.shape[0]
        self.full_resolution = images.shape[2]
        self.rank, self.world_size, self.seed, self.mirror = rank, world_size, seed, mirror
        self.set_resolution(resolution or self.full_resolution)
        self._seek(0, 0)

    def set_resolution(self, res: int) -> None:
        self._halvings = check_resolution(res, self.full_resolution, "TensorStream")
        self.resolution = int(res)

    def _seek(self, epoch: int, position: int) -> None:
        self.epoch, self.position = epoch, position
        order, flips = epoch_order(self.num_images, self.seed, epoch, self.rank, self.world_size)
        self._order, self._flips = order.to(self.device), flips.to(self.device)

    def _take(self, count: int):
        """Next `count` (indices, flips), crossing into following epochs as needed."""
        idx, flips = [], []
        while count:
            if self.position == len(self._order):
                self._seek(self.epoch + 1, 0)
            end = min(self.position + count, len(self._order))
            idx.append(self._order[self.position:end])
            flips.append(self._flips[self.position:end])
            count -= end - self.position
            self.position = end
        return torch.cat(idx), torch.cat(flips)

    def next_batch(self, batch_size: int) -> torch.Tensor:
        if batch_size < 1:
            raise ValueError(f"TensorStream.next_batch: batch_size {batch_size} < 1")
        idx, flips = self._take(batch_size)
        x = to_unit_range(self.images.index_select(0, idx), self._halvings)
        if self.mirror:
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        return x

    def state_dict(self) -> dict:
        return {"kind": "TensorStream", "epoch": self.epoch, "position": self.position,
                "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "resolution": self.resolution}

    def load_state_dict(self, state: dict) -> None:
        check_state(self, state, "TensorStream")
        self.set_resolution(state["resolution"])
        self._seek(int(state["epoch"]), int(state["position"]))


def check_state(stream: ImageStream, state: dict, what: str) -> None:
    """A resumed position only means the same thing under the same seed/sharding."""
    for key in ("seed", "rank", "world_size"):
        if state.get(key) != getattr(stream, key):
            raise ValueError(f"{what}.load_state_dict: {key} is {state.get(key)!r} in the "
                             f"checkpoint but {getattr(stream, key)!r} in this stream")


def iter_order(num: int, seed: int, rank: int, world_size: int, epoch: int, position: int):
    """Endless (epoch, position, index, flip) from a cursor, in epoch_order."""
    while True:
        order, flips = epoch_order(num, seed, epoch, rank, world_size)
        for pos in range(position, len(order)):
            yield epoch, pos, int(order[pos]), bool(flips[pos])
        epoch, position = epoch + 1, 0
