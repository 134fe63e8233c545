"""Instance-norm rows in Triton, shared by modulated_adain (MODULATED) and style_extract.

t = lrelu(x [+ wn[c]·noise[n]] + b[c], slope), normalised per (n, c) row: x̂ = (t − μ)·rsqrt(σ² + eps).
MODULATED (adain): y = x̂·(1 + ys[n,c]) + yb[n,c] and stats = (μ | rstd). Otherwise (style):
y = x̂ and stats = (μ | σ), and the backward takes the gradients of both statistics too.

One program per tile of short rows (SINGLE: rows in registers), per long row, or per chunk of a row
split over SPLIT programs (see _triton.row_split). Split rows run the forward as chunk moments, then
a fixed-order Chan merge and the normalisation (2 passes over x); the backward as chunk sums of g,
g·c and c, then grad_x (3 passes). The backward recomputes t from x (and noise) instead of storing it.
Moments are taken of t − pivot (t at pixel 0 of the row), so their sums stay near the spread of the
row whatever its mean.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (RowKernel, centred_grad_terms, chunk_partials, combine_moments, combine_sums, const,
                                   empty_act, first_chunk, kink_base, kink_terms, leaky, leaky_grad, match_layout,
                                   narrow, pixel, row_base, row_chunk, row_moments, row_split, settle_mean,
                                   store_partials, tl_acc, welford_combine, welford_update)


@triton.jit
def _pre(x_row, noise_row, idx, mask, wn, b, C, ACC: tl.constexpr, NHWC: tl.constexpr, MODULATED: tl.constexpr):
    """x [+ wn·noise] + b at pixels idx of a [ROWS, BLOCK] tile, in ACC."""
    v = tl.load(x_row + pixel(idx, C, NHWC), mask=mask, other=0).to(ACC)
    if MODULATED:
        v = v + wn * tl.load(noise_row + idx, mask=mask, other=0).to(ACC)
    return v + b


@triton.jit
def _rows(x_ptr, noise_ptr, wn_ptr, b_ptr, C, NC, HW, SPLIT, CHUNK, NHWC: tl.constexpr, MODULATED: tl.constexpr,
          BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """This program's rows [ROWS], chunk index, pixels [lo, hi), row mask, row offsets [ROWS, 1] in x's
    layout, noise rows [ROWS, 1], wn and b [ROWS, 1] and the tile's columns [1, BLOCK]."""
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    b = tl.load(b_ptr + rows % C, mask=row_ok, other=0)[:, None]
    if MODULATED:
        wn = tl.load(wn_ptr + rows % C, mask=row_ok, other=0)[:, None]
    else:
        wn = b  # unused
    base = row_base(rows, C, HW, NHWC)[:, None]
    return (rows, part, lo, hi, row_ok, base, noise_ptr + (rows // C)[:, None] * HW, wn, b,
            tl.arange(0, BLOCK)[None, :])


@triton.jit
def _row_pivot(x_row, noise_row, row_ok, wn, b, slope, C, ACC: tl.constexpr, NHWC: tl.constexpr,
               MODULATED: tl.constexpr):
    """t at pixel 0 of each row [ROWS], 0 where not finite."""
    t0 = tl.sum(leaky(_pre(x_row, noise_row, tl.zeros([1, 1], tl.int32), row_ok[:, None], wn, b, C, ACC, NHWC,
                           MODULATED), slope), 1)
    return tl.where(t0 - t0 == 0, t0, 0.0)


@triton.jit
def _chunk_moments(x_row, noise_row, cols, row_ok, lo, hi, wn, b, slope, pivot, C, ACC: tl.constexpr,
                   NHWC: tl.constexpr, MODULATED: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """Welford (mean, M2, count) and Σ, each [ROWS], of t − pivot over pixels [lo, hi): per lane,
    then merged across lanes."""
    zero = tl.zeros([ROWS, BLOCK], ACC)
    lane_mean, lane_m2, lane_n, lane_sum = zero, zero, zero, zero
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        pre = _pre(x_row, noise_row, start + cols, mask, wn, b, C, ACC, NHWC, MODULATED)
        t = leaky(pre, slope) - pivot[:, None]
        lane_mean, lane_m2, lane_n = welford_update(t, mask, lane_mean, lane_m2, lane_n)
        lane_sum += tl.where(mask, t, 0.0)
    mean, m2, count = tl.reduce((lane_mean, lane_m2, lane_n), 1, welford_combine)
    return mean, m2, count, tl.sum(lane_sum, 1)


@triton.jit
def _moments_kernel(
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    noise_ptr, wn_ptr,  # [N, HW] x.dtype and [C] acc (read when MODULATED)
    b_ptr,  # [C] acc
    parts_ptr,  # [4, N*C, SPLIT] ACC, written: chunk (mean of t − pivot, Σ (t − mean)², size, Σ (t − pivot))
    C, NC, HW, SPLIT, CHUNK,  # channels, rows = N*C, row length, programs per row, pixels per program
    SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, MODULATED: tl.constexpr, BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    rows, part, lo, hi, row_ok, base, noise_row, wn, b, cols = _rows(x_ptr, noise_ptr, wn_ptr, b_ptr, C, NC, HW,
                                                                     SPLIT, CHUNK, NHWC, MODULATED, BLOCK, ROWS)
    slope = const(SLOPE, ACC)
    x_row = x_ptr + base
    pivot = _row_pivot(x_row, noise_row, row_ok, wn, b, slope, C, ACC, NHWC, MODULATED)
    mean, m2, count, total = _chunk_moments(x_row, noise_row, cols, row_ok, lo, hi, wn, b, slope, pivot, C, ACC,
                                            NHWC, MODULATED, BLOCK, ROWS)
    store_partials(parts_ptr, rows, row_ok, part, NC, SPLIT, mean, m2, count, total, total, 4)


@triton.jit
def _modulation(style_ptr, rows, row_ok, C):
    """(1 + ys, yb), each [R], of rows [R] from style [N, 2C]."""
    n, c = rows // C, rows % C
    gain = 1 + tl.load(style_ptr + n * 2 * C + c, mask=row_ok, other=0)
    return gain, tl.load(style_ptr + n * 2 * C + C + c, mask=row_ok, other=0)


@triton.jit
def _fwd_kernel(
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    noise_ptr, wn_ptr,  # [N, HW] x.dtype and [C] acc (read when MODULATED)
    b_ptr,  # [C] acc
    style_ptr,  # [N, 2C] acc, (ys | yb) (read when MODULATED)
    parts_ptr,  # [4, N*C, SPLIT] ACC: _moments_kernel's (read when SPLIT > 1)
    y_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    stats_ptr,  # [N, 2C] acc, written: (mean | rstd) when MODULATED, else (mean | std)
    C, NC, HW, SPLIT, CHUNK,  # channels, rows = N*C, row length, programs per row, pixels per program
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, MODULATED: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr, SINGLE: tl.constexpr,
):
    rows, part, lo, hi, row_ok, base, noise_row, wn, b, cols = _rows(x_ptr, noise_ptr, wn_ptr, b_ptr, C, NC, HW,
                                                                     SPLIT, CHUNK, NHWC, MODULATED, BLOCK, ROWS)
    slope = const(SLOPE, ACC)
    x_row, y_row = x_ptr + base, y_ptr + base
    if MODULATED:
        gain, shift = _modulation(style_ptr, rows, row_ok, C)
    if SINGLE:
        mask = row_ok[:, None] & (cols < HW)
        t = leaky(_pre(x_row, noise_row, cols, mask, wn, b, C, ACC, NHWC, MODULATED), slope)
        mean, centered, var = row_moments(t, mask, HW)
        rstd = 1.0 / tl.sqrt(var + const(EPS, ACC))
        if MODULATED:
            y = centered * (gain * rstd)[:, None] + shift[:, None]
        else:
            y = centered * rstd[:, None]
        tl.store(y_row + pixel(cols, C, NHWC), narrow(y, y_ptr.dtype.element_ty), mask=mask)
    else:
        pivot = _row_pivot(x_row, noise_row, row_ok, wn, b, slope, C, ACC, NHWC, MODULATED)
        if SPLIT > 1:
            stride = NC * SPLIT
            mean, m2 = combine_moments(parts_ptr, parts_ptr + stride, parts_ptr + 2 * stride, parts_ptr + 3 * stride,
                                       rows, row_ok, SPLIT, SPLIT_BLOCK)
        else:
            mean, m2, count, total = _chunk_moments(x_row, noise_row, cols, row_ok, 0, HW, wn, b, slope, pivot, C,
                                                    ACC, NHWC, MODULATED, BLOCK, ROWS)
            mean = settle_mean(mean, m2, total, count)
        mean += pivot
        var = m2 / HW
        rstd = 1.0 / tl.sqrt(var + const(EPS, ACC))
        for start in range(lo, hi, BLOCK):
            mask = row_ok[:, None] & (start + cols < hi)
            t = leaky(_pre(x_row, noise_row, start + cols, mask, wn, b, C, ACC, NHWC, MODULATED), slope)
            if MODULATED:
                y = (t - mean[:, None]) * (gain * rstd)[:, None] + shift[:, None]
            else:
                y = (t - mean[:, None]) * rstd[:, None]
            tl.store(y_row + pixel(start + cols, C, NHWC), narrow(y, y_ptr.dtype.element_ty), mask=mask)
    if MODULATED:
        second = rstd
    else:
        second = tl.sqrt(var)
    first = first_chunk(rows, row_ok, part)
    n, c = rows // C, rows % C
    tl.store(stats_ptr + n * 2 * C + c, mean, mask=first)
    tl.store(stats_ptr + n * 2 * C + C + c, second, mask=first)


@triton.jit
def _chunk_grad_sums(g_row, x_row, noise_row, cols, row_ok, lo, hi, wn, b, mean, slope, C, ACC: tl.constexpr,
                     NHWC: tl.constexpr, MODULATED: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """(Σ g, Σ g·c, Σ c) [ROWS] over pixels [lo, hi), with c = t − mean."""
    zero = tl.zeros([ROWS, BLOCK], ACC)
    acc_g, acc_gc, acc_c = zero, zero, zero
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        pre = _pre(x_row, noise_row, start + cols, mask, wn, b, C, ACC, NHWC, MODULATED)
        g = tl.load(g_row + pixel(start + cols, C, NHWC), mask=mask, other=0).to(ACC)
        centered = tl.where(mask, leaky(pre, slope) - mean, 0.0)
        acc_g += g
        acc_gc += g * centered
        acc_c += centered
    return tl.sum(acc_g, 1), tl.sum(acc_gc, 1), tl.sum(acc_c, 1)


@triton.jit
def _bwd_row_terms(row_in_ptr, stats_ptr, rows, row_ok, C, HW, EPS: tl.constexpr, ACC: tl.constexpr,
                   MODULATED: tl.constexpr):
    """(mean, rstd, scale, g_mean, g_std), each [R, 1], of rows [R]: dt = scale·(g − mean g − c·rstd²·cov)
    + g_mean + g_std·c. MODULATED: row_in is style (scale = (1 + ys)·rstd, no statistics gradients);
    else row_in is grad_stats (scale = rstd, g_mean = d mean / HW, g_std = d std / (HW·std), 0 where
    std is 0)."""
    n, c = rows // C, rows % C
    mean = tl.load(stats_ptr + n * 2 * C + c, mask=row_ok, other=0)
    second = tl.load(stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    if MODULATED:
        rstd = second
        scale = (1 + tl.load(row_in_ptr + n * 2 * C + c, mask=row_ok, other=0)) * rstd
        g_mean = tl.zeros_like(rstd)
        g_std = g_mean
    else:
        rstd = 1.0 / tl.sqrt(second * second + const(EPS, ACC))
        scale = rstd
        g_mean = tl.load(row_in_ptr + n * 2 * C + c, mask=row_ok, other=0) / HW
        g_std = tl.load(row_in_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
        g_std = tl.where(second > 0, g_std / (HW * tl.where(second > 0, second, 1.0)), 0.0)
    return mean[:, None], rstd[:, None], scale[:, None], g_mean[:, None], g_std[:, None]


@triton.jit
def _bwd_sums_kernel(
    grad_y_ptr, x_ptr,  # [N, C, H, W] x.dtype each: x NCHW or NHWC, grad_y in x's layout
    noise_ptr, wn_ptr,  # [N, HW] x.dtype and [C] acc (read when MODULATED)
    b_ptr,  # [C] acc
    stats_ptr,  # [N, 2C] acc, the forward's
    parts_ptr,  # [3, N*C, SPLIT] ACC, written: chunk (Σ g, Σ g·(t − mean), Σ (t − mean))
    C, NC, HW, SPLIT, CHUNK,  # channels, rows = N*C, row length, programs per row, pixels per program
    SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, MODULATED: tl.constexpr, BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    rows, part, lo, hi, row_ok, base, noise_row, wn, b, cols = _rows(x_ptr, noise_ptr, wn_ptr, b_ptr, C, NC, HW,
                                                                     SPLIT, CHUNK, NHWC, MODULATED, BLOCK, ROWS)
    n, c = rows // C, rows % C
    mean = tl.load(stats_ptr + n * 2 * C + c, mask=row_ok, other=0)[:, None]
    sum_g, sum_gc, sum_c = _chunk_grad_sums(grad_y_ptr + base, x_ptr + base, noise_row, cols, row_ok, lo, hi, wn, b,
                                            mean, const(SLOPE, ACC), C, ACC, NHWC, MODULATED, BLOCK, ROWS)
    store_partials(parts_ptr, rows, row_ok, part, NC, SPLIT, sum_g, sum_gc, sum_c, sum_c, sum_c, 3)


@triton.jit
def _bwd_kernel(
    grad_y_ptr, x_ptr,  # [N, C, H, W] x.dtype each: x NCHW or NHWC, grad_y in x's layout
    noise_ptr, wn_ptr,  # [N, HW] x.dtype and [C] acc (read when MODULATED)
    b_ptr,  # [C] acc
    row_in_ptr,  # [N, 2C] acc: style (ys | yb) when MODULATED, else grad_stats (d mean | d std)
    stats_ptr,  # [N, 2C] acc, the forward's
    parts_ptr,  # [3, N*C, SPLIT] ACC: _bwd_sums_kernel's (read when SPLIT > 1)
    grad_x_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    grad_style_ptr,  # [N, 2C] acc, written when MODULATED
    part_wn_ptr,  # [N*C, SPLIT] acc, written when MODULATED: chunk Σ dpre·noise
    part_b_ptr,  # [N*C, SPLIT] acc, written: chunk Σ dpre
    C, NC, HW, SPLIT, CHUNK,  # channels, rows = N*C, row length, programs per row, pixels per program
    EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr, MODULATED: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    rows, part, lo, hi, row_ok, base, noise_row, wn, b, cols = _rows(x_ptr, noise_ptr, wn_ptr, b_ptr, C, NC, HW,
                                                                     SPLIT, CHUNK, NHWC, MODULATED, BLOCK, ROWS)
    slope = const(SLOPE, ACC)
    mean, rstd, scale, g_mean, g_std = _bwd_row_terms(row_in_ptr, stats_ptr, rows, row_ok, C, HW, EPS, ACC,
                                                      MODULATED)
    x_row, g_row, gx_row = x_ptr + base, grad_y_ptr + base, grad_x_ptr + base
    d0 = kink_base(mean, slope)  # [ROWS, 1]
    if SPLIT > 1:
        stride = NC * SPLIT
        sum_g = combine_sums(parts_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
        sum_gc = combine_sums(parts_ptr + stride, rows, row_ok, SPLIT, SPLIT_BLOCK)
        sum_c = combine_sums(parts_ptr + 2 * stride, rows, row_ok, SPLIT, SPLIT_BLOCK)
    else:
        sum_g, sum_gc, sum_c = _chunk_grad_sums(g_row, x_row, noise_row, cols, row_ok, 0, HW, wn, b, mean, slope, C,
                                                ACC, NHWC, MODULATED, BLOCK, ROWS)
    mean_g, mean_c, cov = centred_grad_terms(sum_g, sum_gc, sum_c, HW)
    # grad_x of this chunk and its sums for grad_noise_weight and grad_bias.
    zero = tl.zeros([ROWS, BLOCK], ACC)
    acc_dn, acc_e, acc_m, acc_q = zero, zero, zero, zero
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        pre = _pre(x_row, noise_row, start + cols, mask, wn, b, C, ACC, NHWC, MODULATED)
        g = tl.load(g_row + pixel(start + cols, C, NHWC), mask=mask, other=0).to(ACC)
        centered = leaky(pre, slope) - mean - mean_c[:, None]
        d = leaky_grad(pre, slope)
        dt = scale * (g - mean_g[:, None] - centered * (rstd * rstd * cov[:, None]))
        if not MODULATED:
            dt += g_mean + g_std * centered
        dpre = tl.where(mask, dt * d, 0.0)
        tl.store(gx_row + pixel(start + cols, C, NHWC), narrow(dpre, grad_x_ptr.dtype.element_ty), mask=mask)
        if MODULATED:
            acc_dn += dpre * tl.load(noise_row + start + cols, mask=mask, other=0).to(ACC)
        e, m, q = kink_terms(g, centered, d, d0, mask)
        acc_e += e
        acc_m += m
        acc_q += q
    kink_e, kink_m, kink_q = tl.sum(acc_e, 1), tl.sum(acc_m, 1), tl.sum(acc_q, 1)
    rstd, scale = tl.reshape(rstd, [ROWS]), tl.reshape(scale, [ROWS])
    # This chunk's share of Σ_row dpre (see kink_terms; the statistics' gradients add g_mean·Σ d and
    # g_std·Σ d·c = g_std·Q).
    sum_dpre = scale * (kink_e + mean_g * kink_m - rstd * rstd * cov * kink_q)
    if not MODULATED:
        g_mean, g_std = tl.reshape(g_mean, [ROWS]), tl.reshape(g_std, [ROWS])
        sum_dpre += g_mean * (tl.reshape(d0, [ROWS]) * (hi - lo) - kink_m) + g_std * kink_q
    slot = rows * SPLIT + part
    tl.store(part_b_ptr + slot, sum_dpre, mask=row_ok)
    if MODULATED:
        first = first_chunk(rows, row_ok, part)
        n, c = rows // C, rows % C
        tl.store(grad_style_ptr + n * 2 * C + c, HW * cov * rstd, mask=first)
        tl.store(grad_style_ptr + n * 2 * C + C + c, sum_g, mask=first)
        tl.store(part_wn_ptr + slot, tl.sum(acc_dn, 1), mask=row_ok)


_moments = RowKernel(_moments_kernel, has_single=False)
_fwd = RowKernel(_fwd_kernel)
_bwd_sums = RowKernel(_bwd_sums_kernel, has_single=False)
_bwd = RowKernel(_bwd_kernel, has_single=False)  # a short row is one iteration of its loops


def norm_rows_fwd(x, noise, noise_weight, bias, style, eps, slope, acc: torch.dtype):
    """(y [N,C,H,W] in x's layout, stats [N,2C] in bias's dtype), computed in `acc`; noise [N,1,H,W],
    noise_weight [C] and style [N,2C] for modulated_adain, or None for style_extract."""
    n, c, h, w = x.shape
    modulated = style is not None
    y = empty_act(x)
    stats = torch.empty((n, 2 * c), dtype=bias.dtype, device=x.device)
    if x.numel():
        noise = noise.contiguous() if modulated else x
        split, chunk = row_split(n * c, h * w, x.device)
        parts = chunk_partials(n * c, split, bias, 4, acc)
        params = (noise, noise_weight if modulated else bias, bias)
        flags = dict(SLOPE=float(slope), ACC=tl_acc(acc), NHWC=not x.is_contiguous(), MODULATED=modulated)
        if split > 1:
            _moments(n * c, h * w, x, *params, parts, c, split=split, chunk=chunk, **flags)
        _fwd(n * c, h * w, x, *params, style if modulated else bias, parts, y, stats, c, split=split, chunk=chunk,
             EPS=float(eps), SPLIT_BLOCK=triton.next_power_of_2(split), **flags)
    return y, stats


def norm_rows_bwd(grad_y, x, noise, noise_weight, bias, row_in, stats, eps, slope, acc: torch.dtype):
    """(grad_x [N,C,H,W] in x's layout, grad_noise_weight [C], grad_bias [C], grad_style [N,2C]) for
    modulated_adain (noise, noise_weight given; row_in = style), or (grad_x, None, grad_bias, None) for
    style_extract (noise = noise_weight = None; row_in = grad_stats). Computed in `acc`."""
    n, c, h, w = x.shape
    modulated = noise is not None
    grad_x = empty_act(x)
    grad_style = torch.zeros_like(row_in) if modulated else None
    split, chunk = row_split(n * c, h * w, x.device)
    # Per-(n, c, chunk) partial sums, reduced over N and the chunks afterwards: deterministic, no atomics.
    part_b = torch.zeros((n, c, split), dtype=bias.dtype, device=x.device)
    part_wn = torch.zeros_like(part_b) if modulated else part_b
    if x.numel():
        grad_y = match_layout(grad_y, x)
        noise = noise.contiguous() if modulated else x
        sums = chunk_partials(n * c, split, bias, 3, acc)
        params = (noise, noise_weight if modulated else bias, bias)
        flags = dict(SLOPE=float(slope), ACC=tl_acc(acc), NHWC=not x.is_contiguous(), MODULATED=modulated)
        if split > 1:
            _bwd_sums(n * c, h * w, grad_y, x, *params, stats, sums, c, split=split, chunk=chunk, **flags)
        style_out = row_in if grad_style is None else grad_style  # style_extract writes none
        _bwd(n * c, h * w, grad_y, x, *params, row_in, stats, sums, grad_x, style_out, part_wn, part_b, c, split=split,
             chunk=chunk, EPS=float(eps), SPLIT_BLOCK=triton.next_power_of_2(split), **flags)
    grad_wn = part_wn.sum((0, 2)) if modulated else None
    return grad_x, grad_wn, part_b.sum((0, 2)), grad_style
