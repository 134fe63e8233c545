"""benchmarks/mnist_table.py at a tiny size: the table's layout, its raw-pixel row, and one run per model and seed."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import KNeighborsClassifier

from alae_fast.data import load_builtin
from benchmarks.mnist_table import build_table
from _train_utils import one_thread  # noqa: F401


@pytest.mark.usefixtures("one_thread")
def test_tiny_table(tmp_path):
    images, labels = load_builtin("digits")
    images = F.interpolate(images.float(), size=28, mode="area").round().to(torch.uint8)  # MNIST's 28x28
    data = {"train": (images[:128], labels[:128]), "test": (images[128:188], labels[128:188])}
    table = build_table(2, 1.0, tmp_path, data=data, overrides={"hidden": 16}, say=lambda line: None)

    saved = json.loads((tmp_path / "table.json").read_text())
    assert list(saved) == ["raw_pixels", "aae", "mlp_alae"] and saved == json.loads(json.dumps(table))
    keys = {"nn1", "nn1_std", "svm", "svm_std", "recon_mse", "seeds", "epochs", "device", "minutes"}
    assert all(set(row) == keys for row in saved.values())
    assert saved["aae"]["seeds"] == saved["mlp_alae"]["seeds"] == 2 and saved["mlp_alae"]["epochs"] == 1.0
    flat = images.flatten(1).float().div(255).numpy()
    knn = KNeighborsClassifier(1).fit(flat[:128], labels[:128].numpy()).score(flat[128:188], labels[128:188].numpy())
    assert saved["raw_pixels"]["nn1"] == pytest.approx(knn) and saved["raw_pixels"]["recon_mse"] is None
    for key in ("aae", "mlp_alae"):
        row = saved[key]
        assert 0 <= row["nn1"] <= 1 and 0 <= row["svm"] <= 1 and row["nn1_std"] >= 0 and np.isfinite(row["recon_mse"])
        assert (tmp_path / f"{key}-reconstructions.png").is_file() and (tmp_path / f"{key}-samples.png").is_file()
    text = (tmp_path / "table.md").read_text()
    assert "| MLP ALAE E(x)" in text and "| AAE E(x)" in text and "| raw pixels" in text
    assert "classifiers fitted on the features of 128 training images" in text and "400+ epochs" in text
