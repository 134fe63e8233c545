"""Convert official ALAE checkpoints (StyleALAE and MNIST-FC) to alae_fast and back."""

from alae_fast.convert.convert_file import convert_file
from alae_fast.convert.official import (alae_fast_to_official, infer_config, load_official,
                                        official_models, official_to_alae_fast, save_official)
from alae_fast.convert.safe_pickle import torch_load as safe_torch_load

__all__ = ["alae_fast_to_official", "convert_file", "infer_config", "load_official", "official_models",
           "official_to_alae_fast",
           "safe_torch_load", "save_official"]
