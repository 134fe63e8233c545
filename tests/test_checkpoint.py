import random

import numpy as np
import pytest
import torch

from alae_fast.train import checkpoint as ckpt


def test_atomic_save_keeps_last_k_and_loads_weights_only(tmp_path):
    for images in (100, 200, 300, 400):
        ckpt.save_checkpoint({"images": images, "w": torch.full((2,), float(images))}, tmp_path, images, keep=2)
    files = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in files] == ["ckpt-000000000300.pt", "ckpt-000000000400.pt"]
    assert not list(tmp_path.glob("*.tmp"))  # no temp files left behind
    state, path = ckpt.load_latest(tmp_path)
    assert path == files[-1] and state["images"] == 400


def test_corrupt_latest_falls_back_with_a_message(tmp_path):
    for images in (10, 20):
        ckpt.save_checkpoint({"images": images}, tmp_path, images)
    latest = ckpt.list_checkpoints(tmp_path)[-1]
    latest.write_bytes(latest.read_bytes()[:20])  # truncated, as by a crash mid-copy
    with pytest.warns(UserWarning, match=str(latest.name)):
        state, path = ckpt.load_latest(tmp_path)
    assert state["images"] == 10 and path.name == "ckpt-000000000010.pt"


def test_all_corrupt_or_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load_latest(tmp_path)
    (tmp_path / "ckpt-000000000001.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="ckpt-000000000001.pt"):
        ckpt.load_latest(tmp_path)


def test_rng_state_round_trips_through_weights_only(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    ckpt.save_atomic({"rng": ckpt.rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]
