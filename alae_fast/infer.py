"""Inference helpers: sampling, reconstruction, style mixing, W interpolation, latent edits.

All take a built model (StyleALAE or MLPALAE, see load_trained) and return images in [-1, 1];
they run headless and under torch.no_grad. lod/blend default to the model's highest level; a
checkpoint saved mid-training knows its own (Trained.lod, Trained.blend).
save_grid/save_gif write PNG/GIF files with Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alae_fast.data.resize import resize
from alae_fast.data.sources import center_crop_resize
from alae_fast.io.checkpoint import load_latest
from alae_fast.io.images import save_gif, save_grid
from alae_fast.models import ModelConfig, build_model

__all__ = ["Trained", "edit", "generate", "interpolate", "load_images", "load_model", "load_trained",
           "reconstruct", "save_gif", "save_grid", "seeds_to_ws", "seeds_to_z", "style_mix", "style_mix_ws"]


@dataclass
class Trained:
    """A loaded checkpoint: the model (eval mode) at the level (lod, blend) it was trained to."""

    model: torch.nn.Module
    lod: int
    blend: float
    config: dict  # the checkpoint's 'config' ({'name', 'model'} and, for training runs, 'train')
    path: Path


def load_trained(where, which: str = "ema", device="cpu") -> Trained:
    """Load a converted or training checkpoint ({'config': {'model': ...}, 'model', 'ema'}): a file,
    a checkpoint directory (the newest readable ckpt-*.pt) or a run directory (its checkpoints/).
    Converted checkpoints have no 'lod'/'blend' and load at the highest level."""
    if which not in ("ema", "model"):
        raise ValueError(f"load_trained: argument 'which' must be 'ema' or 'model', got {which!r}")
    where = Path(where)
    if where.is_dir() and (where / "checkpoints").is_dir():
        where = where / "checkpoints"
    try:
        state, path = load_latest(where, map_location="cpu")
    except RuntimeError as exc:  # every candidate unreadable
        raise ValueError(f"{where}: {exc}") from None
    cfg = (state.get("config") or {}).get("model") if isinstance(state, dict) else None
    if not isinstance(cfg, dict) or which not in state:
        raise ValueError(f"{path} is not an alae_fast checkpoint with config['model'] and {which!r}")
    model = build_model(ModelConfig.from_dict(cfg, f"{path}: config['model']"))
    model.load_state_dict(state[which])
    model = model.to(device).eval().requires_grad_(False)
    return Trained(model, int(state.get("lod", model.max_lod)), float(state.get("blend", 1.0)),
                   state["config"], path)


def load_model(path, which: str = "ema", device="cpu"):
    """Just the model of load_trained(path, which, device)."""
    return load_trained(path, which, device).model


LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's convert('L')


def load_images(folder, resolution: int, channels: int) -> torch.Tensor:
    """Every image file in `folder` (sorted by name; nested ok) as uint8 [N, channels, R, R]:
    converted to gray/RGB, center-cropped to a square and resized (antialiased bilinear)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    images = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            img = Image.open(path)
        except OSError:  # not an image (README, .DS_Store, ...)
            continue
        with img:
            images.append(center_crop_resize(img, resolution, channels))
    if not images:
        raise ValueError(f"image folder {folder} holds no readable images")
    return torch.from_numpy(np.stack(images))


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _lod(model, lod):
    return model.max_lod if lod is None else lod


