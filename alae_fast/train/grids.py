"""PNG image grids of [N, C, H, W] tensors in [-1, 1]."""

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


@torch.no_grad()
def mixing_grid(model, src_z: torch.Tensor, dst_z: torch.Tensor, lod: int, blend: float,
                cutoff: int | None = None, noise: str = "fixed") -> torch.Tensor:
    """StyleGAN-style mixing grid: first row = source images, first column = destination
    images, cell (i, j) = destination i's coarse styles with source j's styles from layer
    `cutoff` on (default: half the active layers). Returns (len(dst)+1) * (len(src)+1)
    images row-major (nrow = len(src) + 1) with a blank top-left cell."""
    ws_src = model.styles(src_z, lod, mixing_prob=0.0)
    ws_dst = model.styles(dst_z, lod, mixing_prob=0.0)
    if cutoff is None:
        cutoff = max(1, min(ws_src.shape[1], 2 * (lod + 1)) // 2)
    src = model.generate(ws_src, lod, blend, noise=noise)
    dst = model.generate(ws_dst, lod, blend, noise=noise)
    cells = [torch.full_like(src[:1], -1.0), src]
    for i in range(len(dst_z)):
        mixed = ws_dst[i:i + 1].expand_as(ws_src).clone()
        mixed[:, cutoff:] = ws_src[:, cutoff:]
        cells += [dst[i:i + 1], model.generate(mixed, lod, blend, noise=noise)]
    return torch.cat(cells)
