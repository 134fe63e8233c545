"""ALAE losses. Logits are [N]; losses are means over the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_adversarial(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def g_adversarial(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits.float()).mean()


def latent_ae(w_rec: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (w_rec.float() - w.detach().float()).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, scaler=None) -> torch.Tensor:
    """mean over the batch of ||d logit / d real||^2, differentiable (create_graph).

    Under fp16 loss scaling the gradient is taken of the *scaled* logits (so it does not
    underflow) and unscaled before squaring, as in PyTorch's AMP gradient-penalty recipe.
    """
    out = real_logits.float().sum()
    scale = None
    if scaler is not None and scaler.is_enabled():
        scale = scaler.scale(torch.ones((), device=out.device))
        out = out * scale
    (grad,) = torch.autograd.grad(out, real, create_graph=True)
    grad = grad.float()
    if scale is not None:
        grad = grad / scale
    return grad.pow(2).flatten(1).sum(1).mean()
