"""Instance-norm style extraction in Triton, on the shared instance-norm rows of _triton_rows.

t = lrelu(x + b[c], 0.2);  y = (t − μ)·rsqrt(σ² + 1e-5);  stats = (μ | σ).
The backward takes gradients from y and from both statistics and recomputes t. The double backward
(here) splits long rows like the first-order kernels: chunk sums, then the outputs (3 passes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (RowKernel, acc_dtype, check_activation, check_tensor, chunk_partials, combine_sums,
                                   const, empty_act, first_chunk, leaky, leaky_grad, match_layout, narrow, pixel,
                                   row_base, row_chunk, row_split, store_partials, tl_acc)
from alae_fast.ops._triton_rows import norm_rows_bwd, norm_rows_fwd


@triton.jit
def _bwd2_inputs(x_row, g_row, q_row, px, mask, b, ACC: tl.constexpr, HAS_GGX: tl.constexpr):
    """(x + b, grad_y, gg_x or 0) at offsets px of a [ROWS, BLOCK] tile, in ACC."""
    pre = tl.load(x_row + px, mask=mask, other=0).to(ACC) + b
    g = tl.load(g_row + px, mask=mask, other=0).to(ACC)
    q = tl.load(q_row + px, mask=mask, other=0).to(ACC) if HAS_GGX else 0.0
    return pre, g, q


@triton.jit
def _bwd2_rows(x_ptr, grad_y_ptr, gg_x_ptr, b_ptr, gg_b_ptr, stats_ptr, C, NC, HW, SPLIT, CHUNK, ACC: tl.constexpr,
               NHWC: tl.constexpr, HAS_GGB: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """This program's rows [ROWS], chunk index, pixels [lo, hi), row mask, row offsets [ROWS, 1], x, grad_y
    and gg_x rows, b and gg_b [ROWS, 1], mean [ROWS, 1], std [ROWS] and the tile's columns [1, BLOCK]."""
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    n, c = rows // C, rows % C
    b = tl.load(b_ptr + c, mask=row_ok, other=0)[:, None]
    qb = tl.load(gg_b_ptr + c, mask=row_ok, other=0)[:, None] if HAS_GGB else tl.zeros([ROWS, 1], ACC)
    mean = tl.load(stats_ptr + n * 2 * C + c, mask=row_ok, other=0)[:, None]
    sd = tl.load(stats_ptr + n * 2 * C + C + c, mask=row_ok, other=0)
    base = row_base(rows, C, HW, NHWC)[:, None]
    return (rows, part, lo, hi, row_ok, base, x_ptr + base, grad_y_ptr + base, gg_x_ptr + base, b, qb, mean, sd,
            tl.arange(0, BLOCK)[None, :])


