"""Instance-norm style extraction, the encoder's layer epilogue.

t = lrelu(x + bias[c], 0.2);  y = (t − μ)·rsqrt(σ² + 1e-5);  style = [μ | σ]  (σ = sqrt(σ²), no eps).
R1 differentiates through this twice, so it has gradients of second order.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from alae_fast.ops import _backend, _checks
from alae_fast.ops.constants import LEAKY_SLOPE

EPS = 1e-5  # the instance norm's
SLOPE = LEAKY_SLOPE
_OP = "style_extract"


def _safe_sqrt(var):
    # sqrt whose gradient at 0 is 0 rather than inf·0 = NaN (H·W = 1 or constant rows); a NaN variance
    # (a NaN or inf in the row) gives a NaN std, as on every backend: var·0 is 0 at 0 and NaN at NaN.
    positive = var > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, var, torch.ones_like(var))), var * 0)


def _style_stats_ref(x, bias):
    """(y in x.dtype, stats [N, 2C] = (μ | σ) in the accumulation dtype)."""
    acc = _backend.acc_dtype(x.dtype)
    c = x.shape[1]
    t = F.leaky_relu(x.to(acc) + bias.to(acc).view(1, c, 1, 1), SLOPE)
    mean = t.mean((2, 3))
    centered = t - mean[:, :, None, None]
    var = centered.square().mean((2, 3))
    y = centered * torch.rsqrt(var + EPS)[:, :, None, None]
    return y.to(x.dtype), torch.cat([mean, _safe_sqrt(var)], dim=1)


def style_extract_ref(x, bias):
    """Pure-PyTorch reference; returns (y [N,C,H,W], style [N,2C]) in x.dtype."""
    y, stats = _style_stats_ref(x, bias)
    return y, stats.to(x.dtype)


# Kernel contract (every backend):
#   style_fwd(x [N,C,H,W], bias [C]) -> (y [N,C,H,W], stats [N,2C] = (mean | std), acc dtype)
#   style_bwd(grad_y [N,C,H,W], grad_stats [N,2C] acc, x, bias, stats) -> (grad_x [N,C,H,W], grad_bias [C])
#   style_bwd2(grad_y, grad_stats, x, bias, stats, gg_x [N,C,H,W] or None, gg_bias [C] acc or None, eps, slope)
#             -> (g_grad_y [N,C,H,W], g_grad_stats [N,2C] acc, g_x [N,C,H,W], g_bias [C]): the backward of style_bwd
@_backend.kernel_op("style_extract", "style_fwd", EPS, SLOPE)
def _style_op(x: torch.Tensor, bias: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _backend.empty_dense_like(x), bias.new_empty((x.shape[0], 2 * x.shape[1]))


@_backend.kernel_op("style_extract_backward", "style_bwd", EPS, SLOPE)
def _style_backward_op(
    grad_y: torch.Tensor, grad_stats: torch.Tensor, x: torch.Tensor, bias: torch.Tensor,
    stats: torch.Tensor, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backend.empty_dense_like(x), torch.empty_like(bias)


def _setup(ctx, inputs, output):
    x, bias, backend = inputs
    ctx.save_for_backward(x, bias, output[1])
    ctx.backend = backend


def _backward(ctx, grad_y, grad_stats):
    x, bias, stats = ctx.saved_tensors
    grad_y = _backend.dense_like(grad_y, x)  # the kernels read grad_y in x's layout
    gx, gb = _style_backward_op(grad_y, grad_stats.to(stats.dtype).contiguous(), x, bias, stats, ctx.backend)
    return gx, gb, None


@_backend.kernel_op("style_extract_double_backward", "style_bwd2", EPS, SLOPE)
def _style_double_backward_op(
    grad_y: torch.Tensor, grad_stats: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, stats: torch.Tensor,
    gg_x: Optional[torch.Tensor], gg_bias: Optional[torch.Tensor], backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    like_x = _backend.empty_dense_like(x)
    return like_x, torch.empty_like(grad_stats), torch.empty_like(like_x), torch.empty_like(bias)


def _setup_backward(ctx, inputs, output):
    grad_y, grad_stats, x, bias, stats, backend = inputs
    ctx.save_for_backward(grad_y, grad_stats, x, bias, stats)
    ctx.backend = backend
    ctx.set_materialize_grads(False)  # the kernel takes a missing cotangent as zeros


def _double_backward(ctx, ggx, ggb):
    # The kernel differentiates through the statistics as functions of x, so `stats` gets no gradient.
    if ggx is None and ggb is None:
        return None, None, None, None, None, None
    grad_y, grad_stats, x, bias, stats = ctx.saved_tensors
    g_grad_y, g_grad_stats, gx, gb = _style_double_backward_op(
        # The CUDA double-backward kernels read NCHW: an NHWC x is copied there (Triton reads it in place).
        _backend.dense(grad_y, ctx.backend), grad_stats, _backend.dense(x, ctx.backend), bias, stats,
        None if ggx is None else _backend.dense(ggx, ctx.backend), ggb,
        ctx.backend)
    return g_grad_y, g_grad_stats, gx, gb, None, None


_style_op.register_autograd(_backward, setup_context=_setup)
_style_backward_op.register_autograd(_double_backward, setup_context=_setup_backward)


def style_extract(x, bias, *, impl: str = "auto", style_dtype: torch.dtype | None = None):
    """Fused bias + leaky ReLU + instance-norm statistics + normalisation.

    x [N, C, H, W] with H·W ≥ 1 (the statistics of an empty row are undefined, so every backend
    refuses H·W = 0; N = 0 and C = 0 give empty results); bias [C]. Returns (y [N, C, H, W] in x.dtype,
    style [N, 2C] = (mean | std) in style_dtype, default x.dtype); statistics are computed in fp32.
    Differentiable twice (R1).
    """
    _, c, h, w = _checks.activation(_OP, "x", x)
    _checks.nonempty_rows(_OP, "x", h, w)
    _checks.tensor(_OP, "bias", bias, (c,), spec="[C]", like=x)
    style_dtype = style_dtype or x.dtype
    backend = _backend.resolve(impl, x, op=_OP)
    if backend == "ref":
        y, stats = _style_stats_ref(x, bias)
        return y, stats.to(style_dtype)
    acc = _backend.acc_dtype(x.dtype)
    y, stats = _style_op(_backend.dense(x, backend, _backend.ROW_NHWC_BACKENDS), bias.to(acc).contiguous(), backend)
    return y, stats.to(style_dtype)
