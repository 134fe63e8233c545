"""Instance-norm style extraction in Triton: one program per tile of (n, c) rows, or per chunk of a long row.

t = lrelu(x + b[c], 0.2);  y = (t − μ)·rsqrt(σ² + 1e-5);  stats = (μ | σ).
Long rows split as in the adain kernels (chunk moments, fixed-order Chan merge, normalise; backward
chunk sums, then grad_x). The backward takes gradients from y and from both statistics and
recomputes t; the double backward runs one program per row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (RowKernel, acc_dtype, centred_grad_terms, check_activation, check_tensor,
                                   chunk_partials, combine_moments, combine_sums, const, empty_act, first_chunk,
                                   kink_base, kink_terms, leaky, leaky_grad, match_layout, pixel, row_base, row_chunk,
                                   row_moments, row_split, settle_mean, tl_acc, welford_combine, welford_update)



@triton.jit
def _load_pre(x_row, idx, mask, b, C, ACC: tl.constexpr, NHWC: tl.constexpr):
    """x + b at pixels idx of a [ROWS, BLOCK] tile, in ACC."""
    return tl.load(x_row + pixel(idx, C, NHWC), mask=mask, other=0).to(ACC) + b


@triton.jit
def _row_pivot(x_row, row_ok, b, slope, C, ACC: tl.constexpr, NHWC: tl.constexpr):
    """t at pixel 0 of each row [ROWS], 0 where not finite: the moments are taken of t − pivot, so
    their sums stay near the spread of the row whatever its mean."""
    t0 = tl.sum(leaky(_load_pre(x_row, tl.zeros([1, 1], tl.int32), row_ok[:, None], b, C, ACC, NHWC), slope), 1)
    return tl.where(t0 - t0 == 0, t0, 0.0)


@triton.jit
def _chunk_moments(x_row, cols, row_ok, lo, hi, b, slope, pivot, C, ACC: tl.constexpr, NHWC: tl.constexpr,
                   BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """Welford (mean, M2, count) and Σ, each [ROWS], of t − pivot over pixels [lo, hi): per lane,
    then merged across lanes."""
    lane_mean = tl.zeros([ROWS, BLOCK], ACC)
    lane_m2 = tl.zeros([ROWS, BLOCK], ACC)
    lane_n = tl.zeros([ROWS, BLOCK], ACC)
    lane_sum = tl.zeros([ROWS, BLOCK], ACC)
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        t = leaky(_load_pre(x_row, start + cols, mask, b, C, ACC, NHWC), slope) - pivot[:, None]
        lane_mean, lane_m2, lane_n = welford_update(t, mask, lane_mean, lane_m2, lane_n)
        lane_sum += tl.where(mask, t, 0.0)
    mean, m2, count = tl.reduce((lane_mean, lane_m2, lane_n), 1, welford_combine)
    return mean, m2, count, tl.sum(lane_sum, 1)


@triton.jit
def _style_moments_kernel(
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    b_ptr,  # [C] acc
    mean_ptr,  # [N*C, SPLIT] acc, written: chunk means of t − pivot (see _row_pivot)
    m2_ptr,  # [N*C, SPLIT] acc, written: chunk Σ (t − mean)²
    count_ptr,  # [N*C, SPLIT] acc, written: chunk sizes
    sum_ptr,  # [N*C, SPLIT] acc, written: chunk Σ (t − pivot)
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    SPLIT,  # programs per row
    CHUNK,  # pixels per program
    SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    b = tl.load(b_ptr + rows % C, mask=row_ok, other=0)[:, None]
    x_row = x_ptr + row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    slope = const(SLOPE, ACC)
    pivot = _row_pivot(x_row, row_ok, b, slope, C, ACC, NHWC)
    mean, m2, count, total = _chunk_moments(x_row, cols, row_ok, lo, hi, b, slope, pivot, C, ACC, NHWC, BLOCK, ROWS)
    slot = rows * SPLIT + part
    tl.store(mean_ptr + slot, mean, mask=row_ok)
    tl.store(m2_ptr + slot, m2, mask=row_ok)
    tl.store(count_ptr + slot, count, mask=row_ok)
    tl.store(sum_ptr + slot, total, mask=row_ok)


@triton.jit
def _style_fwd_kernel(
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    b_ptr,  # [C] acc
    mean_ptr,  # [N*C, SPLIT] acc: chunk moments of t − pivot (read when SPLIT > 1)
    m2_ptr,  # [N*C, SPLIT] acc
    count_ptr,  # [N*C, SPLIT] acc
    sum_ptr,  # [N*C, SPLIT] acc
    y_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    stats_ptr,  # [N, 2C] acc, (mean | std), written
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
    b = tl.load(b_ptr + rows % C, mask=row_ok, other=0)[:, None]
    base = row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    x_row, y_row = x_ptr + base, y_ptr + base
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        t = leaky(_load_pre(x_row, cols, mask, b, C, ACC, NHWC), slope)
        mean, centered, var = row_moments(t, mask, HW)
        rstd = 1.0 / tl.sqrt(var + const(EPS, ACC))
        tl.store(y_row + pixel(cols, C, NHWC), (centered * rstd[:, None]).to(y_ptr.dtype.element_ty), mask=mask)
    else:
        pivot = _row_pivot(x_row, row_ok, b, slope, C, ACC, NHWC)
        if SPLIT > 1:
            mean, m2 = combine_moments(mean_ptr, m2_ptr, count_ptr, sum_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
        else:
            mean, m2, count, total = _chunk_moments(x_row, cols, row_ok, 0, HW, b, slope, pivot, C, ACC, NHWC, BLOCK,
                                                    ROWS)
            mean = settle_mean(mean, m2, total, count)
        mean += pivot
        var = m2 / HW
        rstd = 1.0 / tl.sqrt(var + const(EPS, ACC))
        for start in range(lo, hi, BLOCK):
            mask = row_ok[:, None] & (start + cols < hi)
            t = leaky(_load_pre(x_row, start + cols, mask, b, C, ACC, NHWC), slope)
            y = (t - mean[:, None]) * rstd[:, None]
            tl.store(y_row + pixel(start + cols, C, NHWC), y.to(y_ptr.dtype.element_ty), mask=mask)
    first = first_chunk(rows, row_ok, part)
    n, c = rows // C, rows % C
    tl.store(stats_ptr + n * 2 * C + c, mean, mask=first)
    tl.store(stats_ptr + n * 2 * C + C + c, tl.sqrt(var), mask=first)


@triton.jit
def _bwd_row_terms(grad_stats_ptr, stats_ptr, rows, row_ok, C, HW, EPS: tl.constexpr, ACC: tl.constexpr):
    """(mean, rstd, d mean / HW, d std / (HW·std), 0 where std is 0), each [R, 1], of rows [R]."""
    n, c = rows // C, rows % C
    mean = tl.load(stats_ptr + n * 2 * C + c, mask=row_ok, other=0)
    std = tl.load(stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    rstd = 1.0 / tl.sqrt(std * std + const(EPS, ACC))
    g_mean = tl.load(grad_stats_ptr + n * 2 * C + c, mask=row_ok, other=0) / HW
    g_std = tl.load(grad_stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    g_std = tl.where(std > 0, g_std / (HW * tl.where(std > 0, std, 1.0)), 0.0)
    return mean[:, None], rstd[:, None], g_mean[:, None], g_std[:, None]


@triton.jit
def _chunk_grad_sums(g_row, x_row, cols, row_ok, lo, hi, b, mean, slope, C, ACC: tl.constexpr, NHWC: tl.constexpr,
                     BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """(Σ g, Σ g·c, Σ c) [ROWS] over pixels [lo, hi), with c = t − mean."""
    acc_g = tl.zeros([ROWS, BLOCK], ACC)
    acc_gc = tl.zeros([ROWS, BLOCK], ACC)
    acc_c = tl.zeros([ROWS, BLOCK], ACC)
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        pre = _load_pre(x_row, start + cols, mask, b, C, ACC, NHWC)
        g = tl.load(g_row + pixel(start + cols, C, NHWC), mask=mask, other=0).to(ACC)
        centered = tl.where(mask, leaky(pre, slope) - mean, 0.0)
        acc_g += g
        acc_gc += g * centered
        acc_c += centered
    return tl.sum(acc_g, 1), tl.sum(acc_gc, 1), tl.sum(acc_c, 1)


@triton.jit
def _style_bwd_sums_kernel(
    grad_y_ptr,  # [N, C, H, W] x.dtype, x's layout
    grad_stats_ptr,  # [N, 2C] acc, (d mean | d std)
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    b_ptr,  # [C] acc
    stats_ptr,  # [N, 2C] acc, (mean | std)
    part_g_ptr,  # [N*C, SPLIT] acc, written: chunk Σ g
    part_gc_ptr,  # [N*C, SPLIT] acc, written: chunk Σ g·(t − mean)
    part_c_ptr,  # [N*C, SPLIT] acc, written: chunk Σ (t − mean)
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    SPLIT,  # programs per row
    CHUNK,  # pixels per program
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    b = tl.load(b_ptr + rows % C, mask=row_ok, other=0)[:, None]
    mean, _, _, _ = _bwd_row_terms(grad_stats_ptr, stats_ptr, rows, row_ok, C, HW, EPS, ACC)
    base = row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    sum_g, sum_gc, sum_c = _chunk_grad_sums(grad_y_ptr + base, x_ptr + base, cols, row_ok, lo, hi, b, mean,
                                            const(SLOPE, ACC), C, ACC, NHWC, BLOCK, ROWS)
    slot = rows * SPLIT + part
    tl.store(part_g_ptr + slot, sum_g, mask=row_ok)
    tl.store(part_gc_ptr + slot, sum_gc, mask=row_ok)
    tl.store(part_c_ptr + slot, sum_c, mask=row_ok)


@triton.jit
def _style_bwd_kernel(
    grad_y_ptr,  # [N, C, H, W] x.dtype, x's layout
    grad_stats_ptr,  # [N, 2C] acc, (d mean | d std)
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    b_ptr,  # [C] acc
    stats_ptr,  # [N, 2C] acc, (mean | std)
    part_g_ptr,  # [N*C, SPLIT] acc: chunk Σ g (read when SPLIT > 1)
    part_gc_ptr,  # [N*C, SPLIT] acc: chunk Σ g·(t − mean) (read when SPLIT > 1)
    part_c_ptr,  # [N*C, SPLIT] acc: chunk Σ (t − mean) (read when SPLIT > 1)
    grad_x_ptr,  # [N, C, H, W] x.dtype, x's layout, written
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
    b = tl.load(b_ptr + rows % C, mask=row_ok, other=0)[:, None]
    # Gradients reaching t through the mean and the std outputs; d std / d t is 0 where std is 0.
    mean, rstd, g_mean, g_std = _bwd_row_terms(grad_stats_ptr, stats_ptr, rows, row_ok, C, HW, EPS, ACC)
    base = row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    x_row, g_row, gx_row = x_ptr + base, grad_y_ptr + base, grad_x_ptr + base
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    d0 = kink_base(mean, slope)  # [ROWS, 1]
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        pre = _load_pre(x_row, cols, mask, b, C, ACC, NHWC)
        centered = tl.where(mask, leaky(pre, slope) - mean, 0.0)
        g = tl.load(g_row + pixel(cols, C, NHWC), mask=mask, other=0).to(ACC)
        mean_g, mean_c, cov = centred_grad_terms(tl.sum(g, 1), tl.sum(g * centered, 1), tl.sum(centered, 1), HW)
        centered -= mean_c[:, None]
        d = leaky_grad(pre, slope)
        dt = rstd * (g - mean_g[:, None] - centered * (rstd * rstd * cov[:, None])) + g_mean + g_std * centered
        dpre = tl.where(mask, dt * d, 0.0)
        tl.store(gx_row + pixel(cols, C, NHWC), dpre.to(grad_x_ptr.dtype.element_ty), mask=mask)
        e, m, q = kink_terms(g, centered, d, d0, mask)
        kink_e, kink_m, kink_q = tl.sum(e, 1), tl.sum(m, 1), tl.sum(q, 1)
    else:
        if SPLIT > 1:
            sum_g = combine_sums(part_g_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
            sum_gc = combine_sums(part_gc_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
            sum_c = combine_sums(part_c_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
        else:
            sum_g, sum_gc, sum_c = _chunk_grad_sums(g_row, x_row, cols, row_ok, 0, HW, b, mean, slope, C, ACC, NHWC,
                                                    BLOCK, ROWS)
        mean_g, mean_c, cov = centred_grad_terms(sum_g, sum_gc, sum_c, HW)
        # grad_x of this chunk and its share of grad_bias.
        acc_e = tl.zeros([ROWS, BLOCK], ACC)
        acc_m = tl.zeros([ROWS, BLOCK], ACC)
        acc_q = tl.zeros([ROWS, BLOCK], ACC)
        for start in range(lo, hi, BLOCK):
            mask = row_ok[:, None] & (start + cols < hi)
            pre = _load_pre(x_row, start + cols, mask, b, C, ACC, NHWC)
            centered = leaky(pre, slope) - mean - mean_c[:, None]
            g = tl.load(g_row + pixel(start + cols, C, NHWC), mask=mask, other=0).to(ACC)
            d = leaky_grad(pre, slope)
            dt = rstd * (g - mean_g[:, None] - centered * (rstd * rstd * cov[:, None])) + g_mean + g_std * centered
            dpre = tl.where(mask, dt * d, 0.0)
            tl.store(gx_row + pixel(start + cols, C, NHWC), dpre.to(grad_x_ptr.dtype.element_ty), mask=mask)
            e, m, q = kink_terms(g, centered, d, d0, mask)
            acc_e += e
            acc_m += m
            acc_q += q
        kink_e, kink_m, kink_q = tl.sum(acc_e, 1), tl.sum(acc_m, 1), tl.sum(acc_q, 1)
    # This chunk's share of Σ_row dpre (see kink_terms; the mean and std outputs add g_mean·Σ d and
    # g_std·Σ d·c = g_std·Q).
    rstd, g_mean, g_std = tl.reshape(rstd, [ROWS]), tl.reshape(g_mean, [ROWS]), tl.reshape(g_std, [ROWS])
    sum_dpre = (rstd * (kink_e + mean_g * kink_m - rstd * rstd * cov * kink_q)
                + g_mean * (tl.reshape(d0, [ROWS]) * (hi - lo) - kink_m) + g_std * kink_q)
    tl.store(part_b_ptr + rows * SPLIT + part, sum_dpre, mask=row_ok)


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
    acc_g = tl.zeros([ROWS, BLOCK], ACC)
    acc_gc = tl.zeros([ROWS, BLOCK], ACC)
    acc_u = tl.zeros([ROWS, BLOCK], ACC)
    acc_uc = tl.zeros([ROWS, BLOCK], ACC)
    acc_ug = tl.zeros([ROWS, BLOCK], ACC)
    for start in range(0, 1 if SINGLE else HW, BLOCK):
        mask = row_ok[:, None] & (start + cols < HW)
        px = pixel(start + cols, C, NHWC)
        pre = tl.load(x_row + px, mask=mask, other=0).to(ACC) + b
        g = tl.load(g_row + px, mask=mask, other=0).to(ACC)
        q = tl.load(q_row + px, mask=mask, other=0).to(ACC) if HAS_GGX else 0.0
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
        pre = tl.load(x_row + px, mask=mask, other=0).to(ACC) + b
        g = tl.load(g_row + px, mask=mask, other=0).to(ACC)
        q = tl.load(q_row + px, mask=mask, other=0).to(ACC) if HAS_GGX else 0.0
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


_moments = RowKernel(_style_moments_kernel, has_single=False)
_fwd = RowKernel(_style_fwd_kernel)
_bwd_sums = RowKernel(_style_bwd_sums_kernel, has_single=False)
_bwd = RowKernel(_style_bwd_kernel)
_bwd2 = RowKernel(_style_bwd2_kernel)


def _check_rows(op, x):
    check_activation(op, "x", x, x.device)
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"{op}: argument 'x' has no pixels (H = {x.shape[2]}, W = {x.shape[3]}); the per-row "
                         "mean and std are undefined, so H·W must be at least 1")


def style_fwd(x, bias, eps, slope):
    """(y [N,C,H,W] in x's layout, stats [N,2C] = (mean | std) in acc dtype)."""
    _check_rows("style_fwd", x)
    n, c, h, w = x.shape
    check_tensor("style_fwd", "bias", bias, x.device, acc_dtype(x.dtype), (c,), "[C]")
    y = empty_act(x)
    stats = torch.empty((n, 2 * c), dtype=bias.dtype, device=x.device)
    if x.numel():
        split, chunk = row_split(n * c, h * w, x.device)
        parts = chunk_partials(n * c, split, bias, 4)
        nhwc = not x.is_contiguous()
        if split > 1:
            _moments(n * c, h * w, x, bias, *parts, c, split=split, chunk=chunk, SLOPE=float(slope),
                     ACC=tl_acc(x.dtype), NHWC=nhwc)
        _fwd(n * c, h * w, x, bias, *parts, y, stats, c, split=split, chunk=chunk, EPS=float(eps),
             SLOPE=float(slope), ACC=tl_acc(x.dtype), NHWC=nhwc, SPLIT_BLOCK=triton.next_power_of_2(split))
    return y, stats


def style_bwd(grad_y, grad_stats, x, bias, stats, eps, slope):
    """(grad_x [N,C,H,W] in x's layout, grad_bias [C]) from grad_y [N,C,H,W] and grad_stats [N,2C] (acc)."""
    op = "style_bwd"
    _check_rows(op, x)
    n, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    check_tensor(op, "grad_y", grad_y, x.device, x.dtype, x.shape, "[N, C, H, W]")
    check_tensor(op, "grad_stats", grad_stats, x.device, acc, (n, 2 * c), "[N, 2C]")
    check_tensor(op, "bias", bias, x.device, acc, (c,), "[C]")
    check_tensor(op, "stats", stats, x.device, acc, (n, 2 * c), "[N, 2C]")
    grad_x = empty_act(x)
    split, chunk = row_split(n * c, h * w, x.device)
    # Per-(n, c, chunk) partial sums, reduced over N and the chunks afterwards: deterministic, no atomics.
    part_b = torch.zeros((n, c, split), dtype=acc, device=x.device)
    if x.numel():
        grad_y = match_layout(grad_y, x)
        sums = chunk_partials(n * c, split, grad_stats, 3)
        nhwc = not x.is_contiguous()
        if split > 1:
            _bwd_sums(n * c, h * w, grad_y, grad_stats, x, bias, stats, *sums, c, split=split, chunk=chunk,
                      EPS=float(eps), SLOPE=float(slope), ACC=tl_acc(x.dtype), NHWC=nhwc)
        _bwd(n * c, h * w, grad_y, grad_stats, x, bias, stats, *sums, grad_x, part_b, c, split=split, chunk=chunk,
             EPS=float(eps), SLOPE=float(slope), ACC=tl_acc(x.dtype), NHWC=nhwc,
             SPLIT_BLOCK=triton.next_power_of_2(split))
    return grad_x, part_b.sum((0, 2))


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
