"""Data loader throughput (img/s) per loader, resolution, file format and worker count.

Loaders: DALI GPU ('dali', gpu marker), DALI CPU ('dali-cpu'), torch + Pillow ('torch').
Formats: a folder of JPEGs, and the same images after `alae-fast prepare` (raw TFRecords).
Each round is one next_batch (synchronised on a GPU); extra_info holds img_per_s and the
worker/thread count. `pytest benchmarks -m smoke --benchmark-disable` runs the 32px subset.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from alae_fast.cli import main as cli_main
from alae_fast.data import make_stream

# resolution -> (images in the dataset, batch size)
SIZES = {32: (512, 256), 128: (256, 64), 256: (128, 32), 1024: (32, 8)}
WORKERS = sorted({2, os.cpu_count() or 2})
# torch first: its workers fork before any DALI thread exists in this process.
LOADERS = {"torch": "cpu", "dali-cpu": "cpu", "dali": "cuda"}


def _marks(loader: str, res: int):
    marks = [pytest.mark.gpu] if loader == "dali" else []
    return marks + ([pytest.mark.smoke] if res == 32 and loader != "dali" else [])


CASES = [pytest.param(loader, res, fmt, workers, marks=_marks(loader, res),
                      id=f"{loader}-{res}px-{fmt}-w{workers}")
         for loader in LOADERS for res in SIZES for fmt in ("jpeg", "records") for workers in WORKERS]


@pytest.fixture(scope="session")
def datasets(tmp_path_factory):
    """dataset(fmt, res, count) -> path, built once: smooth random RGB patterns, JPEG q90."""
    cache = {}

    def get(fmt: str, res: int, count: int):
        key = (fmt, res, count)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"{fmt}{res}")
            jpeg = root / "jpeg" if fmt == "records" else root
            jpeg.mkdir(exist_ok=True)
            rng = np.random.default_rng(res)
            grid = np.linspace(0, 2 * np.pi, res, dtype=np.float32)
            for i in range(count):
                f = rng.uniform(1, 6, (3, 2))
                rgb = [np.sin(f[c, 0] * grid)[:, None] * np.cos(f[c, 1] * grid)[None] for c in range(3)]
                pixels = (np.stack(rgb, -1) * 110 + 128 + rng.normal(0, 8, (res, res, 3))).clip(0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(jpeg / f"{i:05d}.jpg", quality=90)
            if fmt == "records":
                out = root / "prepared"
                assert cli_main(["prepare", str(jpeg), str(out), "--resolution", str(res)]) == 0
                root = out
            cache[key] = root
        return cache[key]

    return get


@pytest.mark.parametrize("loader,res,fmt,workers", CASES)
def test_loader_throughput(benchmark, datasets, loader, res, fmt, workers):
    if loader.startswith("dali"):
        pytest.importorskip("nvidia.dali")
    count, batch = SIZES[res]
    if benchmark.disabled:  # smoke run: a tiny dataset, just check it works
        count, batch = 16, 8
    device = torch.device(LOADERS[loader])
    stream = make_stream(datasets(fmt, res, count), loader=loader, device=device,
                         num_workers=workers, mirror=True)

    def step():
        x = stream.next_batch(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return x

    x = benchmark.pedantic(step, rounds=10, warmup_rounds=2)
    stream.close()
    assert x.shape == (batch, 3, res, res)
    if not benchmark.disabled:
        benchmark.extra_info.update(img_per_s=batch / benchmark.stats.stats.median, batch=batch,
                                    workers=workers, loader=loader, resolution=res, format=fmt)
