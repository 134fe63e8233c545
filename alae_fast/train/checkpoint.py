"""Training checkpoints: one timeline of <dir>/ckpt-<images:012d>.pt files (alae_fast.io.checkpoint's
format), pruned to the last k, with the leftovers of killed saves removed and, on resume, newer files of
another timeline set aside; plus the RNG state every exact resume restores.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from alae_fast.io.checkpoint import checkpoint_images, checkpoint_path, list_checkpoints, save_file

_TEMP = re.compile(r"^\.ckpt-\d+\.pt\..*\.tmp$")
SUPERSEDED = "superseded"


def remove_temp_files(directory) -> list[Path]:
    """Delete the temp files that killed saves left in `directory`; returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    leftovers = [p for p in directory.iterdir() if _TEMP.match(p.name) and p.is_file()]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def set_aside_newer(directory, images: int) -> list[Path]:
    """Move checkpoints newer than `images` (another timeline, e.g. unreadable ones skipped on resume) to
    <directory>/superseded/, so pruning never deletes the resumed timeline; nothing is deleted."""
    newer = [p for p in list_checkpoints(directory) if checkpoint_images(p) > images]
    if newer:
        aside = Path(directory) / SUPERSEDED
        aside.mkdir(exist_ok=True)
        for p in newer:
            os.replace(p, aside / p.name)
    return newer


def save_checkpoint(state: dict, directory, images: int, keep: int = 3) -> Path:
    """Write ckpt-<images>.pt atomically with its checksum, then keep the newest `keep` (0: all)."""
    target = checkpoint_path(directory, images)
    if target.exists() and not target.is_file():
        raise IsADirectoryError(f"cannot write checkpoint {target}: a directory of that name is in the way")
    path = save_file(state, target)
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return path


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
