"""Modulated AdaIN in Triton: one program per tile of (n, c) rows, or per chunk of a long row.

t = lrelu(x + wn[c]·noise[n] + b[c], 0.2);  y = (t − μ)·rstd·(1 + ys[n,c]) + yb[n,c].
Rows split over SPLIT programs (see _triton.row_split) run the forward as chunk moments, then a
fixed-order Chan merge and the normalisation (2 passes over x); the backward as chunk sums of
g and g·x̂, then grad_x (3 passes). The backward recomputes t from x and noise instead of storing it.
The arithmetic and the chunk partials are in ACC: fp64 where the device runs fp64 at full rate
(_triton.exact_acc), since an fp32 x + wn·noise + b already loses rows that vary by a few ulps;
parameters, styles and stats stay in acc_dtype(x).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (RowKernel, acc_dtype, centred_grad_terms, check_activation, check_tensor,
                                   chunk_partials, combine_moments, combine_sums, const, empty_act, exact_acc,
                                   first_chunk, kink_base, kink_terms, leaky, leaky_grad, match_layout, narrow, pixel,
                                   row_base, row_chunk, row_moments, row_split, settle_mean, tl_acc, welford_combine,
                                   welford_update)


@triton.jit
def _pre(x_row, noise_row, idx, mask, wn, b, C, ACC: tl.constexpr, NHWC: tl.constexpr):
    """x + wn·noise + b at pixels idx of a [ROWS, BLOCK] tile, in ACC."""
    x = tl.load(x_row + pixel(idx, C, NHWC), mask=mask, other=0).to(ACC)
    noise = tl.load(noise_row + idx, mask=mask, other=0).to(ACC)
    return x + wn * noise + b


@triton.jit
def _params(rows, row_ok, wn_ptr, b_ptr, style_ptr, C):
    """(wn [R, 1], b [R, 1], 1 + ys [R], yb [R]) of rows [R]."""
    n, c = rows // C, rows % C
    wn = tl.load(wn_ptr + c, mask=row_ok, other=0)[:, None]
    b = tl.load(b_ptr + c, mask=row_ok, other=0)[:, None]
    gain = 1 + tl.load(style_ptr + n * 2 * C + c, mask=row_ok, other=0)
    shift = tl.load(style_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    return wn, b, gain, shift


@triton.jit
def _row_pivot(x_row, noise_row, row_ok, wn, b, slope, C, ACC: tl.constexpr, NHWC: tl.constexpr):
    """t at pixel 0 of each row [ROWS], 0 where not finite: the moments are taken of t − pivot, so
    their sums stay near the spread of the row whatever its mean."""
    t0 = tl.sum(leaky(_pre(x_row, noise_row, tl.zeros([1, 1], tl.int32), row_ok[:, None], wn, b, C, ACC, NHWC),
                      slope), 1)
    return tl.where(t0 - t0 == 0, t0, 0.0)


@triton.jit
def _chunk_moments(x_row, noise_row, cols, row_ok, lo, hi, wn, b, slope, pivot, C, ACC: tl.constexpr,
                   NHWC: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """Welford (mean, M2, count) and Σ, each [ROWS], of t − pivot over pixels [lo, hi): per lane,
    then merged across lanes."""
    lane_mean = tl.zeros([ROWS, BLOCK], ACC)
    lane_m2 = tl.zeros([ROWS, BLOCK], ACC)
    lane_n = tl.zeros([ROWS, BLOCK], ACC)
    lane_sum = tl.zeros([ROWS, BLOCK], ACC)
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        t = leaky(_pre(x_row, noise_row, start + cols, mask, wn, b, C, ACC, NHWC), slope) - pivot[:, None]
        lane_mean, lane_m2, lane_n = welford_update(t, mask, lane_mean, lane_m2, lane_n)
        lane_sum += tl.where(mask, t, 0.0)
    mean, m2, count = tl.reduce((lane_mean, lane_m2, lane_n), 1, welford_combine)
    return mean, m2, count, tl.sum(lane_sum, 1)


@triton.jit
def _adain_moments_kernel(
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    noise_ptr,  # [N, HW] x.dtype
    wn_ptr,  # [C] acc
    b_ptr,  # [C] acc
    style_ptr,  # [N, 2C] acc
    mean_ptr,  # [N*C, SPLIT] ACC, written: chunk means of t − pivot (see _row_pivot)
    m2_ptr,  # [N*C, SPLIT] ACC, written: chunk Σ (t − mean)²
    count_ptr,  # [N*C, SPLIT] ACC, written: chunk sizes
    sum_ptr,  # [N*C, SPLIT] ACC, written: chunk Σ (t − pivot)
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    SPLIT,  # programs per row
    CHUNK,  # pixels per program
    SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    wn, b, _, _ = _params(rows, row_ok, wn_ptr, b_ptr, style_ptr, C)
    x_row = x_ptr + row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    noise_row = noise_ptr + (rows // C)[:, None] * HW
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    slope = const(SLOPE, ACC)
    pivot = _row_pivot(x_row, noise_row, row_ok, wn, b, slope, C, ACC, NHWC)
    mean, m2, count, total = _chunk_moments(x_row, noise_row, cols, row_ok, lo, hi, wn, b, slope, pivot, C, ACC,
                                            NHWC, BLOCK, ROWS)
    slot = rows * SPLIT + part
    tl.store(mean_ptr + slot, mean, mask=row_ok)
    tl.store(m2_ptr + slot, m2, mask=row_ok)
    tl.store(count_ptr + slot, count, mask=row_ok)
    tl.store(sum_ptr + slot, total, mask=row_ok)


@triton.jit
def _adain_fwd_kernel(
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    noise_ptr,  # [N, HW] x.dtype
    wn_ptr,  # [C] acc
    b_ptr,  # [C] acc
    style_ptr,  # [N, 2C] acc, (ys | yb)
    mean_ptr,  # [N*C, SPLIT] ACC: chunk moments of t − pivot (read when SPLIT > 1)
    m2_ptr,  # [N*C, SPLIT] ACC
    count_ptr,  # [N*C, SPLIT] ACC
    sum_ptr,  # [N*C, SPLIT] ACC
    y_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    stats_ptr,  # [N, 2C] acc, (mean | rstd), written
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    SPLIT,  # programs per row
    CHUNK,  # pixels per program
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr, ROWS: tl.constexpr, SINGLE: tl.constexpr,
):
    slope = const(SLOPE, ACC)
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    wn, b, gain, shift = _params(rows, row_ok, wn_ptr, b_ptr, style_ptr, C)
    base = row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    x_row, y_row = x_ptr + base, y_ptr + base
    noise_row = noise_ptr + (rows // C)[:, None] * HW
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        t = leaky(_pre(x_row, noise_row, cols, mask, wn, b, C, ACC, NHWC), slope)
        mean, centered, var = row_moments(t, mask, HW)
        rstd = 1.0 / tl.sqrt(var + const(EPS, ACC))
        y = centered * (gain * rstd)[:, None] + shift[:, None]
        tl.store(y_row + pixel(cols, C, NHWC), narrow(y, y_ptr.dtype.element_ty), mask=mask)
    else:
        pivot = _row_pivot(x_row, noise_row, row_ok, wn, b, slope, C, ACC, NHWC)
        if SPLIT > 1:
            mean, m2 = combine_moments(mean_ptr, m2_ptr, count_ptr, sum_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
        else:
            mean, m2, count, total = _chunk_moments(x_row, noise_row, cols, row_ok, 0, HW, wn, b, slope, pivot, C,
                                                    ACC, NHWC, BLOCK, ROWS)
            mean = settle_mean(mean, m2, total, count)
        mean += pivot
        rstd = 1.0 / tl.sqrt(m2 / HW + const(EPS, ACC))
        for start in range(lo, hi, BLOCK):
            mask = row_ok[:, None] & (start + cols < hi)
            t = leaky(_pre(x_row, noise_row, start + cols, mask, wn, b, C, ACC, NHWC), slope)
            y = (t - mean[:, None]) * (gain * rstd)[:, None] + shift[:, None]
            tl.store(y_row + pixel(start + cols, C, NHWC), narrow(y, y_ptr.dtype.element_ty), mask=mask)
    first = first_chunk(rows, row_ok, part)
    n, c = rows // C, rows % C
    tl.store(stats_ptr + n * 2 * C + c, mean, mask=first)
    tl.store(stats_ptr + n * 2 * C + C + c, rstd, mask=first)


@triton.jit
def _chunk_grad_sums(g_row, x_row, noise_row, cols, row_ok, lo, hi, wn, b, mean, slope, C, ACC: tl.constexpr,
                     NHWC: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """(Σ g, Σ g·c, Σ c) [ROWS] over pixels [lo, hi), with c = t − mean."""
    acc_g = tl.zeros([ROWS, BLOCK], ACC)
    acc_gc = tl.zeros([ROWS, BLOCK], ACC)
    acc_c = tl.zeros([ROWS, BLOCK], ACC)
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        pre = _pre(x_row, noise_row, start + cols, mask, wn, b, C, ACC, NHWC)
        g = tl.load(g_row + pixel(start + cols, C, NHWC), mask=mask, other=0).to(ACC)
        centered = tl.where(mask, leaky(pre, slope) - mean, 0.0)
        acc_g += g
        acc_gc += g * centered
        acc_c += centered
    return tl.sum(acc_g, 1), tl.sum(acc_gc, 1), tl.sum(acc_c, 1)


@triton.jit
def _row_stats(stats_ptr, rows, row_ok, C):
    """(mean [R, 1], rstd [R, 1]) of rows [R] from the forward's stats."""
    n, c = rows // C, rows % C
    mean = tl.load(stats_ptr + n * 2 * C + c, mask=row_ok, other=0)[:, None]
    rstd = tl.load(stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)[:, None]
    return mean, rstd


