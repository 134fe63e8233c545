"""The memory format in which an op hands its activations to a backend's kernels."""

from __future__ import annotations

import torch


def kernel_format(x: torch.Tensor, backend: str) -> torch.memory_format:
    """channels_last for an NHWC x on the CUDA kernels, which read and write NHWC in place;
    contiguous (NCHW) otherwise, and for tensors that are both (C = 1 or H = W = 1)."""
    if backend == "cuda" and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