def seeds_to_z(seeds, latent_size: int, device="cpu") -> torch.Tensor:
    """One z ~ N(0, I) per integer seed, [len(seeds), latent_size], independent of the device."""
    z = [torch.randn(latent_size, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(z).to(device)


def seeds_to_ws(model, seeds, psi: float | None = None, lod: int | None = None) -> torch.Tensor:
    """Per-layer styles F(z_seed) truncated with psi (None or 1: off), [len(seeds), num_ws, ℓ]."""
    lod = _lod(model, lod)
    z = seeds_to_z(seeds, model.latent_size, _device(model))
    ws = model.styles(z, lod, mixing_prob=0.0)
    return ws if psi is None or psi == 1.0 else model.truncate(ws, psi)


def _clamped(images: torch.Tensor) -> torch.Tensor:
    """G's raw output overshoots [-1, 1] a little (about ±1.9); every image this module returns is clamped."""
    return images.clamp_(-1.0, 1.0)


@torch.no_grad()
def generate(model, seeds, psi: float | None = None, lod: int | None = None, blend: float = 1.0,
             noise: str = "fixed", batch: int = 16) -> torch.Tensor:
    """G(F(z_seed)) for each seed, truncated with psi (None or 1: off). [N, C, R, R]."""
    lod = _lod(model, lod)
    ws = seeds_to_ws(model, seeds, psi, lod)
    return _clamped(torch.cat([model.generate(ws[i:i + batch], lod, blend, noise=noise)
                               for i in range(0, len(ws), batch)]))


def _as_images(model, images: torch.Tensor, lod: int) -> torch.Tensor:
    x = images.to(_device(model))
    x = x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.shape[1] != model.channels:  # gray <-> RGB; RGB -> gray with Pillow's 'L' weights
        if x.shape[1] not in (1, 3) or model.channels not in (1, 3):
            raise ValueError(f"images have {x.shape[1]} channels; the model takes {model.channels}")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else (x * LUMA.to(x)[:, None, None]).sum(1, keepdim=True)
    res = model.resolution(lod)
    return resize(x, res) if x.shape[-1] != res else x


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, lod: int | None = None, blend: float = 1.0,
                noise: str = "fixed", batch: int = 16) -> torch.Tensor:
    """(x, G(E(x))) pairs, [N, 2, C, R, R]. images: uint8 or [-1, 1] float, square, resized to the model's R
    and converted to its channels (gray <-> RGB)."""
    lod = _lod(model, lod)
    x = _as_images(model, images, lod)
    rec = torch.cat([model.generate(model.encode(x[i:i + batch], lod, blend), lod, blend, noise=noise)
                     for i in range(0, len(x), batch)])
    return _clamped(torch.stack([x, rec], 1))


def default_mix_layers(model, lod: int) -> tuple[int, int]:
    """The coarse half of the style layers active at `lod`: what a mixing grid swaps by default."""
    return 0, max(1, min(model.num_ws, 2 * (lod + 1)) // 2)


@torch.no_grad()
def style_mix_ws(model, row_ws: torch.Tensor, col_ws: torch.Tensor, layer_range: tuple[int, int], lod: int,
                 blend: float = 1.0, noise: str = "fixed") -> torch.Tensor:
    """The mixing grid of style_mix for given styles row_ws [R, num_ws, ℓ] and col_ws [K, num_ws, ℓ]."""
    start, stop = layer_range
    if not 0 <= start < stop <= model.num_ws:
        raise ValueError(f"style_mix: argument 'layer_range' must satisfy 0 <= start < stop <= {model.num_ws}, "
                         f"got {layer_range}")
    col_img = model.generate(col_ws, lod, blend, noise=noise)
    cells = [torch.full_like(col_img[:1], -1.0), col_img]
    for r in range(len(row_ws)):
        mixed = row_ws[r:r + 1].repeat(len(col_ws), 1, 1)
        mixed[:, start:stop] = col_ws[:, start:stop]
        cells += [model.generate(row_ws[r:r + 1], lod, blend, noise=noise),
                  model.generate(mixed, lod, blend, noise=noise)]
    return _clamped(torch.cat(cells))


@torch.no_grad()
def style_mix(model, row_seeds, col_seeds, layer_range=None, psi: float | None = None,
              lod: int | None = None, blend: float = 1.0, noise: str = "fixed") -> torch.Tensor:
    """StyleGAN mixing grid, row-major with nrow = len(col_seeds) + 1: the top row holds the column
    images, the left column the row images (top-left blank); cell (r, c) is row r's ws with the
    layers in layer_range = (start, stop) taken from column c (default: the coarse half)."""
    lod = _lod(model, lod)
    rows, cols = seeds_to_ws(model, row_seeds, psi, lod), seeds_to_ws(model, col_seeds, psi, lod)
    return style_mix_ws(model, rows, cols, layer_range or default_mix_layers(model, lod), lod, blend, noise)


@torch.no_grad()
def interpolate(model, seed_a: int, seed_b: int, steps: int, psi: float | None = None,
                lod: int | None = None, blend: float = 1.0, noise: str = "fixed") -> torch.Tensor:
    """Frames along the straight line from w_a to w_b in W (both ends included), [steps, C, R, R]."""
    if steps < 2:
        raise ValueError(f"interpolate: argument 'steps' must be >= 2, got {steps}")
    lod = _lod(model, lod)
    ws = seeds_to_ws(model, [seed_a, seed_b], psi, lod)
    t = torch.linspace(0, 1, steps, device=ws.device)[:, None, None]
    return _clamped(model.generate(torch.lerp(ws[:1], ws[1:], t), lod, blend, noise=noise))


@torch.no_grad()
def edit(model, w: torch.Tensor, direction: torch.Tensor, strengths, layers=None,
         lod: int | None = None, blend: float = 1.0, noise: str = "fixed") -> torch.Tensor:
    """G(w + s·direction) for each strength s, [len(strengths), C, R, R]. w: [ℓ] or [num_ws, ℓ];
    direction: [ℓ]; layers = (start, stop) limits the edit to those style layers (default: all)."""
    lod = _lod(model, lod)
    w = w.to(_device(model)).float()
    if w.dim() == 1:
        w = w.expand(model.num_ws, -1)
    direction = direction.to(w).reshape(-1)
    if w.shape != (model.num_ws, model.latent_size) or direction.shape != (model.latent_size,):
        raise ValueError(f"edit: arguments 'w' [{model.latent_size}] or [{model.num_ws}, {model.latent_size}] and "
                         f"'direction' [{model.latent_size}] expected, got {list(w.shape)} and {list(direction.shape)}")
    start, stop = layers if layers is not None else (0, model.num_ws)
    mask = torch.zeros(model.num_ws, 1, device=w.device)
    mask[start:stop] = 1
    s = torch.as_tensor(list(strengths), dtype=w.dtype, device=w.device)[:, None, None]
    return _clamped(model.generate(w + s * mask * direction, lod, blend, noise=noise))
