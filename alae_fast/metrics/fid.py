"""FID from streaming feature statistics (float64 running sums of x and x xᵀ)."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


class FeatureStats:
    """Running count, Σx and Σxxᵀ in float64; mean and (unbiased) covariance on demand."""

    def __init__(self, dim: int):
        self.dim, self.count = dim, 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, feats: torch.Tensor) -> None:
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"FeatureStats.update: argument 'feats' must be [N, {self.dim}], got {list(feats.shape)}")
        x = feats.detach().to("cpu", torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError(f"FeatureStats: need at least 2 samples, have {self.count}")
        mean = self.sum / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean.numpy(), cov.numpy()


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2(Σ1Σ2)^½); a tiny diagonal offset is added if the product is singular."""
    covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = np.eye(cov1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


@torch.no_grad()
def stats_of(batches, extractor, dim: int, device="cpu") -> FeatureStats:
    """FeatureStats of extractor(x) over an iterable of image batches in [-1, 1]."""
    stats = FeatureStats(dim)
    for x in batches:
        stats.update(extractor(x.to(device)).float())
    return stats


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


def generated_batches(model, num: int, batch: int, lod: int, psi: float | None = None, seed: int = 0,
                      device="cpu"):
    """`num` images G(F(z)) in batches, z from a seeded generator, truncated with psi if given."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, num, batch):
        z = torch.randn(min(batch, num - start), model.latent_size, generator=gen).to(device)
        ws = model.styles(z, lod, mixing_prob=0.0)
        if psi is not None and psi != 1.0:
            ws = model.truncate(ws, psi)
        yield model.generate(ws, lod, noise="random").float()


@torch.no_grad()
def fid_model_vs_data(model, extractor, real_batches, num: int = 50_000, batch: int = 32,
                      lod: int | None = None, psi: float | None = None, seed: int = 0, device="cpu",
                      dim: int = 2048) -> dict:
    """FID between `num` generated images and the images of `real_batches` (an iterable, [-1, 1])."""
    lod = model.max_lod if lod is None else lod
    real = stats_of(real_batches, extractor, dim, device)
    fake = stats_of(generated_batches(model, num, batch, lod, psi, seed, device), extractor, dim, device)
    return {"metric": "fid", "value": fid_from_stats(real, fake), "num_real": real.count,
            "num_fake": fake.count, "lod": lod, "psi": psi}
