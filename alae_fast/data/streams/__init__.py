"""make_stream: pick a loader for a source and explain any fallback once."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from ..builtin import load_builtin
from .base import ImageStream, TensorStream

LOADERS = ("auto", "dali", "dali-cpu", "torch", "memory")
log = logging.getLogger("alae_fast.data")
_explained: set[str] = set()


def _explain_once(message: str) -> None:
    if message not in _explained:
        _explained.add(message)
        log.warning(message)


def _auto_loader(device: torch.device) -> str:
    if importlib.util.find_spec("nvidia.dali") is None:
        _explain_once("make_stream: DALI not installed (pip install nvidia-dali-cuda130); "
                      "using the torch loader")
        return "torch"
    if device.type != "cuda":
        _explain_once("make_stream: no GPU device requested; using the DALI CPU pipeline")
        return "dali-cpu"
    return "dali"


def make_stream(source, *, loader="auto", device="cpu", rank=0, world_size=1, seed=0,
                mirror=False, num_workers=2, report_dir=None) -> ImageStream:
    """An ImageStream over `source`: a uint8 [N,C,H,W] tensor, 'builtin:<name>' (see
    builtin.py), an image folder (nested; any format Pillow reads), or a prepared/official
    ALAE TFRecord directory.

    Files of a folder that cannot be read or decoded are skipped, never fatal, and listed
    in report_dir/bad_files.txt (default: a file in the temp dir; the warning names it)."""
    if loader not in LOADERS:
        raise ValueError(f"make_stream: loader={loader!r}; choose one of {', '.join(LOADERS)}")
    device = torch.device(device)
    common = dict(device=device, rank=rank, world_size=world_size, seed=seed, mirror=mirror)
    if isinstance(source, torch.Tensor) or str(source).startswith("builtin:"):
        if loader not in ("auto", "memory"):
            raise ValueError(f"make_stream: loader={loader!r} reads files; a tensor or "
                             "builtin source uses loader='memory'")
        images = source if isinstance(source, torch.Tensor) else load_builtin(source[8:])[0]
        return TensorStream(images, **common)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"make_stream: dataset {path} does not exist")
    if loader == "memory":
        raise ValueError(f"make_stream: loader='memory' needs a tensor or builtin source, "
                         f"got the path {path}")
    from ..sources import open_source

    files = open_source(path, report_dir)
    if loader == "auto":
        loader = _auto_loader(device)
    if loader == "torch":
        from .torch_stream import TorchStream

        return TorchStream(files, num_workers=num_workers, **common)
    from .dali_stream import DaliStream

    return DaliStream(files, gpu=(loader == "dali"), num_threads=num_workers, **common)
