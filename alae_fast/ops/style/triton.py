"""Instance-norm style extraction in Triton, on the shared instance-norm rows of _triton_rows.

t = lrelu(x + b[c], 0.2);  y = (t − μ)·rsqrt(σ² + 1e-5);  stats = (μ | σ).
The backward takes gradients from y and from both statistics and recomputes t; the double backward
(here) runs one program per row tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (RowKernel, acc_dtype, check_activation, check_tensor, const, empty_act, leaky,
                                   leaky_grad, match_layout, pixel, row_base, tl_acc)
from alae_fast.ops._triton_rows import norm_rows_bwd, norm_rows_fwd


@triton.jit
def _bwd2_inputs(x_row, g_row, q_row, px, mask, b, ACC: tl.constexpr, HAS_GGX: tl.constexpr):
    """(x + b, grad_y, gg_x or 0) at offsets px of a [ROWS, BLOCK] tile, in ACC."""
    pre = tl.load(x_row + px, mask=mask, other=0).to(ACC) + b
    g = tl.load(g_row + px, mask=mask, other=0).to(ACC)
    q = tl.load(q_row + px, mask=mask, other=0).to(ACC) if HAS_GGX else 0.0
    return pre, g, q


@triton.jit
def _style_bwd2_kernel(
    grad_y_ptr,  # [N, C, H, W] x.dtype, x's layout
    grad_stats_ptr,  # [N, 2C] acc, (d mean | d std)
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    b_ptr,  # [C] acc
    stats_ptr,  # [N, 2C] acc, (mean | std)
    gg_x_ptr,  # [N, C, H, W] x.dtype, x's layout (read when HAS_GGX)
    gg_b_ptr,  # [C] acc (read when HAS_GGB)
    g_grad_y_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    g_stats_ptr,  # [N, 2C] acc, written
    g_x_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    part_b_ptr,  # [N*C] acc, written: Σ_hw g_x of each row
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    SPLIT,  # 1: one program per row tile
    CHUNK,  # HW
    HAS_GGX: tl.constexpr, HAS_GGB: tl.constexpr,
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr,
    ROWS: tl.constexpr, SINGLE: tl.constexpr,
):
    """Backward of style_bwd; the formulas are those of csrc/cpu/style.cpp's style_bwd2."""
    slope = const(SLOPE, ACC)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS]
    row_ok = rows < NC
    n, c = rows // C, rows % C
    b = tl.load(b_ptr + c, mask=row_ok, other=0)[:, None]
    qb = tl.load(gg_b_ptr + c, mask=row_ok, other=0)[:, None] if HAS_GGB else tl.zeros([ROWS, 1], ACC)
    mean = tl.load(stats_ptr + n * 2 * C + c, mask=row_ok, other=0)
    sd = tl.load(stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    r = 1.0 / tl.sqrt(sd * sd + const(EPS, ACC))
    mean = mean[:, None]
    base = row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    x_row, g_row, q_row = x_ptr + base, grad_y_ptr + base, gg_x_ptr + base
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    zero = tl.zeros([ROWS, BLOCK], ACC)
    acc_g, acc_gc, acc_u, acc_uc, acc_ug = zero, zero, zero, zero, zero
    for start in range(0, 1 if SINGLE else HW, BLOCK):
        mask = row_ok[:, None] & (start + cols < HW)
        px = pixel(start + cols, C, NHWC)
        pre, g, q = _bwd2_inputs(x_row, g_row, q_row, px, mask, b, ACC, HAS_GGX)
        cen = tl.where(mask, leaky(pre, slope) - mean, 0.0)
        u = tl.where(mask, (q + qb) * leaky_grad(pre, slope), 0.0)
        acc_g += g
        acc_gc += g * cen
        acc_u += u
        acc_uc += u * cen
        acc_ug += u * g
    s_g, s_u = tl.sum(acc_g, 1), tl.sum(acc_u, 1)
    mean_g, a, mean_u, uc = s_g / HW, tl.sum(acc_gc, 1) / HW, s_u / HW, tl.sum(acc_uc, 1) / HW
    u1 = (tl.sum(acc_ug, 1) - mean_g * s_u) / HW
    g_sd = tl.load(grad_stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    positive = sd > 0
    safe_sd = tl.where(positive, sd, 1.0)
    beta = tl.where(positive, g_sd / (HW * safe_sd), 0.0)
    r3 = r * r * r
    coef_c = 3.0 * r3 * r * r * a * uc - r3 * u1 - tl.where(positive, beta * uc / (safe_sd * safe_sd), 0.0)
    coef_g, coef_u = (-r3 * uc)[:, None], (beta - r3 * a)[:, None]
    coef_c, r, r3, uc2 = coef_c[:, None], r[:, None], r3[:, None], uc[:, None]
    mean_g2, mean_u2 = mean_g[:, None], mean_u[:, None]
    acc_d = tl.zeros([ROWS, BLOCK], ACC)
    for start in range(0, 1 if SINGLE else HW, BLOCK):
        mask = row_ok[:, None] & (start + cols < HW)
        px = pixel(start + cols, C, NHWC)
        pre, g, q = _bwd2_inputs(x_row, g_row, q_row, px, mask, b, ACC, HAS_GGX)
        d = leaky_grad(pre, slope)
        cen = leaky(pre, slope) - mean
        du = (q + qb) * d - mean_u2
        tl.store(g_grad_y_ptr + base + px,
                 (r * du - r3 * cen * uc2).to(g_grad_y_ptr.dtype.element_ty), mask=mask)
        gx = tl.where(mask, d * (coef_c * cen + coef_g * (g - mean_g2) + coef_u * du), 0.0)
        tl.store(g_x_ptr + base + px, gx.to(g_x_ptr.dtype.element_ty), mask=mask)
        acc_d += gx
    tl.store(g_stats_ptr + n * 2 * C + c, mean_u, mask=row_ok)
    tl.store(g_stats_ptr + n * 2 * C + C + c, tl.where(positive, uc / safe_sd, 0.0), mask=row_ok)
    tl.store(part_b_ptr + rows, tl.sum(acc_d, 1), mask=row_ok)


_bwd2 = RowKernel(_style_bwd2_kernel)


def _check_rows(op, x):
    check_activation(op, "x", x, x.device)
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"{op}: argument 'x' has no pixels (H = {x.shape[2]}, W = {x.shape[3]}); the per-row "
                         "mean and std are undefined, so H·W must be at least 1")


def style_fwd(x, bias, eps, slope):
    """(y [N,C,H,W] in x's layout, stats [N,2C] = (mean | std) in acc dtype)."""
    _check_rows("style_fwd", x)
    check_tensor("style_fwd", "bias", bias, x.device, acc_dtype(x.dtype), (x.shape[1],), "[C]")
    return norm_rows_fwd(x, None, None, bias, None, eps, slope, acc_dtype(x.dtype))


def style_bwd(grad_y, grad_stats, x, bias, stats, eps, slope):
    """(grad_x [N,C,H,W] in x's layout, grad_bias [C]) from grad_y [N,C,H,W] and grad_stats [N,2C] (acc)."""
    op = "style_bwd"
    _check_rows(op, x)
    n, c = x.shape[:2]
    acc = acc_dtype(x.dtype)
    check_tensor(op, "grad_y", grad_y, x.device, x.dtype, x.shape, "[N, C, H, W]")
    check_tensor(op, "grad_stats", grad_stats, x.device, acc, (n, 2 * c), "[N, 2C]")
    check_tensor(op, "bias", bias, x.device, acc, (c,), "[C]")
    check_tensor(op, "stats", stats, x.device, acc, (n, 2 * c), "[N, 2C]")
    grad_x, _, grad_bias, _ = norm_rows_bwd(grad_y, x, None, None, bias, grad_stats, stats, eps, slope, acc)
    return grad_x, grad_bias


def style_bwd2(grad_y, grad_stats, x, bias, stats, gg_x, gg_bias, eps, slope):
    """(g_grad_y [N,C,H,W], g_grad_stats [N,2C], g_x [N,C,H,W], g_bias [C]): the backward of style_bwd
    for the cotangents gg_x [N,C,H,W] and gg_bias [C] of its outputs (None: zeros). One program per
    row (tile); activations in x's layout."""
    op = "style_bwd2"
    _check_rows(op, x)
    n, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    check_tensor(op, "grad_y", grad_y, x.device, x.dtype, x.shape, "[N, C, H, W]")
    check_tensor(op, "grad_stats", grad_stats, x.device, acc, (n, 2 * c), "[N, 2C]")
    check_tensor(op, "bias", bias, x.device, acc, (c,), "[C]")
    check_tensor(op, "stats", stats, x.device, acc, (n, 2 * c), "[N, 2C]")
    if gg_x is not None:
        check_tensor(op, "gg_x", gg_x, x.device, x.dtype, x.shape, "[N, C, H, W]")
    if gg_bias is not None:
        check_tensor(op, "gg_bias", gg_bias, x.device, acc, (c,), "[C]")
    g_grad_y, g_x = empty_act(x), empty_act(x)
    g_stats = torch.zeros((n, 2 * c), dtype=acc, device=x.device)
    part_b = torch.zeros((n, c), dtype=acc, device=x.device)
    if x.numel():
        grad_y = match_layout(grad_y, x)
        gg_x = None if gg_x is None else match_layout(gg_x, x)
        _bwd2(n * c, h * w, grad_y, grad_stats, x, bias, stats, x if gg_x is None else gg_x,
              bias if gg_bias is None else gg_bias, g_grad_y, g_stats, g_x, part_b, c,
              EPS=float(eps), SLOPE=float(slope), HAS_GGX=gg_x is not None, HAS_GGB=gg_bias is not None,
              ACC=tl_acc(x.dtype), NHWC=not x.is_contiguous())
    return g_grad_y, g_stats, g_x, part_b.sum(0)
