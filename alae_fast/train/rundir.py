"""Run directories: <outdir>/<NNNNN>-<name>/ per run, never reused by a fresh run.

A run directory holds checkpoints/, losses.csv, log.txt, summary.json, training_options.json,
grids/ and the final PNGs. A fresh run always gets a new numbered directory (or an explicit,
empty --out); continuing one needs --resume.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from alae_fast.io.checkpoint import list_checkpoints

RUN_FILES = ("losses.csv", "log.txt", "summary.json", "training_options.json", "metrics.jsonl")
_NUMBERED = re.compile(r"^(\d{5,})-(.+)$")


def run_contents(path) -> list[str]:
    """What in `path` belongs to a run: checkpoint count and run files ([] for a new or empty directory)."""
    path = Path(path)
    found = [f"{len(c)} checkpoint(s)" for c in [list_checkpoints(path / "checkpoints")] if c]
    return found + [name for name in RUN_FILES if (path / name).exists()]


def _numbered(outdir: Path, name: str) -> list[tuple[int, Path]]:
    if not outdir.is_dir():
        return []
    runs = [(int(m.group(1)), p) for p in outdir.iterdir() if p.is_dir() and (m := _NUMBERED.match(p.name))]
    return sorted((i, p) for i, p in runs if _NUMBERED.match(p.name).group(2) == name)


def next_run_dir(outdir, name: str) -> Path:
    """<outdir>/<next number>-<name>: the number is one above every numbered run in outdir (not created)."""
    outdir = Path(outdir)
    taken = [int(m.group(1)) for p in outdir.iterdir() if (m := _NUMBERED.match(p.name))] if outdir.is_dir() else []
    return outdir / f"{max(taken, default=-1) + 1:05d}-{name}"


def new_run_dir(outdir, name: str) -> Path:
    """Create next_run_dir(outdir, name) (or the next free number, if another launch took it)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    number = int(next_run_dir(outdir, name).name.split("-", 1)[0])
    while True:
        path = outdir / f"{number:05d}-{name}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another launch took it
            number += 1


def latest_run_dir(outdir, name: str) -> Path | None:
    """The highest-numbered <outdir>/<NNNNN>-<name>, or None."""
    runs = _numbered(Path(outdir), name)
    return runs[-1][1] if runs else None


def run_dir_of(checkpoint) -> Path:
    """The run directory a checkpoint file or checkpoints/ directory belongs to."""
    path = Path(checkpoint)
    folder = path.parent if path.is_file() else path
    return folder.parent if folder.name == "checkpoints" else folder


def write_options(run_dir, config: dict, **resolved) -> Path:
    """training_options.json: the resolved config, the command line and the run's settings; a resumed run
    appends its own entry under 'resumes' and keeps the first."""
    path = Path(run_dir) / "training_options.json"
    entry = {"argv": sys.argv, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **resolved}
    if path.exists():
        data = json.loads(path.read_text())
        data.setdefault("resumes", []).append({**entry, "config": config})
    else:
        data = {"config": config, **entry}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path