@triton.jit
def _adain_bwd_sums_kernel(
    grad_y_ptr,  # [N, C, H, W] x.dtype, x's layout
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    noise_ptr,  # [N, HW] x.dtype
    wn_ptr,  # [C] acc
    b_ptr,  # [C] acc
    style_ptr,  # [N, 2C] acc
    stats_ptr,  # [N, 2C] acc, (mean | rstd)
    part_g_ptr,  # [N*C, SPLIT] ACC, written: chunk Σ g
    part_gc_ptr,  # [N*C, SPLIT] ACC, written: chunk Σ g·(t − mean)
    part_c_ptr,  # [N*C, SPLIT] ACC, written: chunk Σ (t − mean)
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    SPLIT,  # programs per row
    CHUNK,  # pixels per program
    SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    wn, b, _, _ = _params(rows, row_ok, wn_ptr, b_ptr, style_ptr, C)
    mean, _ = _row_stats(stats_ptr, rows, row_ok, C)
    base = row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    sum_g, sum_gc, sum_c = _chunk_grad_sums(grad_y_ptr + base, x_ptr + base, noise_ptr + (rows // C)[:, None] * HW,
                                            cols, row_ok, lo, hi, wn, b, mean, const(SLOPE, ACC), C, ACC, NHWC, BLOCK,
                                            ROWS)
    slot = rows * SPLIT + part
    tl.store(part_g_ptr + slot, sum_g, mask=row_ok)
    tl.store(part_gc_ptr + slot, sum_gc, mask=row_ok)
    tl.store(part_c_ptr + slot, sum_c, mask=row_ok)


@triton.jit
def _adain_bwd_kernel(
    grad_y_ptr,  # [N, C, H, W] x.dtype, x's layout
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    noise_ptr,  # [N, HW] x.dtype
    wn_ptr,  # [C] acc
    b_ptr,  # [C] acc
    style_ptr,  # [N, 2C] acc, (ys | yb)
    stats_ptr,  # [N, 2C] acc, (mean | rstd)
    part_g_ptr,  # [N*C, SPLIT] ACC: chunk Σ g (read when SPLIT > 1)
    part_gc_ptr,  # [N*C, SPLIT] ACC: chunk Σ g·(t − mean) (read when SPLIT > 1)
    part_c_ptr,  # [N*C, SPLIT] ACC: chunk Σ (t − mean) (read when SPLIT > 1)
    grad_x_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    grad_style_ptr,  # [N, 2C] acc, written
    part_wn_ptr,  # [N*C, SPLIT] acc, written: chunk Σ dpre·noise
    part_b_ptr,  # [N*C, SPLIT] acc, written: chunk Σ dpre
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    SPLIT,  # programs per row
    CHUNK,  # pixels per program
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, SPLIT_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr, ROWS: tl.constexpr, SINGLE: tl.constexpr,
):
    slope = const(SLOPE, ACC)
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    wn, b, gain, _ = _params(rows, row_ok, wn_ptr, b_ptr, style_ptr, C)
    mean, rstd = _row_stats(stats_ptr, rows, row_ok, C)
    base = row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    x_row, g_row, gx_row = x_ptr + base, grad_y_ptr + base, grad_x_ptr + base
    noise_row = noise_ptr + (rows // C)[:, None] * HW
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    d0 = kink_base(mean, slope)  # [ROWS, 1]
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        pre = _pre(x_row, noise_row, cols, mask, wn, b, C, ACC, NHWC)
        centered = tl.where(mask, leaky(pre, slope) - mean, 0.0)
        g = tl.load(g_row + pixel(cols, C, NHWC), mask=mask, other=0).to(ACC)
        sum_g = tl.sum(g, 1)
        mean_g, mean_c, cov = centred_grad_terms(sum_g, tl.sum(g * centered, 1), tl.sum(centered, 1), HW)
        centered -= mean_c[:, None]
        d = leaky_grad(pre, slope)
        dt = (gain[:, None] * rstd) * (g - mean_g[:, None] - centered * (rstd * rstd * cov[:, None]))
        dpre = tl.where(mask, dt * d, 0.0)
        tl.store(gx_row + pixel(cols, C, NHWC), narrow(dpre, grad_x_ptr.dtype.element_ty), mask=mask)
        noise = tl.load(noise_row + cols, mask=mask, other=0).to(ACC)
        sum_dpre_noise = tl.sum(dpre * noise, 1)
        e, m, q = kink_terms(g, centered, d, d0, mask)
        kink_e, kink_m, kink_q = tl.sum(e, 1), tl.sum(m, 1), tl.sum(q, 1)
    else:
        if SPLIT > 1:
            sum_g = combine_sums(part_g_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
            sum_gc = combine_sums(part_gc_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
            sum_c = combine_sums(part_c_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
        else:
            sum_g, sum_gc, sum_c = _chunk_grad_sums(g_row, x_row, noise_row, cols, row_ok, 0, HW, wn, b, mean, slope,
                                                    C, ACC, NHWC, BLOCK, ROWS)
        mean_g, mean_c, cov = centred_grad_terms(sum_g, sum_gc, sum_c, HW)
        # grad_x of this chunk and its sums for grad_noise_weight and grad_bias.
        acc_dn = tl.zeros([ROWS, BLOCK], ACC)
        acc_e = tl.zeros([ROWS, BLOCK], ACC)
        acc_m = tl.zeros([ROWS, BLOCK], ACC)
        acc_q = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(lo, hi, BLOCK):
            mask = row_ok[:, None] & (start + cols < hi)
            pre = _pre(x_row, noise_row, start + cols, mask, wn, b, C, ACC, NHWC)
            g = tl.load(g_row + pixel(start + cols, C, NHWC), mask=mask, other=0).to(ACC)
            centered = leaky(pre, slope) - mean - mean_c[:, None]
            d = leaky_grad(pre, slope)
            dt = (gain[:, None] * rstd) * (g - mean_g[:, None] - centered * (rstd * rstd * cov[:, None]))
            dpre = tl.where(mask, dt * d, 0.0)
            tl.store(gx_row + pixel(start + cols, C, NHWC), narrow(dpre, grad_x_ptr.dtype.element_ty), mask=mask)
            noise = tl.load(noise_row + start + cols, mask=mask, other=0).to(ACC)
            acc_dn += dpre * noise
            e, m, q = kink_terms(g, centered, d, d0, mask)
            acc_e += e
            acc_m += m
            acc_q += q
        sum_dpre_noise = tl.sum(acc_dn, 1)
        kink_e, kink_m, kink_q = tl.sum(acc_e, 1), tl.sum(acc_m, 1), tl.sum(acc_q, 1)
    rstd = tl.reshape(rstd, [ROWS])
    # This chunk's share of Σ_row dpre (see kink_terms).
    sum_dpre = gain * rstd * (kink_e + mean_g * kink_m - rstd * rstd * cov * kink_q)
    first = first_chunk(rows, row_ok, part)
    n, c = rows // C, rows % C
    tl.store(grad_style_ptr + n * 2 * C + c, HW * cov * rstd, mask=first)
    tl.store(grad_style_ptr + n * 2 * C + C + c, sum_g, mask=first)
    tl.store(part_wn_ptr + rows * SPLIT + part, sum_dpre_noise, mask=row_ok)
    tl.store(part_b_ptr + rows * SPLIT + part, sum_dpre, mask=row_ok)


_moments = RowKernel(_adain_moments_kernel, has_single=False)
_fwd = RowKernel(_adain_fwd_kernel)
_bwd_sums = RowKernel(_adain_bwd_sums_kernel, has_single=False)
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
    """(y [N,C,H,W] in x's layout, stats [N,2C] = (mean | rstd) in acc dtype)."""
    _check("adain_fwd", x, noise, noise_weight, bias, style)
    n, c, h, w = x.shape
    y = empty_act(x)
    stats = torch.empty_like(style)
    if x.numel():
        noise = noise.contiguous()
        split, chunk = row_split(n * c, h * w, x.device)
        exact = exact_acc(x.dtype, x.device)
        parts = chunk_partials(n * c, split, style, 4, exact)
        nhwc = not x.is_contiguous()
        if split > 1:
            _moments(n * c, h * w, x, noise, noise_weight, bias, style, *parts, c, split=split, chunk=chunk,
                     SLOPE=float(slope), ACC=tl_acc(exact), NHWC=nhwc)
        _fwd(n * c, h * w, x, noise, noise_weight, bias, style, *parts, y, stats, c, split=split, chunk=chunk,
             EPS=float(eps), SLOPE=float(slope), ACC=tl_acc(exact), NHWC=nhwc,
             SPLIT_BLOCK=triton.next_power_of_2(split))
    return y, stats


def adain_bwd(grad_y, x, noise, noise_weight, bias, style, stats, eps, slope):
    """(grad_x [N,C,H,W] in x's layout, grad_noise_weight [C], grad_bias [C], grad_style [N,2C])."""
    _check("adain_bwd", x, noise, noise_weight, bias, style)
    check_activation("adain_bwd", "grad_y", grad_y, x.device)
    check_tensor("adain_bwd", "grad_y", grad_y, x.device, x.dtype, x.shape, "[N, C, H, W]")
    check_tensor("adain_bwd", "stats", stats, x.device, style.dtype, style.shape, "[N, 2C]")
    n, c, h, w = x.shape
    grad_x = empty_act(x)
    grad_style = torch.zeros_like(style)
    split, chunk = row_split(n * c, h * w, x.device)
    exact = exact_acc(x.dtype, x.device)
    # Per-(n, c, chunk) partial sums, reduced over N and the chunks afterwards: deterministic, no atomics.
    part_wn, part_b = (torch.zeros((n, c, split), dtype=style.dtype, device=x.device) for _ in range(2))
    if x.numel():
        grad_y, noise = match_layout(grad_y, x), noise.contiguous()
        sums = chunk_partials(n * c, split, style, 3, exact)
        nhwc = not x.is_contiguous()
        if split > 1:
            _bwd_sums(n * c, h * w, grad_y, x, noise, noise_weight, bias, style, stats, *sums, c, split=split,
                      chunk=chunk, SLOPE=float(slope), ACC=tl_acc(exact), NHWC=nhwc)
        _bwd(n * c, h * w, grad_y, x, noise, noise_weight, bias, style, stats, *sums, grad_x, grad_style, part_wn,
             part_b, c, split=split, chunk=chunk, EPS=float(eps), SLOPE=float(slope), ACC=tl_acc(exact), NHWC=nhwc,
             SPLIT_BLOCK=triton.next_power_of_2(split))
    return grad_x, part_wn.sum((0, 2)), part_b.sum((0, 2)), grad_style
