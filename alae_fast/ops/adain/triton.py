"""Modulated AdaIN in Triton, on the shared instance-norm rows of _triton_rows (MODULATED).

t = lrelu(x + wn[c]·noise[n] + b[c], 0.2);  y = (t − μ)·rstd·(1 + ys[n,c]) + yb[n,c].
The arithmetic and the chunk partials are in fp64 where the device runs fp64 at full rate
(_triton.exact_acc), since an fp32 x + wn·noise + b already loses rows that vary by a few ulps;
parameters, styles and stats stay in acc_dtype(x).
"""

from __future__ import annotations

from alae_fast.ops._triton import acc_dtype, check_activation, check_tensor, exact_acc
from alae_fast.ops._triton_rows import norm_rows_bwd, norm_rows_fwd


def _check(op, x, noise, noise_weight, bias, style):
    check_activation(op, "x", x, x.device)
    n, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    check_tensor(op, "noise", noise, x.device, x.dtype, (n, 1, h, w), "[N, 1, H, W]")
    check_tensor(op, "noise_weight", noise_weight, x.device, acc, (c,), "[C]")
    check_tensor(op, "bias", bias, x.device, acc, (c,), "[C]")
    check_tensor(op, "style", style, x.device, acc, (n, 2 * c), "[N, 2C]")


def adain_fwd(x, noise, noise_weight, bias, style, eps, slope):
    """(y [N,C,H,W] in x's layout, stats [N,2C] = (mean | rstd) in acc dtype)."""
    _check("adain_fwd", x, noise, noise_weight, bias, style)
    return norm_rows_fwd(x, noise, noise_weight, bias, style, eps, slope, exact_acc(x.dtype, x.device))


def adain_bwd(grad_y, x, noise, noise_weight, bias, style, stats, eps, slope):
    """(grad_x [N,C,H,W] in x's layout, grad_noise_weight [C], grad_bias [C], grad_style [N,2C])."""
    _check("adain_bwd", x, noise, noise_weight, bias, style)
    check_activation("adain_bwd", "grad_y", grad_y, x.device)
    check_tensor("adain_bwd", "grad_y", grad_y, x.device, x.dtype, x.shape, "[N, C, H, W]")
    check_tensor("adain_bwd", "stats", stats, x.device, style.dtype, style.shape, "[N, 2C]")
    return norm_rows_bwd(grad_y, x, noise, noise_weight, bias, style, stats, eps, slope,
                         exact_acc(x.dtype, x.device))
