"""Latent classification: 1-NN and linear-SVM accuracy of E(x) on a held-out split (the ALAE paper's MNIST test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alae_fast.data import load_builtin
from alae_fast.train.evaluate import evaluate_encoder


def labelled_data(source: str):
    """(uint8 images [N, C, H, W], labels [N]) from 'builtin:<name>' or an .npz with 'images', 'labels'."""
    if source.startswith("builtin:"):
        return load_builtin(source[8:])
    path = Path(source)
    if path.suffix != ".npz" or not path.is_file():
        raise ValueError(f"labelled data {source!r}: expected builtin:<name> or an existing .npz file")
    with np.load(path) as data:
        if "images" not in data or "labels" not in data:
            raise ValueError(f"{path}: needs arrays 'images' (uint8 [N,(C,)H,W]) and 'labels' [N]")
        images, labels = torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.to(torch.uint8), labels.long()


def latent_accuracy(model, images: torch.Tensor, labels, lod: int | None = None, num: int | None = None,
                    seed: int = 0, device="cpu") -> dict:
    lod = model.max_lod if lod is None else lod
    if num is not None:
        images, labels = images[:num], labels[:num]
    out = evaluate_encoder(model, images, labels, lod, device=device, seed=seed)
    return {"metric": "latent_classification", **out, "lod": lod}
