"""Drop-in replacements for the original ALAE code's model.py and net.py, on alae_fast's fused ops.

Swap the import and keep the rest; official checkpoints load unchanged:

    from alae_fast.official import Model          # was: from model import Model
    model = Model(startf=..., layer_count=..., generator="GeneratorDefault", encoder="EncoderDefault", ...)
    model.decoder.load_state_dict(torch.load(path)["models"]["generator_s"], strict=True)

Provided: Model, DLatent, the registries GENERATORS (GeneratorDefault, GeneratorFC), ENCODERS
(EncoderDefault, EncoderFC) and MAPPINGS (MappingF, MappingD), and the building blocks. The
original's ablation-only networks are not included.
"""

from alae_fast.official.model import DLatent, Model
from alae_fast.official.net import (ENCODERS, GENERATORS, MAPPINGS, Blur, DecodeBlock, EncodeBlock, EncoderDefault,
                                    EncoderFC, FromRGB, Generator, GeneratorFC, MappingBlock, MappingD, MappingF,
                                    Registry, ToRGB)

__all__ = ["DLatent", "ENCODERS", "GENERATORS", "MAPPINGS", "Blur", "DecodeBlock", "EncodeBlock", "EncoderDefault",
           "EncoderFC", "FromRGB", "Generator", "GeneratorFC", "MappingBlock", "MappingD", "MappingF", "Model",
           "Registry", "ToRGB"]
