"""Tiny configs and data shared by the training tests."""

from __future__ import annotations

import pytest
import torch
import yaml

from alae_fast.models import ModelConfig
from alae_fast.train import RunConfig, TrainConfig


def tiny_images(n: int = 32, side: int = 16) -> torch.Tensor:
    """Deterministic uint8 [n, 1, side, side] blobs (no dataset download, no PIL)."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    centers = torch.randint(3, side - 3, (n, 2), generator=gen)
    d2 = (yy - centers[:, 0, None, None]) ** 2 + (xx - centers[:, 1, None, None]) ** 2
    return (255 * torch.exp(-d2 / 8.0)).round().to(torch.uint8)[:, None]


def tiny_config(kind: str = "style", **train) -> RunConfig:
    if kind == "style":
        model = ModelConfig(kind="style", layer_count=2, startf=4, maxf=8, latent_size=8, mapping_layers=2)
    else:
        model = ModelConfig(kind="mlp", latent_size=8, mapping_layers=2, image_size=8, hidden=32)
    values = dict(dataset="unused", kimg_per_lod=0.016, total_kimg=0.064, batch_per_lod=[4],
                  lr_per_lod=[0.002], log_kimg=0.008, grid_kimg=0.032, snapshot_kimg=0.032, grid_size=2)
    values.update(train)
    return RunConfig(model=model, train=TrainConfig(**values), name=f"tiny-{kind}")


def mlp_config_file(path, **train):
    """A YAML run config of a tiny MLP ALAE on builtin:digits at `path`; train keys override."""
    values = {"dataset": "builtin:digits", "kimg_per_lod": 1, "total_kimg": 0.032, "batch_per_lod": [8],
              "log_kimg": 0.008, "grid_kimg": 1, "snapshot_kimg": 1, **train}
    path.write_text(yaml.safe_dump({
        "model": {"kind": "mlp", "latent_size": 8, "mapping_layers": 2, "image_size": 8, "hidden": 16},
        "train": values}))
    return path


@pytest.fixture
def one_thread():
    """Small convolutions run fastest (and most reproducibly) single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def deterministic_mode():
    flag = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(flag)
