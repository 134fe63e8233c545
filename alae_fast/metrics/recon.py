"""Reconstruction error of x -> G(E(x)) over a dataset: MSE and PSNR (images in [-1, 1], peak-to-peak 2)."""

from __future__ import annotations

import math

import torch

from alae_fast.data.resize import resize


def image_batches(source, num: int, batch: int, res: int | None = None):
    """Up to `num` float [-1, 1] batches from a uint8 [N, C, H, W] tensor, a float tensor or an
    ImageStream (alae_fast.data.make_stream), resized to res when given."""
    if num < 1:
        raise ValueError(f"image_batches: argument 'num' must be >= 1, got {num}")
    is_tensor = isinstance(source, torch.Tensor)
    total = min(num, len(source)) if is_tensor else num
    for start in range(0, total, batch):
        n = min(batch, total - start)
        x = source[start:start + n] if is_tensor else source.next_batch(n)
        x = x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.float()
        yield resize(x, res) if res is not None and x.shape[-1] != res else x


@torch.no_grad()
def reconstruction_error(model, source, num: int = 10_000, batch: int = 64, lod: int | None = None,
                         noise: str = "fixed", device="cpu") -> dict:
    """Mean squared error over all pixels and the mean per-image PSNR (dB, MAX = 2)."""
    lod = model.max_lod if lod is None else lod
    sq_sum, pixels, psnr_sum, count = 0.0, 0, 0.0, 0
    for x in image_batches(source, num, batch, model.resolution(lod)):
        x = x.to(device)
        err = (model.generate(model.encode(x, lod), lod, noise=noise).float() - x).square().flatten(1)
        sq_sum += float(err.sum(dtype=torch.float64))
        pixels += err.numel()
        mse = err.mean(1).clamp_min(1e-12)
        psnr_sum += float((10 * torch.log10(4.0 / mse)).sum())
        count += len(x)
    mse = sq_sum / pixels
    return {"metric": "reconstruction", "mse": mse, "psnr": psnr_sum / count,
            "psnr_of_mean_mse": 10 * math.log10(4.0 / max(mse, 1e-12)), "num_images": count, "lod": lod}
