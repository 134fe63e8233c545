"""`alae-fast convert IN OUT`: official checkpoint -> alae_fast checkpoint, or back.

The direction follows the input: an official file ('models' dict) becomes an alae_fast file
{'config': {'name', 'model'}, 'model', 'ema'}; an alae_fast file ('model' + 'config') becomes an
official {'models', 'auxiliary': {}} file. Both are read with the stub-tolerant unpickler.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from alae_fast.convert import safe_pickle
from alae_fast.convert.official import (alae_fast_to_official, infer_config, official_models,
                                        official_to_alae_fast, save_official)
from alae_fast.models import ModelConfig


def build_parser(prog: str = "alae-fast convert") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="official .pth or alae_fast .pt checkpoint")
    p.add_argument("output", help="where to write the converted checkpoint")
    p.add_argument("--to", choices=("auto", "alae_fast", "official"), default="auto",
                   help="target layout (default: the other one)")
    return p


def _official_to_ours(state: dict, src: Path, dst: Path) -> dict:
    models = official_models(state, src)
    cfg = infer_config(models)
    state = official_to_alae_fast(models, cfg)
    state["config"] = {"name": src.stem, "model": dataclasses.asdict(cfg)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return {"to": "alae_fast", "config": state["config"]["model"]}


def _ours_to_official(state: dict, src: Path, dst: Path) -> dict:
    model_cfg = (state.get("config") or {}).get("model")
    if not isinstance(model_cfg, dict):
        raise ValueError(f"{src}: alae_fast checkpoint has no config['model']")
    cfg = ModelConfig(**model_cfg)
    save_official(alae_fast_to_official(state["model"], state.get("ema"), cfg), dst)
    return {"to": "official", "config": model_cfg}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise SystemExit(f"convert: input {src} does not exist")
    state = safe_pickle.torch_load(src)
    if not isinstance(state, dict) or not ("models" in state or "model" in state):
        raise SystemExit(f"convert: {src} is neither an official ('models') nor an alae_fast ('model') checkpoint")
    layout = "official" if "models" in state else "alae_fast"
    if args.to == layout:
        raise SystemExit(f"convert: {src} is already in the {layout} layout")
    convert = _official_to_ours if layout == "official" else _ours_to_official
    info = convert(state, src, dst)
    print(json.dumps({"input": str(src), "output": str(dst), **info}))
    return 0