@triton.jit
def _bwd2_chunk_sums(x_row, g_row, q_row, cols, row_ok, lo, hi, b, qb, mean, slope, C, ACC: tl.constexpr,
                     NHWC: tl.constexpr, HAS_GGX: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """(Σ g, Σ g·c, Σ u, Σ u·c, Σ u·g) [ROWS] over pixels [lo, hi), with c = t − mean and
    u = (gg_x + gg_b)·lrelu'(pre)."""
    zero = tl.zeros([ROWS, BLOCK], ACC)
    acc_g, acc_gc, acc_u, acc_uc, acc_ug = zero, zero, zero, zero, zero
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        pre, g, q = _bwd2_inputs(x_row, g_row, q_row, pixel(start + cols, C, NHWC), mask, b, ACC, HAS_GGX)
        cen = tl.where(mask, leaky(pre, slope) - mean, 0.0)
        u = tl.where(mask, (q + qb) * leaky_grad(pre, slope), 0.0)
        acc_g += g
        acc_gc += g * cen
        acc_u += u
        acc_uc += u * cen
        acc_ug += u * g
    return tl.sum(acc_g, 1), tl.sum(acc_gc, 1), tl.sum(acc_u, 1), tl.sum(acc_uc, 1), tl.sum(acc_ug, 1)


@triton.jit
def _style_bwd2_sums_kernel(
    grad_y_ptr, x_ptr, gg_x_ptr,  # [N, C, H, W] x.dtype each: x NCHW or NHWC, the others in x's layout
    b_ptr, gg_b_ptr,  # [C] acc each (gg_b read when HAS_GGB)
    stats_ptr,  # [N, 2C] acc, (mean | std)
    parts_ptr,  # [5, N*C, SPLIT] acc, written: chunk (Σ g, Σ g·c, Σ u, Σ u·c, Σ u·g), see _bwd2_chunk_sums
    C, NC, HW, SPLIT, CHUNK,  # channels, rows = N*C, row length, programs per row, pixels per program
    HAS_GGX: tl.constexpr, HAS_GGB: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr, NHWC: tl.constexpr,
    BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    rows, part, lo, hi, row_ok, _, x_row, g_row, q_row, b, qb, mean, _, cols = _bwd2_rows(
        x_ptr, grad_y_ptr, gg_x_ptr, b_ptr, gg_b_ptr, stats_ptr, C, NC, HW, SPLIT, CHUNK, ACC, NHWC, HAS_GGB, BLOCK,
        ROWS)
    s_g, s_gc, s_u, s_uc, s_ug = _bwd2_chunk_sums(x_row, g_row, q_row, cols, row_ok, lo, hi, b, qb, mean,
                                                  const(SLOPE, ACC), C, ACC, NHWC, HAS_GGX, BLOCK, ROWS)
    store_partials(parts_ptr, rows, row_ok, part, NC, SPLIT, s_g, s_gc, s_u, s_uc, s_ug, 5)


@triton.jit
def _style_bwd2_kernel(
    grad_y_ptr, x_ptr, gg_x_ptr,  # [N, C, H, W] x.dtype each: x NCHW or NHWC, the others in x's layout
    b_ptr, gg_b_ptr,  # [C] acc each (gg_b read when HAS_GGB)
    stats_ptr,  # [N, 2C] acc, (mean | std)
    grad_stats_ptr,  # [N, 2C] acc, (d mean | d std)
    parts_ptr,  # [5, N*C, SPLIT] acc: _style_bwd2_sums_kernel's (read when SPLIT > 1)
    g_grad_y_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    g_stats_ptr,  # [N, 2C] acc, written
    g_x_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    part_b_ptr,  # [N*C, SPLIT] acc, written: chunk Σ g_x
    C, NC, HW, SPLIT, CHUNK,  # channels, rows = N*C, row length, programs per row, pixels per program
    HAS_GGX: tl.constexpr, HAS_GGB: tl.constexpr, EPS: tl.constexpr, SLOPE: tl.constexpr, ACC: tl.constexpr,
    NHWC: tl.constexpr, SPLIT_BLOCK: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    """Backward of style_bwd; the formulas are those of csrc/style/cpu.cpp's style_bwd2."""
    slope = const(SLOPE, ACC)
    rows, part, lo, hi, row_ok, base, x_row, g_row, q_row, b, qb, mean, sd, cols = _bwd2_rows(
        x_ptr, grad_y_ptr, gg_x_ptr, b_ptr, gg_b_ptr, stats_ptr, C, NC, HW, SPLIT, CHUNK, ACC, NHWC, HAS_GGB, BLOCK,
        ROWS)
    n, c = rows // C, rows % C
    r = 1.0 / tl.sqrt(sd * sd + const(EPS, ACC))
    if SPLIT > 1:
        stride = NC * SPLIT
        s_g = combine_sums(parts_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK)
        s_gc = combine_sums(parts_ptr + stride, rows, row_ok, SPLIT, SPLIT_BLOCK)
        s_u = combine_sums(parts_ptr + 2 * stride, rows, row_ok, SPLIT, SPLIT_BLOCK)
        s_uc = combine_sums(parts_ptr + 3 * stride, rows, row_ok, SPLIT, SPLIT_BLOCK)
        s_ug = combine_sums(parts_ptr + 4 * stride, rows, row_ok, SPLIT, SPLIT_BLOCK)
    else:
        s_g, s_gc, s_u, s_uc, s_ug = _bwd2_chunk_sums(x_row, g_row, q_row, cols, row_ok, 0, HW, b, qb, mean, slope, C,
                                                      ACC, NHWC, HAS_GGX, BLOCK, ROWS)
    mean_g, a, mean_u, uc = s_g / HW, s_gc / HW, s_u / HW, s_uc / HW
    u1 = (s_ug - mean_g * s_u) / HW
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
    for start in range(lo, hi, BLOCK):
        mask = row_ok[:, None] & (start + cols < hi)
        px = pixel(start + cols, C, NHWC)
        pre, g, q = _bwd2_inputs(x_row, g_row, q_row, px, mask, b, ACC, HAS_GGX)
        d = leaky_grad(pre, slope)
        cen = leaky(pre, slope) - mean
        du = (q + qb) * d - mean_u2
        tl.store(g_grad_y_ptr + base + px, narrow(r * du - r3 * cen * uc2, g_grad_y_ptr.dtype.element_ty), mask=mask)
        gx = tl.where(mask, d * (coef_c * cen + coef_g * (g - mean_g2) + coef_u * du), 0.0)
        tl.store(g_x_ptr + base + px, narrow(gx, g_x_ptr.dtype.element_ty), mask=mask)
        acc_d += gx
    first = first_chunk(rows, row_ok, part)
    tl.store(g_stats_ptr + n * 2 * C + c, mean_u, mask=first)
    tl.store(g_stats_ptr + n * 2 * C + C + c, tl.where(positive, uc / safe_sd, 0.0), mask=first)
    tl.store(part_b_ptr + rows * SPLIT + part, tl.sum(acc_d, 1), mask=row_ok)


_bwd2_sums = RowKernel(_style_bwd2_sums_kernel, has_single=False)
_bwd2 = RowKernel(_style_bwd2_kernel, has_single=False)  # a short row is one iteration of its loops


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
    for the cotangents gg_x [N,C,H,W] and gg_bias [C] of its outputs (None: zeros); long rows split
    as the first-order kernels' (row sums, then the outputs); activations in x's layout."""
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
    split, chunk = row_split(n * c, h * w, x.device)
    # Per-(n, c, chunk) partial sums, reduced over N and the chunks afterwards: deterministic, no atomics.
    part_b = torch.zeros((n, c, split), dtype=acc, device=x.device)
    if x.numel():
        grad_y = match_layout(grad_y, x)
        gg_x = None if gg_x is None else match_layout(gg_x, x)
        inputs = (grad_y, x, x if gg_x is None else gg_x, bias, bias if gg_bias is None else gg_bias, stats)
        parts = chunk_partials(n * c, split, bias, 5, acc)
        flags = dict(HAS_GGX=gg_x is not None, HAS_GGB=gg_bias is not None, SLOPE=float(slope), ACC=tl_acc(x.dtype),
                     NHWC=not x.is_contiguous())
        if split > 1:
            _bwd2_sums(n * c, h * w, *inputs, parts, c, split=split, chunk=chunk, **flags)
        _bwd2(n * c, h * w, *inputs, grad_stats, parts, g_grad_y, g_stats, g_x, part_b, c, split=split, chunk=chunk,
              EPS=float(eps), SPLIT_BLOCK=triton.next_power_of_2(split), **flags)
    return g_grad_y, g_stats, g_x, part_b.sum((0, 2))
