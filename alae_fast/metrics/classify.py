"""Latent classification, the ALAE paper's MNIST test: 1-NN (Euclidean) and linear-SVM (C = 0.02)
accuracy of E(x) features, either fitted on one labelled set and scored on another (E(train) ->
E(test)) or on a stratified split of one set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alae_fast.data import load_builtin
from alae_fast.data.resize import resize

SVM_C = 0.02  # the paper's linear-SVM regularisation


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


@torch.no_grad()
def encode_features(model, images: torch.Tensor, lod: int, blend: float = 1.0,
                    batch: int = 256, device="cpu") -> np.ndarray:
    """E(x) [N, ℓ] float32 for uint8 images [N, C, H, W], resized to the model's resolution at `lod`;
    the model runs in eval mode and is left in the mode it had."""
    was_training = model.training
    model.eval()
    res = model.resolution(lod)
    feats = []
    try:
        for start in range(0, len(images), batch):
            x = images[start:start + batch].to(device).float().div(127.5).sub(1.0)
            if x.shape[-1] != res:
                x = resize(x, res)
            feats.append(model.encode(x, lod, blend).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy()


def fit_and_score(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, seed: int = 0) -> dict:
    """Accuracy on (test_x, test_y) of a 1-NN and a linear SVM (C = 0.02) fitted on (train_x, train_y);
    features are [N, D] (D = ℓ for codes, pixels for raw images)."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import LinearSVC

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    knn = KNeighborsClassifier(n_neighbors=1).fit(train_x, train_y)
    svm = LinearSVC(C=SVM_C, max_iter=5000, random_state=seed).fit(train_x, train_y)
    return {"knn_1nn": float(knn.score(test_x, test_y)), "linear_svm": float(svm.score(test_x, test_y)),
            "n_train": len(train_y), "n_test": len(test_y)}


def latent_classification(features: np.ndarray, labels, test_fraction: float = 0.25, seed: int = 0) -> dict:
    """fit_and_score on a stratified split of one labelled set of features [N, D]."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    x_tr, x_te, y_tr, y_te = train_test_split(features, labels, test_size=test_fraction,
                                              random_state=seed, stratify=labels)
    return fit_and_score(x_tr, y_tr, x_te, y_te, seed=seed)


def evaluate_encoder(model, images: torch.Tensor, labels, lod: int, blend: float = 1.0,
                     device="cpu", seed: int = 0) -> dict:
    """latent_classification of E(images) on a held-out quarter."""
    return latent_classification(encode_features(model, images, lod, blend, device=device), labels, seed=seed)


def latent_accuracy(model, images: torch.Tensor, labels, lod: int | None = None, num: int | None = None,
                    seed: int = 0, device="cpu", test=None) -> dict:
    """1-NN and linear-SVM accuracy of E(x) at `lod` (default: the top level). With test = (images, labels)
    the classifiers are fitted on E(images) and scored on E(test images); else on a split of `images`.
    `num` keeps the first num images of each set."""
    lod = model.max_lod if lod is None else lod
    if num is not None:
        images, labels = images[:num], labels[:num]
    if test is None:
        out = evaluate_encoder(model, images, labels, lod, device=device, seed=seed)
    else:
        test_images, test_labels = test if num is None else (test[0][:num], test[1][:num])
        out = fit_and_score(encode_features(model, images, lod, device=device), labels,
                            encode_features(model, test_images, lod, device=device), test_labels, seed=seed)
    return {"metric": "latent_classification", **out, "lod": lod}
