"""DaliStream: NVIDIA DALI pipelines (GPU with the `mixed` decoder, or CPU with device_id=None).

Samples enter through fn.external_source in the shared epoch order (stream.epoch_order)
instead of fn.readers.*: DALI readers shuffle through a buffer and rotate contiguous
shards, which gives neither TensorStream's order nor an exact resume point. Python only
reads bytes (cheap); decoding, resizing and flips run in DALI's threads or on the GPU.

Resizing: encoded images are decoded, shorter side resized to the source's full
resolution R (linear + antialias), center-cropped to R x R, and delivered as uint8 NCHW.
Every lower resolution is then made by exact 2x2 box halvings on the output device
(source_stream.SourceStream._finish): the same filter as TensorStream and the prepared levels. fn.resize straight to 4x4..R/2 would apply a wider triangle filter instead.
A lod change only changes that torch step, so the pipeline is rebuilt only for prepared
records (a different stored level) or a new batch size.

Files in formats DALI does not decode (GIF, TGA, ICO, ...: anything outside DALI_FORMATS)
are decoded by Pillow and fed as a lossless PNG of that decode, so they give what the torch
loader gives. A failure inside DALI names no file: the files of the batches in flight are
then decoded one at a time to find those DALI rejects; each is reported and skipped if
Pillow cannot decode it either, else fed through Pillow from then on, and the pipeline
restarts at the delivered position. Both outcomes depend only on the files, so a resumed
run sees the same batches. A failure that the one-at-a-time CPU run does not reproduce
(not a file's fault) is raised.
"""

from __future__ import annotations

import io
import logging
from collections import deque

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator
from PIL import Image

from ..sources import failure
from .source_stream import SourceStream

# Pillow format names of the files fed to DALI's decoder as they are; it takes the first
# frame of animated PNG/WebP/TIFF.
DALI_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000"}
log = logging.getLogger("alae_fast.data")


def _png(image: np.ndarray) -> np.ndarray:
    """uint8 CHW -> the bytes of a PNG (fast, lossless)."""
    buf = io.BytesIO()
    Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(
        buf, "PNG", compress_level=1)
    return np.frombuffer(buf.getbuffer(), np.uint8)


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
        self._via_pillow = ({i for i, fmt in enumerate(source.formats) if fmt not in DALI_FORMATS}
                            if source.encoded else set())
        super().__init__(source, **kwargs)
        if gpu and self.device.type != "cuda":
            raise ValueError(f"DaliStream: loader='dali' needs a cuda device, got {self.device}; "
                             "use loader='dali-cpu'")

    def _feed(self):
        """Called by DALI, possibly ahead of delivery: the next batch of bytes and flips."""
        data, flips, indices = [], [], []
        for epoch, pos, index, flip in self._reader:
            cursor = (epoch, pos + 1)
            if index in self.source.failed:
                continue
            try:
                data.append(self._bytes(index))
            except Exception as exc:  # noqa: BLE001 - reported, then skipped
                self.source.report_bad(index, failure(exc))
                continue
            flips.append(np.array(flip and self.mirror, np.int32))
            indices.append(index)
            if len(data) == self._batch_size:
                break
        self._fed.append((cursor, indices))
        return data, flips

    def _bytes(self, index: int) -> np.ndarray:
        if not self.source.encoded:
            return self.source.read(index, self.level)
        if index in self._via_pillow:
            return _png(self.source.decode(index))
        return self.source.read(index)

    def next_batch(self, batch_size: int) -> torch.Tensor:
        if batch_size < 1:
            raise ValueError(f"DaliStream.next_batch: batch_size {batch_size} < 1")
        if batch_size != self._batch_size:
            self._batch_size = batch_size
            self._restart()
        while True:
            try:
                if self._iterator is None:
                    self._build()  # DALI runs the first batches right away
                images = next(self._iterator)[0]["images"]
                break
            except RuntimeError as exc:
                self._recover(exc)
        (self.epoch, self.position), _ = self._fed.popleft()
        return self._finish(images)

    def _recover(self, error: Exception) -> None:
        """DALI failed on a batch in flight, naming no file: find the files it rejects, skip
        and report those Pillow cannot decode either, feed the others through Pillow."""
        pending = [index for _, indices in self._fed for index in indices]
        rejected = self._rejected(pending) if self.source.encoded else []
        if not rejected:
            raise error
        for index in rejected:
            try:
                self.source.decode(index)
            except Exception as exc:  # noqa: BLE001 - reported, then skipped
                self.source.report_bad(index, failure(exc))
            else:
                self._via_pillow.add(index)
                log.warning("DALI cannot decode %s; decoding it with Pillow", self.source.paths[index])
        self._restart()

    def _rejected(self, indices: list[int]) -> list[int]:
        """The files among `indices` that this stream's pipeline, run on the CPU one file at
        a time and synchronously, fails on (a failure leaves a pipeline unusable)."""
        queue, rejected = deque(indices), []
        while queue:
            pipe = _pipeline(feed=lambda: ([self._bytes(queue[0])], [np.zeros((), np.int32)]),
                             encoded=True, gpu=False, channels=self.channels, res=self.level,
                             batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1,
                             exec_async=False, exec_pipelined=False)
            pipe.build()  # outside the try: a failure here is no file's fault
            try:
                while queue:
                    pipe.run()
                    queue.popleft()
            except RuntimeError:
                rejected.append(queue.popleft())
        return rejected

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
