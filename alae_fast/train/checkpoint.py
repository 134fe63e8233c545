"""Atomic, resumable checkpoints loadable with torch.load(weights_only=True).

Files are <dir>/ckpt-<images:012d>.pt. A save writes a temp file in the same directory,
fsyncs it, renames it over the target and fsyncs the directory, then prunes to the last k.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_path(directory, images: int) -> Path:
    return Path(directory) / f"ckpt-{int(images):012d}.pt"


def list_checkpoints(directory) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_atomic(state: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict, directory, images: int, keep: int = 3) -> Path:
    path = save_atomic(state, checkpoint_path(directory, images))
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(where, map_location="cpu") -> tuple[dict, Path]:
    """Load a checkpoint file, or the newest readable one in a directory.

    A checkpoint that fails to load is reported by name and the previous one is tried.
    """
    where = Path(where)
    candidates = [where] if where.is_file() else list_checkpoints(where)[::-1]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint (ckpt-*.pt) found at {where}")
    errors = []
    for path in candidates:
        try:
            return load_checkpoint(path, map_location), path
        except Exception as exc:  # truncated/corrupt file: fall back to an older one
            msg = f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc})"
            errors.append(msg)
            warnings.warn(msg + ("; falling back to the previous checkpoint" if path != candidates[-1] else ""),
                          stacklevel=2)
    raise RuntimeError("no readable checkpoint: " + "; ".join(errors))


def rng_state() -> dict:
    """Every RNG the run draws from, as tensors/ints/lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
