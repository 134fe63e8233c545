"""Noise injection, StyleGAN2's standalone noise layer: y = x + noise_weight[c]·noise[n,0], optionally
+ bias, leaky ReLU. The StyleALAE generator does not call it: it fuses the same noise into
modulated_adain, one pass less."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from alae_fast.ops import _backend, _checks
from alae_fast.ops.constants import LEAKY_SLOPE
from alae_fast.ops._autograd import noise_grad, reference_double_backward

SLOPE = LEAKY_SLOPE
_OP = "noise_inject"


def noise_inject_ref(x, noise, noise_weight, bias=None, act=False):
    """Pure-PyTorch reference, computed in fp32 (fp64 for fp64 inputs)."""
    acc = _backend.acc_dtype(x.dtype)
    c = x.shape[1]
    t = x.to(acc) + noise_weight.to(acc).view(1, c, 1, 1) * noise.to(acc)
    if bias is not None:
        t = t + bias.to(acc).view(1, c, 1, 1)
    if act:
        t = F.leaky_relu(t, SLOPE)
    return t.to(x.dtype)


# Kernel contract (every backend):
#   noise_fwd(x [N,C,H,W], noise [N,1,H,W] (x.dtype), noise_weight [C], bias [C] or None, act) -> y [N,C,H,W]
#   noise_bwd(grad_y, x, noise, noise_weight, bias, act)
#             -> (grad_x [N,C,H,W], grad_noise_weight [C], grad_bias [C] (zeros when bias is None))
@_backend.kernel_op("noise_inject", "noise_fwd", SLOPE)
def _noise_op(x: torch.Tensor, noise: torch.Tensor, noise_weight: torch.Tensor, bias: Optional[torch.Tensor],
              act: bool, backend: str) -> torch.Tensor:
    return _backend.empty_dense_like(x)


@_backend.kernel_op("noise_inject_backward", "noise_bwd", SLOPE)
def _noise_backward_op(grad_y: torch.Tensor, x: torch.Tensor, noise: torch.Tensor, noise_weight: torch.Tensor,
                       bias: Optional[torch.Tensor], act: bool, backend: str
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (_backend.empty_dense_like(x), torch.empty_like(noise_weight),
            torch.empty_like(noise_weight))


def _setup(ctx, inputs, output):
    x, noise, noise_weight, bias, act, backend = inputs
    ctx.save_for_backward(x, noise, noise_weight, bias)
    ctx.act, ctx.backend, ctx.has_bias = act, backend, bias is not None


def _backward(ctx, grad_y):
    x, noise, noise_weight, bias = ctx.saved_tensors
    gx, gwn, gb = _noise_backward_op(_backend.dense(grad_y, ctx.backend), x, noise, noise_weight, bias, ctx.act,
                                     ctx.backend)
    g_noise = noise_grad(gx, noise_weight) if ctx.needs_input_grad[1] else None
    return gx, g_noise, gwn, gb if ctx.has_bias else None, None, None


def _setup_backward(ctx, inputs, output):
    grad_y, x, noise, noise_weight, bias, act, _backend_name = inputs
    ctx.save_for_backward(grad_y, x, noise, noise_weight, bias)
    ctx.act, ctx.has_bias = act, bias is not None


def _double_backward(ctx, ggx, ggwn, ggb):
    grad_y, x, noise, noise_weight, bias = ctx.saved_tensors
    (g_grad_y,), (gx, g_noise, gwn, gb) = reference_double_backward(
        noise_inject_ref, (x, noise, noise_weight, bias), (True, ctx.needs_input_grad[2], True, ctx.has_bias),
        (grad_y,), (ggx, None, ggwn, ggb), extra_args=(ctx.act,))
    return g_grad_y, gx, g_noise, gwn, gb, None, None


_noise_op.register_autograd(_backward, setup_context=_setup)
_noise_backward_op.register_autograd(_double_backward, setup_context=_setup_backward)


def noise_inject(x, noise, noise_weight, bias=None, *, act: bool = False, impl: str = "auto"):
    """y = x + noise_weight[c]·noise, then + bias[c] and leaky ReLU 0.2 when given/asked.

    x [N, C, H, W]; noise [N, 1, H, W]; noise_weight [C]; bias [C] or None; act a bool.
    Every backend gives gradients for x, noise (when it requires grad, as in a projector that
    optimises noise maps), noise_weight and bias, to second order.
    """
    n, c, h, w = _checks.activation(_OP, "x", x)
    act = _checks.flag(_OP, "act", act)
    _checks.tensor(_OP, "noise", noise, (n, 1, h, w), spec="[N, 1, H, W]", like=x)
    _checks.tensor(_OP, "noise_weight", noise_weight, (c,), spec="[C]", like=x)
    if bias is not None:
        _checks.tensor(_OP, "bias", bias, (c,), spec="[C]", like=x)
    backend = _backend.resolve(impl, x, op=_OP)
    if backend == "ref":
        return noise_inject_ref(x, noise, noise_weight, bias, act)
    acc = _backend.acc_dtype(x.dtype)
    return _noise_op(_backend.dense(x, backend), noise.to(x.dtype).contiguous(),
                     noise_weight.to(acc).contiguous(), None if bias is None else bias.to(acc).contiguous(), act,
                     backend)
