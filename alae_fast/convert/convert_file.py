"""Official checkpoint -> alae_fast checkpoint, or back (`alae-fast convert IN OUT`).

IN is a file, or a training run / checkpoints directory (its newest checkpoint). The direction follows
the input: an official file ('models' dict) becomes an alae_fast file
{'config': {'name', 'model'}, 'model', 'ema'}; an alae_fast file ('model' + 'config') becomes an
official {'models', 'auxiliary': {}} file. Both are read with the restricted, stub-tolerant
unpickler. OUT is written atomically and never over IN; an unreadable or malformed input is
reported in one line naming the file (exit status 2).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from alae_fast.convert import safe_pickle
from alae_fast.convert.official import (alae_fast_to_official, infer_config, official_models,
                                        official_to_alae_fast, tensor_dict)
from alae_fast.models import ModelConfig
from alae_fast.io.checkpoint import CHECKSUM_KEY, list_checkpoints, save_atomic, save_file, verify_checksum


def _one_line(exc: BaseException) -> str:
    """The first sentence of the message (torch's zip errors run on for several)."""
    lines = str(exc).strip().splitlines()
    return lines[0].split(". ")[0][:300] if lines else type(exc).__name__


def newest_checkpoint(src: Path) -> Path:
    """src itself when it is a file; the newest ckpt-*.pt of a run or checkpoints directory."""
    if src.is_dir():
        found = list_checkpoints(src / "checkpoints") or list_checkpoints(src)
        if not found:
            raise ValueError(f"input {src} is a directory without checkpoints (ckpt-*.pt, or checkpoints/ckpt-*.pt)")
        return found[-1]
    return src


def _check_paths(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise ValueError(f"input {src} does not exist or is not a regular file")
    if dst.is_dir():
        raise ValueError(f"output {dst} is a directory; give the path of the file to write")
    if dst.exists() and os.path.samefile(src, dst):
        raise ValueError(f"output {dst} is the input file {src}; write the conversion to another path")


def _load(src: Path):
    try:
        return safe_pickle.torch_load(src)
    except Exception as exc:  # truncated, crafted or not a checkpoint at all
        raise ValueError(f"{src}: not a readable checkpoint ({type(exc).__name__}: {_one_line(exc)})") from None


def _official_to_ours(state: dict, src: Path) -> tuple[dict, dict]:
    models = official_models(state, src)
    cfg = infer_config(models)
    out = official_to_alae_fast(models, cfg)
    out["config"] = {"name": src.stem, "model": dataclasses.asdict(cfg)}
    return out, {"to": "alae_fast", "config": out["config"]["model"]}


def _ours_to_official(state: dict, src: Path) -> tuple[dict, dict]:
    config = state.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError("alae_fast checkpoint has no config['model'] dict")
    if not isinstance(state["model"], dict) or not isinstance(state.get("ema", {}), (dict, type(None))):
        raise ValueError("alae_fast checkpoint: 'model' and 'ema' must be state dicts")
    cfg = ModelConfig.from_dict(config["model"], f"{src}: config['model']")
    model = tensor_dict(state["model"], "model")
    ema = tensor_dict(state["ema"], "ema") if state.get("ema") is not None else None
    models = alae_fast_to_official(model, ema, cfg)
    return {"models": models, "auxiliary": {}}, {"to": "official", "config": config["model"]}


def convert_file(src, dst, to: str = "auto") -> dict:
    """Convert the checkpoint file src into dst (never over src, written atomically); returns
    {'to': layout, 'config': model config}. A malformed file raises ValueError in one line."""
    src, dst = newest_checkpoint(Path(src)), Path(dst)
    _check_paths(src, dst)
    state = _load(src)
    if not isinstance(state, dict) or not ("models" in state or "model" in state):
        raise ValueError(f"{src} is neither an official ('models') nor an alae_fast ('model') checkpoint")
    layout = "official" if "models" in state else "alae_fast"
    if to == layout:
        raise ValueError(f"{src} is already in the {layout} layout")
    if layout == "alae_fast" and CHECKSUM_KEY in state:
        state = verify_checksum(state, src)
    try:
        out, info = (_official_to_ours if layout == "official" else _ours_to_official)(state, src)
    except (ValueError, TypeError, RuntimeError) as exc:  # weights that do not fit a model
        reason = _one_line(exc)
        raise ValueError(reason if str(src) in reason else f"{src}: {reason}") from None
    try:
        # alae_fast files carry their checksum; official ones keep the original's plain layout.
        (save_file if layout == "official" else save_atomic)(out, dst)
    except OSError as exc:
        raise ValueError(f"cannot write {dst}: {exc.strerror or exc}") from None
    return {"input": str(src), **info}
