"""Shared by tests/ and benchmarks/: Triton's CPU interpreter without a GPU, and `gpu` tests skipped there."""

import os

# Triton's CPU interpreter must be chosen before triton is imported; use it when no NVIDIA driver is present.
if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/proc/driver/nvidia"):
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
