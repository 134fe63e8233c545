"""Official ALAE checkpoints <-> alae_fast state dicts, for StyleALAE and MNIST-FC (MLPALAE).

Every function here raises ValueError, naming the network and key, on input it cannot map.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import torch

from alae_fast.convert import safe_pickle
from alae_fast.convert.layout import BLUR_KERNEL, NETS, blur_keys, entries
from alae_fast.models import ModelConfig
from alae_fast.official.net import FC_HIDDEN, FC_SIDE
from alae_fast.io.checkpoint import save_atomic

EMA = "_s"  # official suffix of the EMA copies


def load_official(path) -> dict:
    """The 'models' dict of an official checkpoint: {net: state_dict}, EMA copies as net + '_s',
    'dlatent_avg': {'buff': [2L, ℓ]}. Loaded with the stub-tolerant unpickler; 'auxiliary' is dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    return official_models(safe_pickle.torch_load(path), path)


def official_models(data, where) -> dict:
    """The 'models' dict of an already loaded official checkpoint `data` (read from `where`)."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ValueError(f"{where}: not an official ALAE checkpoint (no 'models' dict at the top level)")
    return {name: _strip_module(tensor_dict(sd, f"models[{name!r}]"))
            for name, sd in data["models"].items() if isinstance(sd, dict)}


def tensor_dict(sd: dict, what: str) -> dict:
    """`sd`, once checked to map string keys to floating-point tensors (a crafted file fails here)."""
    for key, value in sd.items():
        if not isinstance(key, str):
            raise ValueError(f"{what} has a key that is not a string: {_short(repr(key))}")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = (f"a {value.dtype} tensor" if isinstance(value, torch.Tensor)
                    else f"an object of type {getattr(value, 'stub_of', type(value).__name__)}")
            raise ValueError(f"{what}[{_short(repr(key))}] is {kind}, expected a floating-point tensor")
    return sd


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _strip_module(sd: dict) -> dict:
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return sum(1 for k in sd if rx.fullmatch(k))


def _layer_count(sd: dict, net: str, prefix: str, suffix: str) -> int:
    """n for keys {prefix}.0.{suffix} .. {prefix}.{n-1}.{suffix}; a gap is reported by the key it lacks."""
    rx = re.compile(rf"{re.escape(prefix)}\.(\d+)\.{re.escape(suffix)}")
    found = {int(m.group(1)) for k in sd if (m := rx.fullmatch(k))}
    for i in range(len(found)):
        if i not in found:
            raise ValueError(f"official checkpoint: {net!r} has no '{prefix}.{i}.{suffix}'")
    return len(found)


def _dim(sd: dict, net: str, key: str, axis: int) -> int:
    if key not in sd:
        raise ValueError(f"official checkpoint: {net!r} has no {key!r}")
    if sd[key].dim() <= axis:
        raise ValueError(f"official checkpoint: {net}.{key} has shape {list(sd[key].shape)}, "
                         f"expected at least {axis + 1} dimensions")
    return int(sd[key].shape[axis])


def infer_config(models: dict) -> ModelConfig:
    """The ModelConfig (StyleALAE, or MLPALAE for MNIST-FC) whose shapes match an official 'models' dict."""
    for net in NETS:
        if net not in models:
            raise ValueError(f"official checkpoint: 'models' has no {net!r} (found {sorted(models)})")
    gen, enc = models["generator"], models["discriminator"]
    shared = dict(latent_size=_dim(models["mapping_fl"], "mapping_fl", "map_blocks.0.fc.weight", 1),
                  mapping_layers=_layer_count(models["mapping_fl"], "mapping_fl", "map_blocks", "fc.weight"))
    if "fc_1.weight" in gen:
        pixels = _dim(gen, "generator", "fc_3.weight", 0)
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(f"official checkpoint: generator.fc_3 has {pixels} outputs, not a 1-channel square image")
        buff = models.get("dlatent_avg", {}).get("buff")
        layers = {"layer_count": buff.shape[0] // 2} if buff is not None and buff.dim() == 2 else {}
        return ModelConfig(kind="mlp", channels=1, image_size=side, hidden=_dim(gen, "generator", "fc_1.weight", 0),
                           **layers, **shared)
    layers = _layer_count(gen, "generator", "decode_block", "conv_2.weight")
    if layers == 0 or "const" not in gen:
        raise ValueError("official checkpoint: 'generator' is neither a StyleALAE generator (const, "
                         "decode_block.*) nor an MNIST-FC one (fc_1, fc_2, fc_3)")
    channels = [_dim(gen, "generator", "const", 1),
                _dim(enc, "discriminator", f"encode_block.{layers - 1}.conv_2.weight", 0)]
    return ModelConfig(
        kind="style", layer_count=layers, maxf=max(channels),
        startf=_dim(enc, "discriminator", "encode_block.0.conv_1.weight", 0),
        channels=_dim(gen, "generator", "to_rgb.0.to_rgb.weight", 0), **shared)


def _to_ours(models: dict, suffix: str, table, cfg: ModelConfig, w_avg: torch.Tensor) -> dict:
    sd, used = {}, {net: set() for net in NETS}
    for e in table:
        src = models[e.net + suffix]
        if e.official not in src:
            raise ValueError(f"official checkpoint: {e.net + suffix!r} has no {e.official!r}")
        if tuple(src[e.official].shape) != e.official_shape():
            raise ValueError(f"official checkpoint: {e.net + suffix}.{e.official} has shape "
                             f"{list(src[e.official].shape)}, expected {list(e.official_shape())}")
        sd[e.ours] = e.to_ours(src[e.official])
        used[e.net].add(e.official)
    for net, keys in blur_keys(cfg).items():
        for key in keys:
            if key in models[net + suffix] and not torch.allclose(
                    models[net + suffix][key].float(), BLUR_KERNEL.expand_as(models[net + suffix][key])):
                raise ValueError(f"official checkpoint: {net + suffix}.{key} is not the [1,2,1] blur kernel")
            used[net].add(key)
    for net in NETS:
        extra = sorted(set(models[net + suffix]) - used[net])
        if extra:
            raise ValueError(f"official checkpoint: {net + suffix!r} has keys alae_fast does not know: "
                             f"{extra[:5]}{' ...' if len(extra) > 5 else ''}")
    sd["w_avg"] = w_avg
    return sd


def _official_w_avg(models: dict, cfg: ModelConfig) -> torch.Tensor:
    """w_avg from dlatent_avg.buff [2L, ℓ] (its rows are equal; zeros when the file has none)."""
    buff = models.get("dlatent_avg", {}).get("buff")
    if buff is None:
        return torch.zeros(cfg.latent_size)
    if tuple(buff.shape) != (2 * cfg.layer_count, cfg.latent_size):
        raise ValueError(f"official checkpoint: dlatent_avg.buff has shape {list(buff.shape)}, "
                         f"expected {[2 * cfg.layer_count, cfg.latent_size]}")
    return buff.float().mean(0)


def official_to_alae_fast(models: dict, cfg: ModelConfig | None = None) -> dict:
    """{'model': state_dict, 'ema': state_dict} for the alae_fast model of `cfg` from an official
    'models' dict (see load_official). cfg defaults to infer_config(models). Missing EMA copies
    (*_s) fall back to the training weights with a warning."""
    cfg = cfg or infer_config(models)
    table = entries(cfg)
    w_avg = _official_w_avg(models, cfg)
    model = _to_ours(models, "", table, cfg, w_avg)
    if all(net + EMA in models for net in NETS):
        ema = _to_ours(models, EMA, table, cfg, w_avg.clone())
    else:
        warnings.warn("official checkpoint has no EMA copies (*_s); using the training weights as 'ema'",
                      stacklevel=2)
        ema = {k: v.clone() for k, v in model.items()}
    return {"model": model, "ema": ema}


def _to_official(sd: dict, table, cfg: ModelConfig) -> dict:
    nets = {net: {} for net in NETS}
    for e in table:
        if e.ours not in sd:
            raise ValueError(f"alae_fast state dict has no {e.ours!r}")
        if tuple(sd[e.ours].shape) != e.shape:
            raise ValueError(f"alae_fast state dict: {e.ours} has shape {list(sd[e.ours].shape)}, "
                             f"expected {list(e.shape)}")
        nets[e.net][e.official] = e.to_official(sd[e.ours])
    for net, keys in blur_keys(cfg).items():
        for key, channels in keys.items():
            nets[net][key] = BLUR_KERNEL.expand(channels, 1, 3, 3).clone()
    return nets


def _check_official_sizes(cfg: ModelConfig, sd: dict) -> None:
    """The official networks can hold cfg, and the weights have as many layers as cfg says."""
    if cfg.kind == "mlp" and (cfg.channels, cfg.image_size, cfg.hidden) != (1, FC_SIDE, FC_HIDDEN):
        raise ValueError(f"the official GeneratorFC/EncoderFC are fixed at 1x{FC_SIDE}x{FC_SIDE} images and "
                         f"{FC_HIDDEN} hidden units; this model has channels={cfg.channels}, "
                         f"image_size={cfg.image_size}, hidden={cfg.hidden}")
    counts = {"mapping_layers": _count(sd, r"mapping_f\.blocks\.\d+\.fc\.weight")}
    if cfg.kind == "style":
        counts["layer_count"] = _count(sd, r"generator\.blocks\.\d+\.conv_2\.weight")
    for name, found in counts.items():
        if getattr(cfg, name) != found:
            raise ValueError(f"alae_fast checkpoint: config {name}={getattr(cfg, name)} but the weights have {found}")
    if "w_avg" not in sd or tuple(sd["w_avg"].shape) != (cfg.latent_size,):
        raise ValueError(f"alae_fast state dict needs 'w_avg' of shape [{cfg.latent_size}]")


def alae_fast_to_official(model_sd: dict, ema_sd: dict | None, cfg: ModelConfig) -> dict:
    """An official 'models' dict: generator, discriminator, mapping_fl, mapping_tl, their EMA copies
    (*_s, from ema_sd, or from model_sd when it is None) and dlatent_avg {'buff': w_avg repeated 2L×}.
    For an MLPALAE, L is cfg.layer_count (the official MNIST-FC config has 4)."""
    _check_official_sizes(cfg, model_sd)
    table = entries(cfg)
    models = _to_official(model_sd, table, cfg)
    ema = _to_official(ema_sd if ema_sd is not None else model_sd, table, cfg)
    models.update({net + EMA: sd for net, sd in ema.items()})
    w_avg = model_sd["w_avg"].float()
    models["dlatent_avg"] = {"buff": w_avg.expand(2 * cfg.layer_count, -1).clone()}
    return models


def save_official(models: dict, path) -> Path:
    """Atomically torch.save({'models': models, 'auxiliary': {}}), the layout the official Checkpointer loads."""
    return save_atomic({"models": models, "auxiliary": {}}, path)
