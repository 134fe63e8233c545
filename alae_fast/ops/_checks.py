"""Argument validation shared by the public ops: errors name the argument and the shape."""

from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fmt(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def activation(op: str, name: str, t, *, spec: str = "[N, C, H, W]") -> tuple[int, int, int, int]:
    """A 4-D floating tensor; returns its shape."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: argument '{name}' must be float16/bfloat16/float32/float64, got {t.dtype}")
    if t.dim() != 4:
        raise ValueError(f"{op}: argument '{name}' must have shape {spec}, got rank {t.dim()} shape {_fmt(t.shape)}")
    return tuple(t.shape)


def tensor(op: str, name: str, t, shape, *, spec: str, like: torch.Tensor) -> None:
    """A floating tensor of exactly `shape` on the device of `like`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: argument '{name}' must be a floating tensor, got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{op}: argument '{name}' is on {t.device} but x is on {like.device}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: argument '{name}' must have shape {spec} = {_fmt(shape)}, got {_fmt(t.shape)}")


def same_dtype(op: str, name: str, t: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    if t.dtype != like.dtype:
        raise TypeError(f"{op}: argument '{name}' has dtype {t.dtype} but '{like_name}' has {like.dtype}; they must match")


def even_spatial(op: str, name: str, h: int, w: int) -> None:
    if h % 2 or w % 2:
        raise ValueError(f"{op}: argument '{name}' needs even H and W for 2x2 resampling, got {h}x{w}")


def _finite(op: str, name: str, value) -> float:
    """A real, finite Python or NumPy scalar as float (bools, strings and tensors are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: argument '{name}' must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: argument '{name}' must be finite, got {value}")
    return value


def alpha(op: str, value) -> float:
    value = _finite(op, "alpha", value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{op}: argument 'alpha' must be in [0, 1], got {value}")
    return value


def slope(op: str, value) -> float:
    """A leaky ReLU slope: finite and >= 0."""
    value = _finite(op, "slope", value)
    if value < 0.0:
        raise ValueError(f"{op}: argument 'slope' must be >= 0 (a leaky ReLU slope), got {value}")
    return value


def flag(op: str, name: str, value) -> bool:
    """A real bool: a string such as 'no' would otherwise read as True."""
    if not isinstance(value, bool):
        raise TypeError(f"{op}: argument '{name}' must be True or False, got {type(value).__name__} {value!r}")
    return value


def nonempty_rows(op: str, name: str, h: int, w: int) -> None:
    if h * w == 0:
        raise ValueError(f"{op}: argument '{name}' has no pixels (H = {h}, W = {w}); the per-row mean and std "
                         "are undefined, so H·W must be at least 1")
