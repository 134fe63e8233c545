"""FID (Heusel et al., 2017) from streaming Inception statistics: the CLI's model-vs-dataset FID and
SnapshotFID / snapshot_fid for a training loop.

Generated images are clamped to [-1, 1] and rounded to the 256 levels of 8-bit images before the
Inception, as FID is computed from saved images (the real side is 8-bit data)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from alae_fast.metrics.inception import FEATURE_DIM, load_inception
from alae_fast.metrics.recon import image_batches


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
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1Σ2)^½, in float64.

    tr (Σ1Σ2)^½ is the sum of the square roots of the eigenvalues of Σ1^½ Σ2 Σ1^½ (similar to Σ1Σ2,
    and symmetric positive semi-definite): two symmetric eigendecompositions instead of a general
    matrix square root, with no diagonal offset needed when there are fewer samples than dimensions.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"frechet_distance: means must be [D] and covariances [D, D], got {list(mu1.shape)}, "
                         f"{list(cov1.shape)}, {list(mu2.shape)}, {list(cov2.shape)}")
    evals, evecs = np.linalg.eigh(cov1)
    root1 = (evecs * np.sqrt(evals.clip(min=0))) @ evecs.T
    inner = root1 @ cov2 @ root1
    tr_covmean = np.sqrt(np.linalg.eigvalsh((inner + inner.T) / 2).clip(min=0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_covmean)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Float images clamped to [-1, 1] and rounded to the levels of 8-bit images."""
    return images.float().clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)


@torch.no_grad()
def stats_of(batches, extractor, dim: int = FEATURE_DIM, device="cpu") -> FeatureStats:
    """FeatureStats of extractor(x) over an iterable of image batches in [-1, 1]."""
    stats = FeatureStats(dim)
    for x in batches:
        stats.update(extractor(x.to(device)).float())
    return stats


def generated_batches(model, num: int, batch: int, lod: int, psi: float | None = None, seed: int = 0,
                      device="cpu"):
    """`num` quantized images G(F(z)) in batches, z from a seeded generator, truncated with psi if given."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, num, batch):
        z = torch.randn(min(batch, num - start), model.latent_size, generator=gen).to(device)
        ws = model.styles(z, lod, mixing_prob=0.0)
        if psi is not None and psi != 1.0:
            ws = model.truncate(ws, psi)
        yield quantize(model.generate(ws, lod, noise="random"))


@torch.no_grad()
def fid_model_vs_data(model, extractor, real_batches, num: int = 50_000, batch: int = 32,
                      lod: int | None = None, psi: float | None = None, seed: int = 0, device="cpu",
                      dim: int = FEATURE_DIM) -> dict:
    """FID between `num` generated images and the images of `real_batches` (an iterable, [-1, 1])."""
    lod = model.max_lod if lod is None else lod
    real = stats_of(real_batches, extractor, dim, device)
    fake = stats_of(generated_batches(model, num, batch, lod, psi, seed, device), extractor, dim, device)
    return {"metric": "fid", "value": fid_from_stats(real, fake), "num_real": real.count,
            "num_fake": fake.count, "lod": lod, "psi": psi}


class SnapshotFID:
    """FID of a generator against fixed real images, to be called at training snapshots.

    inception: a weights file (see load_inception) or a loaded feature network ([N, C, H, W] -> [N, dim]).
    real: uint8 or [-1, 1] float images [N, C, H, W], or an ImageStream (alae_fast.data.make_stream) that
    the training loop does not also draw from; its first `num_images` are used, resized to the
    generated resolution. Their statistics are computed once per resolution and kept.
    """

    def __init__(self, inception, real, num_images: int = 10_000, batch: int = 64, device="cpu",
                 dim: int | None = None):
        if num_images < 2 or batch < 1:
            raise ValueError(f"SnapshotFID: arguments 'num_images' >= 2 and 'batch' >= 1 required, "
                             f"got {num_images} and {batch}")
        if isinstance(real, torch.Tensor) and len(real) < num_images:
            raise ValueError(f"SnapshotFID: argument 'real' holds {len(real)} images, fewer than "
                             f"num_images={num_images}")
        net = inception if isinstance(inception, nn.Module) else load_inception(inception)
        self.extractor = net.to(device).eval().requires_grad_(False)
        self.real, self.num_images, self.batch, self.device, self.dim = real, num_images, batch, device, dim
        self.real_stats: dict[int, FeatureStats] = {}

    @torch.no_grad()
    def __call__(self, generate_fn: Callable[[int], torch.Tensor]) -> float:
        """FID of `num_images` images from generate_fn(n) -> [n, C, H, W] in [-1, 1] (any dtype)."""
        fake = None
        for start in range(0, self.num_images, self.batch):
            n = min(self.batch, self.num_images - start)
            images = generate_fn(n)
            if images.dim() != 4 or images.shape[0] != n or images.shape[1] not in (1, 3):
                raise ValueError(f"SnapshotFID: generate_fn({n}) must return [{n}, 1 or 3, H, W] images, "
                                 f"got {list(images.shape)}")
            feats = self.extractor(quantize(images).to(self.device)).float()
            self.dim = self.dim or feats.shape[1]  # the feature network's width unless given
            fake = fake or FeatureStats(self.dim)
            fake.update(feats)
        res = images.shape[-1]
        if res not in self.real_stats:
            batches = image_batches(self.real, self.num_images, self.batch, res)
            self.real_stats[res] = stats_of(batches, self.extractor, self.dim, self.device)
        return fid_from_stats(self.real_stats[res], fake)


def snapshot_fid(generate_fn: Callable[[int], torch.Tensor], real, inception, num_images: int = 10_000,
                 batch: int = 64, device="cpu") -> float:
    """One FID of generate_fn against `real` (see SnapshotFID, which keeps the Inception and the real
    statistics between calls)."""
    return SnapshotFID(inception, real, num_images, batch, device)(generate_fn)
