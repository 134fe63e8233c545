"""Perceptual path length in W (StyleGAN): E[d(G(lerp(w1, w2, t)), G(lerp(w1, w2, t + ε))) / ε²]."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

EPSILON = 1e-4


def _prepare(img: torch.Tensor, crop: bool) -> torch.Tensor:
    """StyleGAN's optional face crop, then box-downsampling to at most 256²."""
    if crop:
        c = img.shape[2] // 8
        img = img[:, :, c * 3:c * 7, c * 2:c * 6]
    factor = img.shape[2] // 256
    if factor > 1:
        img = F.avg_pool2d(img, factor)
    return img


@torch.no_grad()
def ppl_w(model, distance, num_samples: int = 100_000, batch: int = 32, lod: int | None = None,
          epsilon: float = EPSILON, crop: bool = False, seed: int = 0, device="cpu") -> dict:
    """PPL in W with the full-path sampling of StyleGAN; `distance(x, y) -> [N]` is any perceptual
    distance (e.g. metrics.perceptual.LPIPSVGG). Outside the 1st..99th percentile is discarded."""
    lod = model.max_lod if lod is None else lod
    gen = torch.Generator().manual_seed(seed)
    dists = []
    for start in range(0, num_samples, batch):
        n = min(batch, num_samples - start)
        z = torch.randn(2 * n, model.latent_size, generator=gen).to(device)
        t = torch.rand(n, 1, generator=gen).to(device)
        w = model.map(z)
        w0, w1 = w[:n], w[n:]
        wt = torch.cat([torch.lerp(w0, w1, t), torch.lerp(w0, w1, t + epsilon)])
        img = _prepare(model.generate(wt, lod, noise="fixed").float(), crop)
        dists.append((distance(img[:n], img[n:]).float() / epsilon ** 2).cpu())
    d = torch.cat(dists).numpy().astype(np.float64)
    lo, hi = np.percentile(d, 1, method="lower"), np.percentile(d, 99, method="higher")
    kept = d[(d >= lo) & (d <= hi)]
    return {"metric": "ppl_w", "value": float(kept.mean()), "num_samples": int(len(d)), "epsilon": epsilon,
            "crop": crop, "lod": lod}
