"""alae_fast checkpoint files: written atomically, carrying a SHA-256 of their payload, read with
torch.load(weights_only=True) only.

A save writes a temp file in the same directory, fsyncs it, renames it over the target and fsyncs the
directory. The checksum covers every tensor's bytes, dtype and shape and every other value; a file that
fails it (a flipped bit, a torn copy) is reported by name. Training runs keep their checkpoints as
<dir>/ckpt-<images:012d>.pt (alae_fast.train.checkpoint prunes and resumes them); converted and exported
models use the same format.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path

import torch

_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
CHECKSUM_KEY = "sha256"


class ChecksumError(ValueError):
    """A checkpoint has no checksum, or its payload does not match it."""

    def __init__(self, path, reason: str):
        super().__init__(f"checkpoint {path}: {reason}")
        self.reason = reason


def checkpoint_path(directory, images: int) -> Path:
    return Path(directory) / f"ckpt-{int(images):012d}.pt"


def list_checkpoints(directory) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def checkpoint_images(path) -> int:
    """The image count in a checkpoint's file name."""
    return int(_NAME.match(Path(path).name).group(1))


def payload_digest(obj) -> str:
    """SHA-256 over a checkpoint payload: structure, tensor dtype/shape/bytes, and plain values."""
    h = hashlib.sha256()

    def visit(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            h.update(f"D{len(o)}".encode())
            for k in sorted(o, key=repr):
                h.update(repr(k).encode())
                visit(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(f"L{len(o)}".encode())
            for v in o:
                visit(v)
        else:
            h.update(f"V{type(o).__name__}:{o!r}".encode())

    visit(obj)
    return h.hexdigest()


def with_checksum(state: dict) -> dict:
    return {**state, CHECKSUM_KEY: payload_digest(state)}


def verify_checksum(state, path) -> dict:
    """The payload without its checksum; ChecksumError naming `path` when it does not match."""
    if not isinstance(state, dict) or CHECKSUM_KEY not in state:
        raise ChecksumError(path, "no checksum: not written by this version of alae_fast")
    payload = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    if payload_digest(payload) != state[CHECKSUM_KEY]:
        raise ChecksumError(path, "checksum mismatch: the file is corrupt")
    return payload


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


def save_file(state: dict, path) -> Path:
    """Any alae_fast checkpoint file (training, converted, exported): checksummed and written atomically."""
    return save_atomic(with_checksum(state), path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint's payload, checksum verified (ChecksumError names the file)."""
    return verify_checksum(torch.load(path, map_location=map_location, weights_only=True), path)


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
            msg = f"checkpoint {path} is unreadable ({describe_load_error(exc)})"
            errors.append(msg)
            warnings.warn(msg + ("; falling back to the previous checkpoint" if path != candidates[-1] else ""),
                          stacklevel=2)
    raise RuntimeError("no readable checkpoint: " + "; ".join(errors))


def describe_load_error(exc: BaseException) -> str:
    """One line on why torch.load failed, without torch's advice to load unsafely."""
    text = str(exc)
    if isinstance(exc, ChecksumError):
        return exc.reason
    if isinstance(exc, pickle.UnpicklingError) and ("GLOBAL" in text or "allowlist" in text):
        return "it holds Python objects other than tensors and plain data, which alae_fast never loads"
    if isinstance(exc, pickle.UnpicklingError) or "miniz" in text or "zip archive" in text:
        return "truncated, corrupt or not a torch checkpoint"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
