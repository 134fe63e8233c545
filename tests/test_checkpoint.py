import random

import numpy as np
import pytest
import torch

from alae_fast.io import checkpoint as ckpt_files
from alae_fast.train import checkpoint as ckpt


def test_atomic_save_keeps_last_k_and_loads_weights_only(tmp_path):
    for images in (100, 200, 300, 400):
        ckpt.save_checkpoint({"images": images, "w": torch.full((2,), float(images))}, tmp_path, images, keep=2)
    files = ckpt_files.list_checkpoints(tmp_path)
    assert [p.name for p in files] == ["ckpt-000000000300.pt", "ckpt-000000000400.pt"]
    assert not list(tmp_path.glob("*.tmp"))  # no temp files left behind
    state, path = ckpt_files.load_latest(tmp_path)
    assert path == files[-1] and state["images"] == 400


def test_corrupt_latest_falls_back_with_a_message(tmp_path):
    for images in (10, 20):
        ckpt.save_checkpoint({"images": images}, tmp_path, images)
    latest = ckpt_files.list_checkpoints(tmp_path)[-1]
    latest.write_bytes(latest.read_bytes()[:20])  # truncated, as by a crash mid-copy
    with pytest.warns(UserWarning, match=str(latest.name)):
        state, path = ckpt_files.load_latest(tmp_path)
    assert state["images"] == 10 and path.name == "ckpt-000000000010.pt"


def test_all_corrupt_or_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt_files.load_latest(tmp_path)
    (tmp_path / "ckpt-000000000001.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="ckpt-000000000001.pt"):
        ckpt_files.load_latest(tmp_path)


def test_rng_state_round_trips_through_weights_only(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    ckpt_files.save_atomic({"rng": ckpt.rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def _flip_bytes_inside_tensor(path, count=256):
    """Flip `count` bytes inside the stored bytes of the largest tensor (the zip stays readable)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(path.read_bytes())
    for k in range(count):
        data[offset + 8 + k] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bits_fail_the_checksum_and_fall_back(tmp_path):
    for images in (10, 20):
        ckpt.save_checkpoint({"images": images, "w": torch.randn(4096)}, tmp_path, images)
    latest = ckpt_files.list_checkpoints(tmp_path)[-1]
    _flip_bytes_inside_tensor(latest)
    torch.load(latest, weights_only=True)  # torch alone does not notice
    with pytest.raises(ckpt_files.ChecksumError, match=f"{latest.name}: checksum mismatch"):
        ckpt_files.load_checkpoint(latest)
    with pytest.warns(UserWarning, match=f"{latest.name}.*checksum"):
        state, path = ckpt_files.load_latest(tmp_path)
    assert state["images"] == 10 and "sha256" not in state


def test_a_directory_named_like_a_checkpoint_is_ignored(tmp_path):
    ckpt.save_checkpoint({"images": 1}, tmp_path, 1)
    (tmp_path / "ckpt-000000000005.pt").mkdir()
    assert [p.name for p in ckpt_files.list_checkpoints(tmp_path)] == ["ckpt-000000000001.pt"]
    for images in (2, 3, 4, 6):  # pruning never touches the directory
        ckpt.save_checkpoint({"images": images}, tmp_path, images, keep=2)
    assert (tmp_path / "ckpt-000000000005.pt").is_dir()
    with pytest.raises(IsADirectoryError, match="ckpt-000000000005.pt"):
        ckpt.save_checkpoint({"images": 5}, tmp_path, 5)


def test_leftover_temp_files_are_removed_and_newer_files_set_aside(tmp_path):
    for images in (10, 20, 30):
        ckpt.save_checkpoint({"images": images}, tmp_path, images)
    (tmp_path / ".ckpt-000000000040.pt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "notes.tmp").write_text("not ours")
    assert [p.name for p in ckpt.remove_temp_files(tmp_path)] == [".ckpt-000000000040.pt.abc123.tmp"]
    assert (tmp_path / "notes.tmp").exists()
    moved = ckpt.set_aside_newer(tmp_path, 10)
    assert [p.name for p in moved] == ["ckpt-000000000020.pt", "ckpt-000000000030.pt"]
    assert [p.name for p in ckpt_files.list_checkpoints(tmp_path)] == ["ckpt-000000000010.pt"]
    assert sorted(p.name for p in (tmp_path / "superseded").iterdir()) == ["ckpt-000000000020.pt",
                                                                          "ckpt-000000000030.pt"]


def test_load_errors_never_advise_unsafe_loading(tmp_path):
    import pickle

    bad = tmp_path / "obj.pt"
    torch.save({"f": pickle.PicklingError("x")}, bad)  # a Python object outside weights_only's allowlist
    with pytest.warns(UserWarning) as record, pytest.raises(RuntimeError) as err:
        ckpt_files.load_latest(bad)
    text = str(err.value) + " ".join(str(r.message) for r in record)
    assert "objects other than tensors" in text and "weights_only" not in text
