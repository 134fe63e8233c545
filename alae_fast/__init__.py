"""alae_fast: fast training and inference of Adversarial Latent Autoencoders (ALAE, StyleALAE).

Layers: ops -> nn -> models (and io) -> train, data, infer, convert, metrics, official -> cli.
`import alae_fast` is light: the names below load their module on first use. docs/api.md documents
them with their arguments and shapes.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# Public name -> the module that defines it (no name here shadows a subpackage: alae_fast.train is the
# package; its loop is alae_fast.train.train).
_PUBLIC = {
    "use_impl": "alae_fast.ops", "set_default_impl": "alae_fast.ops", "get_default_impl": "alae_fast.ops",
    "ModelConfig": "alae_fast.models", "StyleALAE": "alae_fast.models", "MLPALAE": "alae_fast.models",
    "build_model": "alae_fast.models",
    "RunConfig": "alae_fast.train", "TrainConfig": "alae_fast.train", "load_config": "alae_fast.train",
    "available_configs": "alae_fast.train", "Trainer": "alae_fast.train",
    "ALAEStep": "alae_fast.train", "StepOptions": "alae_fast.train", "NonFiniteTraining": "alae_fast.train",
    "make_stream": "alae_fast.data", "load_builtin": "alae_fast.data", "load_mnist": "alae_fast.data",
    "load_trained": "alae_fast.infer", "load_model": "alae_fast.infer", "generate": "alae_fast.infer",
    "reconstruct": "alae_fast.infer", "style_mix": "alae_fast.infer", "interpolate": "alae_fast.infer",
    "edit": "alae_fast.infer",
    "convert_file": "alae_fast.convert", "load_official": "alae_fast.convert",
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'alae_fast' has no attribute {name!r}")


def __dir__():
    return __all__
