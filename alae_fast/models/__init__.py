"""ALAE models: StyleALAE and the MLP ALAE behind one interface (see ALAEBase)."""

from alae_fast.models.config import ModelConfig
from alae_fast.models.mlp_alae import MLPALAE
from alae_fast.models.style_alae import StyleALAE


def build_model(cfg: ModelConfig) -> StyleALAE | MLPALAE:
    """The model that `cfg.kind` names, with fresh weights."""
    return StyleALAE(cfg) if cfg.kind == "style" else MLPALAE(cfg)


__all__ = ["MLPALAE", "ModelConfig", "StyleALAE", "build_model"]
