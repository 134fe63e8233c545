"""Helpers shared by the subcommands: device/precision choice, loading a trained model."""

from __future__ import annotations

import torch

from alae_fast.models import ModelConfig, build_model
from alae_fast.train.checkpoint import load_latest


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible to torch")
    return device


def pick_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def load_trained(where, device, use_ema: bool = True):
    """(model in eval mode, lod, blend, checkpoint dict) from a checkpoint file or directory."""
    state, path = load_latest(where, map_location=device)
    if "config" not in state or "model" not in state:
        raise ValueError(f"{path}: not an alae_fast training checkpoint")
    model = build_model(ModelConfig(**state["config"]["model"])).to(device).eval()
    model.load_state_dict(state["ema" if use_ema else "model"])
    return model, int(state["lod"]), float(state.get("blend", 1.0)), state


def add_device_args(parser, precision: bool = False) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    if precision:
        parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                            help="auto: bf16 on a GPU that supports it, else fp32")
