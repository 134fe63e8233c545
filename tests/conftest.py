"""Test-only settings (the repository's conftest.py is shared with benchmarks/)."""

import os

# One fixed Triton launch config per shape: each test shape compiles once instead of once per
# autotune candidate. The benchmarks keep autotuning (the default).
os.environ.setdefault("ALAE_FAST_TRITON_AUTOTUNE", "0")
