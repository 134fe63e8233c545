"""The (backend, device) pairs this machine can test."""

import torch

from alae_fast.ops import _backend


def backend_devices() -> list[tuple[str, str]]:
    pairs = []
    if _backend.EXT_LOADED:
        pairs.append(("cpu", "cpu"))
    if torch.cuda.is_available():
        if _backend.EXT_HAS_CUDA:
            pairs.append(("cuda", "cuda"))
        if _backend.TRITON_INSTALLED:
            pairs.append(("triton", "cuda"))
    return pairs
