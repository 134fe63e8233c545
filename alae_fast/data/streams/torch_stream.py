"""TorchStream: torch.utils.data workers + Pillow; the fallback loader without DALI.

Workers read samples in the shared epoch order; a sample that fails to read is skipped
(logged and added to the source's bad-file report) and the batch is filled from the following samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..sources import failure
from .source_stream import SourceStream

CHUNK = 16  # samples per worker task


class _Reads(Dataset):
    """Maps an (epoch, position, index, flip) item to (item, uint8 CHW array or the error text)."""

    def __init__(self, source, level: int):
        self.source, self.level = source, level

    def __len__(self):
        return self.source.num_images

    def __getitem__(self, item):
        index = item[2]
        try:
            if self.source.encoded:
                return item, self.source.decode(index)
            return item, self.source.read(index, self.level)
        except Exception as exc:  # noqa: BLE001 - never crash mid-epoch on one bad file
            return item, failure(exc)


def _keep(batch):
    return batch


class TorchStream(SourceStream):
    def __init__(self, source, *, num_workers=2, **kwargs):
        self.num_workers = num_workers
        self._loader = None
        super().__init__(source, **kwargs)

    def _restart(self) -> None:
        self.close()
        self._pending = []  # read items not yet delivered, in order
        self._loader = iter(DataLoader(
            _Reads(self.source, self.level), sampler=self._items(), batch_size=CHUNK,
            collate_fn=_keep, num_workers=self.num_workers,
            prefetch_factor=4 if self.num_workers else None))

    def next_batch(self, batch_size: int) -> torch.Tensor:
        if batch_size < 1:
            raise ValueError(f"TorchStream.next_batch: batch_size {batch_size} < 1")
        images, flips = [], []
        while len(images) < batch_size:
            if not self._pending:
                self._pending = next(self._loader)
            (epoch, pos, index, flip), data = self._pending.pop(0)
            self.epoch, self.position = epoch, pos + 1
            if isinstance(data, str):
                self.source.report_bad(index, data)
                continue
            images.append(data)
            flips.append(flip)
        batch = torch.from_numpy(np.stack(images))
        return self._finish(batch, flips if self.mirror else None)

    def close(self) -> None:
        # Dropping the iterator shuts its worker processes down.
        self._loader = None
