"""ALAE models: StyleALAE, the MLP ALAE and the AAE baseline behind one interface (see ALAEBase)."""

from alae_fast.models.aae import AAE
from alae_fast.models.config import ModelConfig
from alae_fast.models.mlp_alae import MLPALAE
from alae_fast.models.style_alae import StyleALAE


MODELS = {"style": StyleALAE, "mlp": MLPALAE, "aae": AAE}


def build_model(cfg: ModelConfig) -> StyleALAE | MLPALAE | AAE:
    """The model that `cfg.kind` names, with fresh weights."""
    return MODELS[cfg.kind](cfg)


__all__ = ["AAE", "MLPALAE", "ModelConfig", "StyleALAE", "build_model"]
