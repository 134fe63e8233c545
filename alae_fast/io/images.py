"""Image files of [N, C, H, W] tensors in [-1, 1]: PNG grids and animated GIFs (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(images: torch.Tensor, path, nrow: int, min_side: int = 64, pad: int = 2) -> Path:
    """Tile images row-major, nrow per row; small images are enlarged (nearest) to min_side."""
    if images.dim() != 4:
        raise ValueError(f"save_grid({path}): images must be [N, C, H, W], got {tuple(images.shape)}")
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    ncol = max(1, min(nrow, n))
    nrows = -(-n // ncol)
    canvas = np.zeros((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        canvas[y:y + h, x:x + w] = arr[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas[..., :3])
    factor = max(1, -(-min_side // h))
    if factor > 1:
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_gif(frames: torch.Tensor, path, fps: float = 15, loop: int = 0, min_side: int = 64) -> Path:
    """An animated GIF of [T, C, H, W] frames in [-1, 1]; small frames are enlarged (nearest)."""
    if frames.dim() != 4 or len(frames) == 0:
        raise ValueError(f"save_gif({path}): frames must be [T, C, H, W] with T >= 1, got {list(frames.shape)}")
    arr = to_uint8(frames)
    factor = max(1, -(-min_side // arr.shape[1]))
    images = []
    for a in arr:
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a[..., :3])
        if factor > 1:
            img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
        images.append(img)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=loop)
    return path
