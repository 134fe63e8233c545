"""Modulated AdaIN (SPEC §7.1) in Triton: one program per tile of (n, c) rows.

t = lrelu(x + wn[c]·noise[n] + b[c], 0.2);  y = (t − μ)·rstd·(1 + ys[n,c]) + yb[n,c].
The backward recomputes t from x and noise instead of storing it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (RowKernel, acc_dtype, check_activation, check_tensor, const, leaky,
                                          leaky_grad, row_moments, tl_acc, welford_combine,
                                          welford_update)



@triton.jit
def _pre(x_row, noise_row, cols, mask, wn, b, ACC: tl.constexpr):
    """x + wn·noise + b for a [ROWS, BLOCK] tile, in ACC."""
    x = tl.load(x_row + cols, mask=mask, other=0).to(ACC)
    noise = tl.load(noise_row + cols, mask=mask, other=0).to(ACC)
    return x + wn * noise + b


@triton.jit
def _adain_fwd_kernel(
    x_ptr,  # [N*C, HW] x.dtype
    noise_ptr,  # [N, HW] x.dtype
    wn_ptr,  # [C] acc
    b_ptr,  # [C] acc
    style_ptr,  # [N, 2C] acc, (ys | yb)
    y_ptr,  # [N*C, HW] x.dtype, written
    stats_ptr,  # [N, 2C] acc, (mean | rstd), written
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
    wn = tl.load(wn_ptr + c, mask=row_ok, other=0)[:, None]
    b = tl.load(b_ptr + c, mask=row_ok, other=0)[:, None]
    gain = 1 + tl.load(style_ptr + n * 2 * C + c, mask=row_ok, other=0)
    shift = tl.load(style_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    x_row = x_ptr + rows[:, None] * HW  # [ROWS, 1]
    y_row = y_ptr + rows[:, None] * HW
    noise_row = noise_ptr + n[:, None] * HW
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        t = leaky(_pre(x_row, noise_row, cols, mask, wn, b, ACC), slope)
        mean, centered, var = row_moments(t, mask, HW)
        rstd = 1.0 / tl.sqrt(var + const(EPS, ACC))
        y = centered * (gain * rstd)[:, None] + shift[:, None]
        tl.store(y_row + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # Pass 1: per-lane Welford statistics, merged across lanes at the end.
        lane_mean = tl.zeros([ROWS, BLOCK], ACC)
        lane_m2 = tl.zeros([ROWS, BLOCK], ACC)
        lane_n = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(0, HW, BLOCK):
            mask = row_ok[:, None] & (start + cols < HW)
            t = leaky(_pre(x_row + start, noise_row + start, cols, mask, wn, b, ACC), slope)
            lane_mean, lane_m2, lane_n = welford_update(t, mask, lane_mean, lane_m2, lane_n)
        mean, m2, _ = tl.reduce((lane_mean, lane_m2, lane_n), 1, welford_combine)
        rstd = 1.0 / tl.sqrt(m2 / HW + const(EPS, ACC))
        # Pass 2: normalise and modulate.
        for start in range(0, HW, BLOCK):
            mask = row_ok[:, None] & (start + cols < HW)
            t = leaky(_pre(x_row + start, noise_row + start, cols, mask, wn, b, ACC), slope)
            y = (t - mean[:, None]) * (gain * rstd)[:, None] + shift[:, None]
            tl.store(y_row + start + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(stats_ptr + n * 2 * C + c, mean, mask=row_ok)
    tl.store(stats_ptr + n * 2 * C + C + c, rstd, mask=row_ok)


@triton.jit
def _adain_bwd_kernel(
    grad_y_ptr,  # [N*C, HW] x.dtype
    x_ptr,  # [N*C, HW] x.dtype
    noise_ptr,  # [N, HW] x.dtype
    wn_ptr,  # [C] acc
    b_ptr,  # [C] acc
    style_ptr,  # [N, 2C] acc, (ys | yb)
    stats_ptr,  # [N, 2C] acc, (mean | rstd)
    grad_x_ptr,  # [N*C, HW] x.dtype, written
    grad_style_ptr,  # [N, 2C] acc, written
    part_wn_ptr,  # [N*C] acc, written: Σ_hw dpre·noise of each row
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
    wn = tl.load(wn_ptr + c, mask=row_ok, other=0)[:, None]
    b = tl.load(b_ptr + c, mask=row_ok, other=0)[:, None]
    gain = 1 + tl.load(style_ptr + n * 2 * C + c, mask=row_ok, other=0)
    mean = tl.load(stats_ptr + n * 2 * C + c, mask=row_ok, other=0)[:, None]
    rstd = tl.load(stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)[:, None]
    x_row = x_ptr + rows[:, None] * HW  # [ROWS, 1]
    g_row = grad_y_ptr + rows[:, None] * HW
    gx_row = grad_x_ptr + rows[:, None] * HW
    noise_row = noise_ptr + n[:, None] * HW
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        pre = _pre(x_row, noise_row, cols, mask, wn, b, ACC)
        xhat = (leaky(pre, slope) - mean) * rstd
        g = tl.load(g_row + cols, mask=mask, other=0).to(ACC)
        sum_g = tl.sum(g, 1)
        sum_gx = tl.sum(tl.where(mask, g * xhat, 0.0), 1)
        dt = (gain[:, None] * rstd) * (g - (sum_g / HW)[:, None] - xhat * (sum_gx / HW)[:, None])
        dpre = tl.where(mask, dt * leaky_grad(pre, slope), 0.0)
        tl.store(gx_row + cols, dpre.to(grad_x_ptr.dtype.element_ty), mask=mask)
        noise = tl.load(noise_row + cols, mask=mask, other=0).to(ACC)
        sum_dpre = tl.sum(dpre, 1)
        sum_dpre_noise = tl.sum(dpre * noise, 1)
    else:
        # Pass 1: Σ g and Σ g·xhat.
        acc_g = tl.zeros([ROWS, BLOCK], ACC)
        acc_gx = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(0, HW, BLOCK):
            mask = row_ok[:, None] & (start + cols < HW)
            pre = _pre(x_row + start, noise_row + start, cols, mask, wn, b, ACC)
            g = tl.load(g_row + start + cols, mask=mask, other=0).to(ACC)
            acc_g += g
            acc_gx += tl.where(mask, g * (leaky(pre, slope) - mean) * rstd, 0.0)
        sum_g = tl.sum(acc_g, 1)
        sum_gx = tl.sum(acc_gx, 1)
        # Pass 2: grad_x and the per-row sums for grad_noise_weight and grad_bias.
        acc_d = tl.zeros([ROWS, BLOCK], ACC)
        acc_dn = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(0, HW, BLOCK):
            mask = row_ok[:, None] & (start + cols < HW)
            pre = _pre(x_row + start, noise_row + start, cols, mask, wn, b, ACC)
            xhat = (leaky(pre, slope) - mean) * rstd
            g = tl.load(g_row + start + cols, mask=mask, other=0).to(ACC)
            dt = (gain[:, None] * rstd) * (g - (sum_g / HW)[:, None] - xhat * (sum_gx / HW)[:, None])
            dpre = tl.where(mask, dt * leaky_grad(pre, slope), 0.0)
            tl.store(gx_row + start + cols, dpre.to(grad_x_ptr.dtype.element_ty), mask=mask)
            noise = tl.load(noise_row + start + cols, mask=mask, other=0).to(ACC)
            acc_d += dpre
            acc_dn += dpre * noise
        sum_dpre = tl.sum(acc_d, 1)
        sum_dpre_noise = tl.sum(acc_dn, 1)
    tl.store(grad_style_ptr + n * 2 * C + c, sum_gx, mask=row_ok)
    tl.store(grad_style_ptr + n * 2 * C + C + c, sum_g, mask=row_ok)
    tl.store(part_wn_ptr + rows, sum_dpre_noise, mask=row_ok)
    tl.store(part_b_ptr + rows, sum_dpre, mask=row_ok)


_fwd = RowKernel(_adain_fwd_kernel)
_bwd = RowKernel(_adain_bwd_kernel)


def _check(op, x, noise, noise_weight, bias, style):
    check_activation(op, "x", x, x.device)
    n, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    check_tensor(op, "noise", noise, x.device, x.dtype, (n, 1, h, w), "[N, 1, H, W]")
    check_tensor(op, "noise_weight", noise_weight, x.device, acc, (c,), "[C]")
    check_tensor(op, "bias", bias, x.device, acc, (c,), "[C]")
    check_tensor(op, "style", style, x.device, acc, (n, 2 * c), "[N, 2C]")


def adain_fwd(x, noise, noise_weight, bias, style, eps, slope):
    """(y [N,C,H,W], stats [N,2C] = (mean | rstd) in acc dtype)."""
    _check("adain_fwd", x, noise, noise_weight, bias, style)
    n, c, h, w = x.shape
    y = torch.empty_like(x)
    stats = torch.empty_like(style)
    if x.numel():
        _fwd(n * c, h * w, x, noise, noise_weight, bias, style, y, stats, c, EPS=float(eps), SLOPE=float(slope),
             ACC=tl_acc(x.dtype))
    return y, stats


def adain_bwd(grad_y, x, noise, noise_weight, bias, style, stats, eps, slope):
    """(grad_x [N,C,H,W], grad_noise_weight [C], grad_bias [C], grad_style [N,2C])."""
    _check("adain_bwd", x, noise, noise_weight, bias, style)
    check_tensor("adain_bwd", "grad_y", grad_y, x.device, x.dtype, x.shape, "[N, C, H, W]")
    check_tensor("adain_bwd", "stats", stats, x.device, style.dtype, style.shape, "[N, 2C]")
    n, c, h, w = x.shape
    grad_x = torch.empty_like(x)
    grad_style = torch.zeros_like(style)
    # Per-(n, c) partial sums, reduced over N afterwards: deterministic, no atomics.
    part_wn = torch.zeros((n, c), dtype=style.dtype, device=x.device)
    part_b = torch.zeros((n, c), dtype=style.dtype, device=x.device)
    if x.numel():
        _bwd(n * c, h * w, grad_y, x, noise, noise_weight, bias, style, stats, grad_x, grad_style, part_wn, part_b,
             c, EPS=float(eps), SLOPE=float(slope), ACC=tl_acc(x.dtype))
    return grad_x, part_wn.sum(0), part_b.sum(0), grad_style
