"""Latent-space classification (SPEC §3): 1-NN and linear-SVM accuracy of E(x) features."""

from __future__ import annotations

import numpy as np
import torch

from alae_fast.data.resize import resize


@torch.no_grad()
def encode_features(model, images: torch.Tensor, lod: int, blend: float = 1.0,
                    batch: int = 256, device="cpu") -> np.ndarray:
    """E(x) for uint8 [N, C, H, W] images, resized to the model's resolution at `lod`."""
    res = model.resolution(lod)
    feats = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch].to(device).float().div(127.5).sub(1.0)
        if x.shape[-1] != res:
            x = resize(x, res)
        feats.append(model.encode(x, lod, blend).float().cpu())
    return torch.cat(feats).numpy()


def latent_classification(features: np.ndarray, labels, test_fraction: float = 0.25,
                          seed: int = 0) -> dict:
    """Accuracy of 1-NN and a linear SVM trained on a split of (features, labels)."""
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    labels = np.asarray(labels)
    x_tr, x_te, y_tr, y_te = train_test_split(features, labels, test_size=test_fraction,
                                              random_state=seed, stratify=labels)
    knn = KNeighborsClassifier(n_neighbors=1).fit(x_tr, y_tr)
    svm = make_pipeline(StandardScaler(), LinearSVC(max_iter=5000, random_state=seed)).fit(x_tr, y_tr)
    return {"knn_1nn": float(knn.score(x_te, y_te)), "linear_svm": float(svm.score(x_te, y_te)),
            "n_train": len(y_tr), "n_test": len(y_te)}


def evaluate_encoder(model, images: torch.Tensor, labels, lod: int, blend: float = 1.0,
                     device="cpu", seed: int = 0) -> dict:
    model_was_training = model.training
    model.eval()
    try:
        feats = encode_features(model, images, lod, blend, device=device)
    finally:
        model.train(model_was_training)
    return latent_classification(feats, labels, seed=seed)
