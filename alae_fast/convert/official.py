"""Official ALAE checkpoints (SPEC §8) <-> alae_fast state dicts."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from alae_fast.convert import safe_pickle
from alae_fast.convert.layout import BLUR_KERNEL, NETS, blur_keys, entries
from alae_fast.models import ModelConfig

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
    return {name: _strip_module(sd) for name, sd in data["models"].items() if isinstance(sd, dict)}


def _strip_module(sd: dict) -> dict:
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return sum(1 for k in sd if rx.fullmatch(k))


def infer_config(models: dict) -> ModelConfig:
    """The StyleALAE ModelConfig whose shapes match an official 'models' dict."""
    for net in NETS:
        if net not in models:
            raise ValueError(f"official checkpoint: 'models' has no {net!r} (found {sorted(models)})")
    gen, enc, fl = models["generator"], models["discriminator"], models["mapping_fl"]
    layers = _count(gen, r"decode_block\.\d+\.conv_2\.weight")
    if layers == 0 or "const" not in gen:
        raise ValueError("official checkpoint: 'generator' is not a StyleALAE generator "
                         "(no const / decode_block.*.conv_2.weight); MNIST-FC checkpoints are not supported")
    channels = [gen["const"].shape[1], enc[f"encode_block.{layers - 1}.conv_2.weight"].shape[0]]
    return ModelConfig(
        kind="style", layer_count=layers,
        startf=int(enc["encode_block.0.conv_1.weight"].shape[0]), maxf=int(max(channels)),
        latent_size=int(fl["map_blocks.0.fc.weight"].shape[1]),
        mapping_layers=_count(fl, r"map_blocks\.\d+\.fc\.weight"),
        channels=int(gen["to_rgb.0.to_rgb.weight"].shape[0]))


def _to_ours(models: dict, suffix: str, table, cfg: ModelConfig, w_avg: torch.Tensor) -> dict:
    sd, used = {}, {net: set() for net in NETS}
    for e in table:
        src = models[e.net + suffix]
        if e.official not in src:
            raise KeyError(f"official checkpoint: {e.net + suffix!r} has no {e.official!r}")
        if tuple(src[e.official].shape) != e.official_shape():
            raise ValueError(f"official checkpoint: {e.net + suffix}.{e.official} has shape "
                             f"{list(src[e.official].shape)}, expected {list(e.official_shape())} for {cfg}")
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


def official_to_alae_fast(models: dict, cfg: ModelConfig | None = None) -> dict:
    """{'model': state_dict, 'ema': state_dict} for alae_fast StyleALAE(cfg) from an official
    'models' dict (see load_official). cfg defaults to infer_config(models). Missing EMA copies
    (*_s) fall back to the training weights with a warning."""
    cfg = cfg or infer_config(models)
    table = entries(cfg)
    buff = models.get("dlatent_avg", {}).get("buff")
    w_avg = buff.float().mean(0) if buff is not None else torch.zeros(cfg.latent_size)
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
            raise KeyError(f"alae_fast state dict has no {e.ours!r}")
        if tuple(sd[e.ours].shape) != e.shape:
            raise ValueError(f"alae_fast state dict: {e.ours} has shape {list(sd[e.ours].shape)}, "
                             f"expected {list(e.shape)} for {cfg}")
        nets[e.net][e.official] = e.to_official(sd[e.ours])
    for net, keys in blur_keys(cfg).items():
        for key, channels in keys.items():
            nets[net][key] = BLUR_KERNEL.expand(channels, 1, 3, 3).clone()
    return nets


def alae_fast_to_official(model_sd: dict, ema_sd: dict | None, cfg: ModelConfig) -> dict:
    """An official 'models' dict: generator, discriminator, mapping_fl, mapping_tl, their EMA copies
    (*_s, from ema_sd, or from model_sd when it is None) and dlatent_avg {'buff': w_avg repeated 2L×}."""
    table = entries(cfg)
    models = _to_official(model_sd, table, cfg)
    ema = _to_official(ema_sd if ema_sd is not None else model_sd, table, cfg)
    models.update({net + EMA: sd for net, sd in ema.items()})
    w_avg = model_sd["w_avg"].float()
    models["dlatent_avg"] = {"buff": w_avg.expand(2 * cfg.layer_count, -1).clone()}
    return models


def save_official(models: dict, path) -> Path:
    """torch.save({'models': models, 'auxiliary': {}}) — the layout the official Checkpointer loads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"models": models, "auxiliary": {}}, path)
    return path
