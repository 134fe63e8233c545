"""Exponential moving average of a model: beta = 0.5^(batch / half_life_images)."""

from __future__ import annotations

import copy

import torch


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


def ema_beta(batch: int, half_life_images: float) -> float:
    return 0.5 ** (batch / half_life_images) if half_life_images > 0 else 0.0


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """Parameters move towards the model's by (1 - beta); buffers (w_avg, ...) are copied."""
    ema_params = list(ema.parameters())
    params = list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError("update_ema: ema and model have different parameter lists")
    torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
