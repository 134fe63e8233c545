"""Image folder -> TFRecord shards (`alae-fast prepare SRC OUT --resolution R [--levels]`).

Format: the official ALAE layout, so old and new datasets read the same way: one file set
per level, OUT/<name>-rXX.tfrecords.NNN (XX = log2 resolution, NNN = shard), each record an
Example with `shape` int64 [C,H,W] and `data` raw uint8 CHW, plus DALI tfrecord2idx-style
.idx files. Raw pixels cost disk space but no decode at training time, and TFRecord is the
format DALI reads fastest on CPU (RECIPES). --levels also stores R/2, R/4, ... 4, each the
exact 2x2 box average of the full image (rounded once), so low lods read small records.

Resumable: each shard is written to a temp file and renamed; OUT/prepare.json lists the
finished shards. Finished output is never overwritten without --overwrite.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import records
from .sources import RECORD_NAME, REPORT_NAME, FileSource, failure, write_report

MANIFEST = "prepare.json"


@dataclass
class PrepareOptions:
    src: Path  # image folder (any format Pillow reads, nested); only read
    out: Path  # output directory
    resolution: int  # side length, a power of 2
    levels: bool = False  # also store R/2, R/4, ... 4
    shard_size: int = 0  # images per shard (0: about 256 MB of pixels)
    name: str = "images"  # file name prefix
    overwrite: bool = False  # replace finished output


def _levels(options: PrepareOptions) -> list[int]:
    r = options.resolution
    if r < 4 or r & (r - 1):
        raise ValueError(f"--resolution {r}: must be a power of two >= 4")
    return [r >> k for k in range(r.bit_length() - 2)] if options.levels else [r]


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _pyramid(image: np.ndarray, levels: list[int]):
    """(res, uint8 CHW) per level: box average of the full image, rounded once."""
    c, full, _ = image.shape
    for res in levels:
        f = full // res
        pooled = image.reshape(c, res, f, res, f).mean(axis=(2, 4)) if f > 1 else image
        yield res, np.rint(pooled).astype(np.uint8)


def _write_shard(source, indices, levels, out: Path, name: str, key: str, bar) -> list:
    """Write one shard of every level (temp files, then renames); returns its bad files."""
    paths = {r: out / f"{name}-r{r.bit_length() - 1:02d}.tfrecords.{key}" for r in levels}
    tmps = {r: p.with_name(f".{p.name}.tmp") for r, p in paths.items()}
    files = {r: open(t, "wb") for r, t in tmps.items()}
    bad = []
    try:
        for i in indices:
            bar.update(1)
            try:
                image = source.decode(i)
            except Exception as exc:  # noqa: BLE001 - reported in bad_files.txt
                bad.append([str(source.paths[i]), failure(exc)])
                continue
            for res, level in _pyramid(image, levels):
                files[res].write(records.frame(records.encode_example(level)))
    finally:
        for f in files.values():
            f.close()
    for r, path in paths.items():
        os.replace(tmps[r], path)
        records.write_index(records.scan(path), path.with_name(path.name + ".idx"))
    return bad


def _clear(out: Path) -> None:
    for p in out.iterdir():
        if RECORD_NAME.match(p.name) or p.name.endswith(".idx") or p.name in (MANIFEST, REPORT_NAME):
            p.unlink()


def _open_manifest(options: PrepareOptions, levels, out: Path) -> dict:
    wanted = {"source": str(options.src.resolve()), "resolution": options.resolution,
              "levels": levels, "shard_size": options.shard_size, "name": options.name}
    path = out / MANIFEST
    if path.exists() and not options.overwrite:
        state = json.loads(path.read_text())
        if state.get("complete"):
            raise FileExistsError(f"{out}: already prepared; pass --overwrite to replace it")
        if {k: state.get(k) for k in wanted} != wanted:
            raise FileExistsError(f"{out}: holds an unfinished run with other settings; "
                                  "pass --overwrite to start over")
        return state
    if out.exists() and any(out.iterdir()) and not (options.overwrite or path.exists()):
        raise FileExistsError(f"{out}: not empty and not an alae-fast prepare output; "
                              "choose an empty directory or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    if options.overwrite:
        _clear(out)
    return {**wanted, "shards": {}, "complete": False}


def prepare(options: PrepareOptions) -> Path:
    """Write the dataset; returns its directory. Raises ValueError, FileNotFoundError or FileExistsError."""
    levels = _levels(options)
    src, out = options.src.resolve(), options.out.resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"prepare: source folder {src} does not exist")
    if out == src or src in out.parents:
        raise ValueError(f"prepare: OUT {out} lies inside SRC {src}; SRC is never written to")
    state = _open_manifest(options, levels, out)
    source = FileSource(src, resolution=options.resolution, report_dir=out)
    shard_size = options.shard_size or max(1, 2**28 // (source.channels * options.resolution**2))
    starts = range(0, source.num_images, shard_size)
    bar = tqdm(total=source.num_images, unit="img", desc="prepare")
    for shard, start in enumerate(starts):
        indices = range(start, min(start + shard_size, source.num_images))
        key = f"{shard:03d}"
        if key in state["shards"]:
            bar.update(len(indices))
            continue
        bad = _write_shard(source, indices, levels, out, options.name, key, bar)
        state["shards"][key] = {"images": len(indices) - len(bad), "bad": bad}
        _write_atomic(out / MANIFEST, json.dumps(state, indent=1).encode())
    bar.close()
    bad = [(p, reason) for p, reason in source.bad]
    bad += [tuple(b) for s in state["shards"].values() for b in s["bad"]]
    (out / REPORT_NAME).unlink(missing_ok=True)
    if bad:
        write_report(bad, out / REPORT_NAME, f"prepare {src}")
    if not sum(s["images"] for s in state["shards"].values()):
        raise ValueError(f"prepare: no usable image in {src}")
    state["complete"] = True
    _write_atomic(out / MANIFEST, json.dumps(state, indent=1).encode())
    return out
