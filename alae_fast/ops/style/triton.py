"""Instance-norm style extraction (SPEC §7.2) in Triton: one program per tile of (n, c) rows.

t = lrelu(x + b[c], 0.2);  y = (t − μ)·rsqrt(σ² + 1e-5);  stats = (μ | σ).
The backward takes gradients from y and from both statistics and recomputes t.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (RowKernel, acc_dtype, check_activation, check_tensor, const, leaky,
                                          leaky_grad, row_moments, tl_acc, welford_combine, welford_update)



@triton.jit
def _style_fwd_kernel(
    x_ptr,  # [N*C, HW] x.dtype
    b_ptr,  # [C] acc
    y_ptr,  # [N*C, HW] x.dtype, written
    stats_ptr,  # [N, 2C] acc, (mean | std), written
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
    SINGLE: tl.constexpr,
):
    slope = const(SLOPE, ACC)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS]
    row_ok = rows < NC
    n, c = rows // C, rows % C
    b = tl.load(b_ptr + c, mask=row_ok, other=0)[:, None]
    x_row = x_ptr + rows[:, None] * HW  # [ROWS, 1]
    y_row = y_ptr + rows[:, None] * HW
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        t = leaky(tl.load(x_row + cols, mask=mask, other=0).to(ACC) + b, slope)
        mean, centered, var = row_moments(t, mask, HW)
        rstd = 1.0 / tl.sqrt(var + const(EPS, ACC))
        tl.store(y_row + cols, (centered * rstd[:, None]).to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # Pass 1: per-lane Welford statistics, merged across lanes at the end.
        lane_mean = tl.zeros([ROWS, BLOCK], ACC)
        lane_m2 = tl.zeros([ROWS, BLOCK], ACC)
        lane_n = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(0, HW, BLOCK):
            mask = row_ok[:, None] & (start + cols < HW)
            t = leaky(tl.load(x_row + start + cols, mask=mask, other=0).to(ACC) + b, slope)
            lane_mean, lane_m2, lane_n = welford_update(t, mask, lane_mean, lane_m2, lane_n)
        mean, m2, _ = tl.reduce((lane_mean, lane_m2, lane_n), 1, welford_combine)
        var = m2 / HW
        rstd = 1.0 / tl.sqrt(var + const(EPS, ACC))
        # Pass 2: normalise.
        for start in range(0, HW, BLOCK):
            mask = row_ok[:, None] & (start + cols < HW)
            t = leaky(tl.load(x_row + start + cols, mask=mask, other=0).to(ACC) + b, slope)
            y = (t - mean[:, None]) * rstd[:, None]
            tl.store(y_row + start + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(stats_ptr + n * 2 * C + c, mean, mask=row_ok)
    tl.store(stats_ptr + n * 2 * C + C + c, tl.sqrt(var), mask=row_ok)


@triton.jit
def _style_bwd_kernel(
    grad_y_ptr,  # [N*C, HW] x.dtype
    grad_stats_ptr,  # [N, 2C] acc, (d mean | d std)
    x_ptr,  # [N*C, HW] x.dtype
    b_ptr,  # [C] acc
    stats_ptr,  # [N, 2C] acc, (mean | std)
    grad_x_ptr,  # [N*C, HW] x.dtype, written
    part_b_ptr,  # [N*C] acc, written: Σ_hw dpre of each row
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
    SINGLE: tl.constexpr,
):
    slope = const(SLOPE, ACC)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS]
    row_ok = rows < NC
    n, c = rows // C, rows % C
    b = tl.load(b_ptr + c, mask=row_ok, other=0)[:, None]
    mean = tl.load(stats_ptr + n * 2 * C + c, mask=row_ok, other=0)
    std = tl.load(stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    rstd = (1.0 / tl.sqrt(std * std + const(EPS, ACC)))[:, None]
    # Gradients reaching t through the mean and the std outputs; d std / d t is 0 where std is 0.
    g_mean = (tl.load(grad_stats_ptr + n * 2 * C + c, mask=row_ok, other=0) / HW)[:, None]
    g_std = tl.load(grad_stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    g_std = tl.where(std > 0, g_std / (HW * tl.where(std > 0, std, 1.0)), 0.0)[:, None]
    mean = mean[:, None]
    x_row = x_ptr + rows[:, None] * HW  # [ROWS, 1]
    g_row = grad_y_ptr + rows[:, None] * HW
    gx_row = grad_x_ptr + rows[:, None] * HW
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        pre = tl.load(x_row + cols, mask=mask, other=0).to(ACC) + b
        centered = leaky(pre, slope) - mean
        g = tl.load(g_row + cols, mask=mask, other=0).to(ACC)
        mean_g = (tl.sum(g, 1) / HW)[:, None]
        mean_gx = (tl.sum(tl.where(mask, g * centered * rstd, 0.0), 1) / HW)[:, None]
        dt = rstd * (g - mean_g - centered * rstd * mean_gx) + g_mean + g_std * centered
        dpre = tl.where(mask, dt * leaky_grad(pre, slope), 0.0)
        tl.store(gx_row + cols, dpre.to(grad_x_ptr.dtype.element_ty), mask=mask)
        sum_dpre = tl.sum(dpre, 1)
    else:
        # Pass 1: Σ g and Σ g·xhat.
        acc_g = tl.zeros([ROWS, BLOCK], ACC)
        acc_gx = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(0, HW, BLOCK):
            mask = row_ok[:, None] & (start + cols < HW)
            pre = tl.load(x_row + start + cols, mask=mask, other=0).to(ACC) + b
            g = tl.load(g_row + start + cols, mask=mask, other=0).to(ACC)
            acc_g += g
            acc_gx += tl.where(mask, g * (leaky(pre, slope) - mean) * rstd, 0.0)
        mean_g = (tl.sum(acc_g, 1) / HW)[:, None]
        mean_gx = (tl.sum(acc_gx, 1) / HW)[:, None]
        # Pass 2: grad_x and the per-row sum for grad_bias.
        acc_d = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(0, HW, BLOCK):
            mask = row_ok[:, None] & (start + cols < HW)
            pre = tl.load(x_row + start + cols, mask=mask, other=0).to(ACC) + b
            centered = leaky(pre, slope) - mean
            g = tl.load(g_row + start + cols, mask=mask, other=0).to(ACC)
            dt = rstd * (g - mean_g - centered * rstd * mean_gx) + g_mean + g_std * centered
            dpre = tl.where(mask, dt * leaky_grad(pre, slope), 0.0)
            tl.store(gx_row + start + cols, dpre.to(grad_x_ptr.dtype.element_ty), mask=mask)
            acc_d += dpre
        sum_dpre = tl.sum(acc_d, 1)
    tl.store(part_b_ptr + rows, sum_dpre, mask=row_ok)


@triton.jit
def _style_bwd2_kernel(
    grad_y_ptr,  # [N*C, HW] x.dtype
    grad_stats_ptr,  # [N, 2C] acc, (d mean | d std)
    x_ptr,  # [N*C, HW] x.dtype
    b_ptr,  # [C] acc
    stats_ptr,  # [N, 2C] acc, (mean | std)
    gg_x_ptr,  # [N*C, HW] x.dtype (read when HAS_GGX)
    gg_b_ptr,  # [C] acc (read when HAS_GGB)
    g_grad_y_ptr,  # [N*C, HW] x.dtype, written
    g_stats_ptr,  # [N, 2C] acc, written
    g_x_ptr,  # [N*C, HW] x.dtype, written
    part_b_ptr,  # [N*C] acc, written: Σ_hw g_x of each row
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    HAS_GGX: tl.constexpr, HAS_GGB: tl.constexpr,
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
    SINGLE: tl.constexpr,
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
    x_row = x_ptr + rows[:, None] * HW  # [ROWS, 1]
    g_row = grad_y_ptr + rows[:, None] * HW
    q_row = gg_x_ptr + rows[:, None] * HW
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    acc_g = tl.zeros([ROWS, BLOCK], ACC)
    acc_gc = tl.zeros([ROWS, BLOCK], ACC)
    acc_u = tl.zeros([ROWS, BLOCK], ACC)
    acc_uc = tl.zeros([ROWS, BLOCK], ACC)
    acc_ug = tl.zeros([ROWS, BLOCK], ACC)
    for start in range(0, 1 if SINGLE else HW, BLOCK):
        mask = row_ok[:, None] & (start + cols < HW)
        pre = tl.load(x_row + start + cols, mask=mask, other=0).to(ACC) + b
        g = tl.load(g_row + start + cols, mask=mask, other=0).to(ACC)
        q = tl.load(q_row + start + cols, mask=mask, other=0).to(ACC) if HAS_GGX else 0.0
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
        pre = tl.load(x_row + start + cols, mask=mask, other=0).to(ACC) + b
        g = tl.load(g_row + start + cols, mask=mask, other=0).to(ACC)
        q = tl.load(q_row + start + cols, mask=mask, other=0).to(ACC) if HAS_GGX else 0.0
        d = leaky_grad(pre, slope)
        cen = leaky(pre, slope) - mean
        du = (q + qb) * d - mean_u2
        tl.store(g_grad_y_ptr + rows[:, None] * HW + start + cols,
                 (r * du - r3 * cen * uc2).to(g_grad_y_ptr.dtype.element_ty), mask=mask)
        gx = tl.where(mask, d * (coef_c * cen + coef_g * (g - mean_g2) + coef_u * du), 0.0)
        tl.store(g_x_ptr + rows[:, None] * HW + start + cols, gx.to(g_x_ptr.dtype.element_ty), mask=mask)
        acc_d += gx
    tl.store(g_stats_ptr + n * 2 * C + c, mean_u, mask=row_ok)
    tl.store(g_stats_ptr + n * 2 * C + C + c, tl.where(positive, uc / safe_sd, 0.0), mask=row_ok)
    tl.store(part_b_ptr + rows, tl.sum(acc_d, 1), mask=row_ok)


_fwd = RowKernel(_style_fwd_kernel)
_bwd = RowKernel(_style_bwd_kernel)
_bwd2 = RowKernel(_style_bwd2_kernel)


def _check_rows(op, x):
    check_activation(op, "x", x, x.device)
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"{op}: argument 'x' has no pixels (H = {x.shape[2]}, W = {x.shape[3]}); the per-row "
                         "mean and std are undefined, so H·W must be at least 1")


def style_fwd(x, bias, eps, slope):
    """(y [N,C,H,W], stats [N,2C] = (mean | std) in acc dtype)."""
    _check_rows("style_fwd", x)
    n, c, h, w = x.shape
    check_tensor("style_fwd", "bias", bias, x.device, acc_dtype(x.dtype), (c,), "[C]")
    y = torch.empty_like(x)
    stats = torch.empty((n, 2 * c), dtype=bias.dtype, device=x.device)
    if x.numel():
        _fwd(n * c, h * w, x, bias, y, stats, c, EPS=float(eps), SLOPE=float(slope), ACC=tl_acc(x.dtype))
    return y, stats


def style_bwd(grad_y, grad_stats, x, bias, stats, eps, slope):
    """(grad_x [N,C,H,W], grad_bias [C]) from grad_y [N,C,H,W] and grad_stats [N,2C] (acc)."""
    op = "style_bwd"
    _check_rows(op, x)
    n, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    check_tensor(op, "grad_y", grad_y, x.device, x.dtype, x.shape, "[N, C, H, W]")
    check_tensor(op, "grad_stats", grad_stats, x.device, acc, (n, 2 * c), "[N, 2C]")
    check_tensor(op, "bias", bias, x.device, acc, (c,), "[C]")
    check_tensor(op, "stats", stats, x.device, acc, (n, 2 * c), "[N, 2C]")
    grad_x = torch.empty_like(x)
    # Per-(n, c) partial sums, reduced over N afterwards: deterministic, no atomics.
    part_b = torch.zeros((n, c), dtype=acc, device=x.device)
    if x.numel():
        _bwd(n * c, h * w, grad_y, grad_stats, x, bias, stats, grad_x, part_b, c, EPS=float(eps), SLOPE=float(slope),
             ACC=tl_acc(x.dtype))
    return grad_x, part_b.sum(0)


def style_bwd2(grad_y, grad_stats, x, bias, stats, gg_x, gg_bias, eps, slope):
    """(g_grad_y [N,C,H,W], g_grad_stats [N,2C], g_x [N,C,H,W], g_bias [C]): the backward of style_bwd
    for the cotangents gg_x [N,C,H,W] and gg_bias [C] of its outputs (None: zeros)."""
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
    g_grad_y, g_x = torch.empty_like(x), torch.empty_like(x)
    g_stats = torch.zeros((n, 2 * c), dtype=acc, device=x.device)
    part_b = torch.zeros((n, c), dtype=acc, device=x.device)
    if x.numel():
        _bwd2(n * c, h * w, grad_y, grad_stats, x, bias, stats, x if gg_x is None else gg_x,
              bias if gg_bias is None else gg_bias, g_grad_y, g_stats, g_x, part_b, c,
              EPS=float(eps), SLOPE=float(slope), HAS_GGX=gg_x is not None, HAS_GGB=gg_bias is not None,
              ACC=tl_acc(x.dtype))
    return g_grad_y, g_stats, g_x, part_b.sum(0)
