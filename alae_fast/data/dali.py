"""DaliStream: NVIDIA DALI pipelines (GPU with the `mixed` decoder, or CPU with device_id=None).

Samples enter through fn.external_source in the shared epoch order (stream.epoch_order)
instead of fn.readers.*: DALI readers shuffle through a buffer and rotate contiguous
shards, which gives neither TensorStream's order nor an exact resume point. Python only
reads bytes (cheap); decoding, resizing and flips run in DALI's threads or on the GPU.

Resizing: encoded images are decoded, shorter side resized to the source's full
resolution R (linear + antialias), center-cropped to R x R, and delivered as uint8 NCHW.
Every lower resolution is then made by exact 2x2 box halvings on the output device
(filestream.SourceStream._finish), i.e. SPEC §4's filter, identical to TensorStream and the
prepared levels. fn.resize straight to 4x4..R/2 would apply a wider triangle filter instead.
A lod change only changes that torch step, so the pipeline is rebuilt only for prepared
records (a different stored level) or a new batch size.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from .filestream import SourceStream


@pipeline_def
def _pipeline(feed, encoded: bool, gpu: bool, channels: int, res: int):
    data, flip = fn.external_source(source=feed, num_outputs=2, batch=True,
                                    layout=[None if encoded else "CHW", None])
    if encoded:
        images = fn.decoders.image(data, device="mixed" if gpu else "cpu",
                                   output_type=types.GRAY if channels == 1 else types.RGB)
        images = fn.resize(images, resize_shorter=res, antialias=True,
                           interp_type=types.INTERP_LINEAR)
        return fn.crop_mirror_normalize(images, crop=(res, res), mirror=flip,
                                        output_layout="CHW", dtype=types.UINT8)
    images = data.gpu() if gpu else data
    return fn.flip(images, horizontal=flip)


class DaliStream(SourceStream):
    """A new batch size rebuilds the pipeline: keep it constant within a lod."""

    def __init__(self, source, *, gpu=True, num_threads=2, **kwargs):
        self.gpu, self.num_threads = gpu, max(1, num_threads)  # DALI needs >= 1 thread
        self._iterator = None
        self._batch_size = 0
        self._bad: set[int] = set()  # indices whose decode failed in DALI
        super().__init__(source, **kwargs)
        if gpu and self.device.type != "cuda":
            raise ValueError(f"DaliStream: loader='dali' needs a cuda device, got {self.device}; "
                             "use loader='dali-cpu'")

    def _feed(self):
        """Called by DALI, possibly ahead of delivery: the next batch of bytes and flips."""
        data, flips, indices = [], [], []
        for epoch, pos, index, flip in self._reader:
            cursor = (epoch, pos + 1)
            if index in self._bad:
                continue
            data.append(self.source.read(index) if self.source.encoded
                        else self.source.read(index, self.level))
            flips.append(np.array(flip and self.mirror, np.int32))
            indices.append(index)
            if len(data) == self._batch_size:
                break
        self._fed.append((cursor, indices))
        return data, flips

    def next_batch(self, batch_size: int) -> torch.Tensor:
        if batch_size < 1:
            raise ValueError(f"DaliStream.next_batch: batch_size {batch_size} < 1")
        if batch_size != self._batch_size:
            self._batch_size = batch_size
            self._restart()
        try:
            if self._iterator is None:
                self._build()  # DALI runs the first batches right away
            images = next(self._iterator)[0]["images"]
        except RuntimeError as exc:
            self._drop_bad(exc)
            return self.next_batch(batch_size)
        (self.epoch, self.position), _ = self._fed.popleft()
        return self._finish(images)

    def _drop_bad(self, error: Exception) -> None:
        """A decode failed inside DALI: find the bad files of the in-flight batches with
        Pillow, skip them from now on, and restart at the delivered cursor."""
        found = 0
        for _, indices in self._fed:
            for index in indices:
                try:
                    self.source.decode(index)
                except Exception as exc:  # noqa: BLE001 - reported, then skipped
                    self._bad.add(index)
                    self.source.report_bad(index, f"{type(exc).__name__}: {exc}")
                    found += 1
        if not found:
            raise error
        self._restart()

    def _restart(self) -> None:
        self.close()  # the next next_batch builds a pipeline at the delivered cursor

    def _build(self) -> None:
        self._reader = self._items()
        self._fed = deque()  # cursor after each batch handed to DALI, oldest first
        pipe = _pipeline(feed=self._feed, encoded=self.source.encoded, gpu=self.gpu,
                         channels=self.channels, res=self.level,
                         batch_size=self._batch_size, num_threads=self.num_threads,
                         device_id=self._device_id(), seed=self.seed,
                         prefetch_queue_depth=2)
        self._iterator = DALIGenericIterator([pipe], ["images"])

    def _device_id(self):
        if not self.gpu:
            return None
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def close(self) -> None:
        self._iterator = None  # releases the pipeline and its threads
