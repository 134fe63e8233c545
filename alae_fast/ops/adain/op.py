"""Modulated AdaIN, the generator's layer epilogue.

t = lrelu(x + noise_weight[c]·noise[n,0] + bias[c], 0.2)
y = (t − mean_HW t)·rsqrt(var_HW t + 1e-8)·(1 + ys[n,c]) + yb[n,c],  style = [ys | yb].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alae_fast.ops import _backend, _checks
from alae_fast.ops.constants import LEAKY_SLOPE
from alae_fast.ops._autograd import noise_grad, reference_double_backward

EPS = 1e-8  # the instance norm's
SLOPE = LEAKY_SLOPE
_OP = "modulated_adain"


def modulated_adain_ref(x, noise, noise_weight, bias, style):
    """Pure-PyTorch reference; statistics in fp32 (fp64 for fp64 inputs)."""
    acc = _backend.acc_dtype(x.dtype)
    n, c = x.shape[:2]
    t = x.to(acc) + noise_weight.to(acc).view(1, c, 1, 1) * noise.to(acc) + bias.to(acc).view(1, c, 1, 1)
    t = F.leaky_relu(t, SLOPE)
    mean = t.mean((2, 3), keepdim=True)
    var = (t - mean).square().mean((2, 3), keepdim=True)
    scale, shift = style.to(acc).view(n, 2, c, 1, 1).unbind(1)
    y = (t - mean) * torch.rsqrt(var + EPS) * (1 + scale) + shift
    return y.to(x.dtype)


# Kernel contract (every backend):
#   adain_fwd(x [N,C,H,W], noise [N,1,H,W] (x.dtype), noise_weight [C], bias [C],
#             style [N,2C] (acc dtype)) -> (y [N,C,H,W], stats [N,2C] = (mean | rstd), acc dtype)
#   adain_bwd(grad_y, x, noise, noise_weight, bias, style, stats)
#             -> (grad_x [N,C,H,W], grad_noise_weight [C], grad_bias [C], grad_style [N,2C])
@_backend.kernel_op("modulated_adain", "adain_fwd", EPS, SLOPE)
def _adain_op(
    x: torch.Tensor, noise: torch.Tensor, noise_weight: torch.Tensor, bias: torch.Tensor,
    style: torch.Tensor, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backend.empty_dense_like(x), style.new_empty(style.shape)


@_backend.kernel_op("modulated_adain_backward", "adain_bwd", EPS, SLOPE)
def _adain_backward_op(
    grad_y: torch.Tensor, x: torch.Tensor, noise: torch.Tensor, noise_weight: torch.Tensor,
    bias: torch.Tensor, style: torch.Tensor, stats: torch.Tensor, backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (_backend.empty_dense_like(x), torch.empty_like(noise_weight),
            torch.empty_like(bias), torch.empty_like(style))


def _setup(ctx, inputs, output):
    x, noise, noise_weight, bias, style, backend = inputs
    ctx.save_for_backward(x, noise, noise_weight, bias, style, output[1])
    ctx.backend = backend
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the statistics output


def _backward(ctx, grad_y, _grad_stats):
    if grad_y is None:
        return None, None, None, None, None, None
    x, noise, noise_weight, bias, style, stats = ctx.saved_tensors
    grad_y = _backend.dense_like(grad_y, x)  # the kernels read grad_y in x's layout
    gx, gwn, gb, gs = _adain_backward_op(grad_y, x, noise, noise_weight, bias, style, stats, ctx.backend)
    g_noise = noise_grad(gx, noise_weight) if ctx.needs_input_grad[1] else None
    return gx, g_noise, gwn, gb, gs, None


def _setup_backward(ctx, inputs, output):
    grad_y, x, noise, noise_weight, bias, style, _stats, _backend_name = inputs
    ctx.save_for_backward(grad_y, x, noise, noise_weight, bias, style)


def _double_backward(ctx, ggx, ggwn, ggb, ggs):
    grad_y, x, noise, noise_weight, bias, style = ctx.saved_tensors
    (g_grad_y,), (gx, g_noise, gwn, gb, gs) = reference_double_backward(
        modulated_adain_ref, (x, noise, noise_weight, bias, style), (True, ctx.needs_input_grad[2], True, True, True),
        (grad_y,), (ggx, None, ggwn, ggb, ggs))
    return g_grad_y, gx, g_noise, gwn, gb, gs, None, None


_adain_op.register_autograd(_backward, setup_context=_setup)
_adain_backward_op.register_autograd(_double_backward, setup_context=_setup_backward)


def modulated_adain(x, noise, noise_weight, bias, style, *, impl: str = "auto"):
    """Fused noise + bias + leaky ReLU + instance norm + style modulation.

    x [N, C, H, W]; noise [N, 1, H, W]; noise_weight, bias [C]; style [N, 2C] = (ys | yb).
    Returns y [N, C, H, W] in x.dtype; statistics are fp32. Every backend gives gradients for
    x, noise (when it requires grad, as in a projector that optimises noise maps), noise_weight,
    bias and style, to second order.
    """
    n, c, h, w = _checks.activation(_OP, "x", x)
    _checks.tensor(_OP, "noise", noise, (n, 1, h, w), spec="[N, 1, H, W]", like=x)
    _checks.tensor(_OP, "noise_weight", noise_weight, (c,), spec="[C]", like=x)
    _checks.tensor(_OP, "bias", bias, (c,), spec="[C]", like=x)
    _checks.tensor(_OP, "style", style, (n, 2 * c), spec="[N, 2C]", like=x)
    backend = _backend.resolve(impl, x, op=_OP)
    if backend == "ref":
        return modulated_adain_ref(x, noise, noise_weight, bias, style)
    acc = _backend.acc_dtype(x.dtype)
    y, _ = _adain_op(_backend.dense(x, backend, _backend.ROW_NHWC_BACKENDS), noise.to(x.dtype).contiguous(),
                     noise_weight.to(acc).contiguous(), bias.to(acc).contiguous(), style.to(acc).contiguous(), backend)
    return y
