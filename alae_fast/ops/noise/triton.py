"""Noise injection in Triton: y = x + wn[c]·noise[n] (+ b[c]) (then leaky ReLU 0.2); NCHW or NHWC.

Forward: a flat elementwise kernel in memory order. Backward: row (or row-chunk) programs that
also reduce the per-(n, c, chunk) sums for grad_noise_weight and grad_bias (reduced over N and
the chunks afterwards, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (FlatKernel, RowKernel, acc_dtype, check_activation, check_tensor, const,
                                   empty_act, leaky, leaky_grad, match_layout, pixel, row_base, row_chunk, row_split,
                                   tl_acc)


@triton.jit
def _noise_fwd_kernel(
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    noise_ptr,  # [N, HW] x.dtype
    wn_ptr,  # [C] acc
    b_ptr,  # [C] acc (unused when not HAS_BIAS)
    y_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    C,  # channels
    HW,  # row length
    numel,  # N*C*HW
    SLOPE: tl.constexpr, ACC: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, NHWC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK], in memory order
    mask = offs < numel
    if NHWC:
        c, hw, n = offs % C, (offs // C) % HW, offs // (C * HW)
    else:
        c, hw, n = (offs // HW) % C, offs % HW, offs // (C * HW)
    t = tl.load(x_ptr + offs, mask=mask, other=0).to(ACC)
    t += tl.load(wn_ptr + c, mask=mask, other=0) * tl.load(noise_ptr + n * HW + hw, mask=mask, other=0).to(ACC)
    if HAS_BIAS:
        t += tl.load(b_ptr + c, mask=mask, other=0)
    if ACT:
        t = leaky(t, const(SLOPE, ACC))
    tl.store(y_ptr + offs, t.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _noise_bwd_kernel(
    grad_y_ptr,  # [N, C, H, W] x.dtype, x's layout
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC (read only when ACT)
    noise_ptr,  # [N, HW] x.dtype
    wn_ptr,  # [C] acc
    b_ptr,  # [C] acc (unused when not HAS_BIAS)
    grad_x_ptr,  # [N, C, H, W] x.dtype, x's layout, written
    part_wn_ptr,  # [N*C, SPLIT] acc, written: chunk Σ dpre·noise
    part_b_ptr,  # [N*C, SPLIT] acc, written: chunk Σ dpre
    C,  # channels
    NC,  # rows = N*C
    HW,  # row length
    SPLIT,  # programs per row
    CHUNK,  # pixels per program
    SLOPE: tl.constexpr, ACC: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, NHWC: tl.constexpr,
    BLOCK: tl.constexpr, ROWS: tl.constexpr,
):
    rows, part, lo, hi = row_chunk(SPLIT, CHUNK, HW, ROWS)
    row_ok = rows < NC
    n, c = rows // C, rows % C
    wn = tl.load(wn_ptr + c, mask=row_ok, other=0)[:, None]
    if HAS_BIAS:
        b = tl.load(b_ptr + c, mask=row_ok, other=0)[:, None]
    base = row_base(rows, C, HW, NHWC)[:, None]  # [ROWS, 1]
    cols = tl.arange(0, BLOCK)[None, :]  # [1, BLOCK]
    acc_d = tl.zeros([ROWS, BLOCK], ACC)
    acc_dn = tl.zeros([ROWS, BLOCK], ACC)
    for start in range(lo, hi, BLOCK):
        offs = base + pixel(start + cols, C, NHWC)  # [ROWS, BLOCK]
        mask = row_ok[:, None] & (start + cols < hi)
        noise = tl.load(noise_ptr + n[:, None] * HW + start + cols, mask=mask, other=0).to(ACC)
        dpre = tl.load(grad_y_ptr + offs, mask=mask, other=0).to(ACC)
        if ACT:
            pre = tl.load(x_ptr + offs, mask=mask, other=0).to(ACC) + wn * noise
            if HAS_BIAS:
                pre += b
            dpre *= leaky_grad(pre, const(SLOPE, ACC))
        tl.store(grad_x_ptr + offs, dpre.to(grad_x_ptr.dtype.element_ty), mask=mask)
        acc_d += dpre
        acc_dn += dpre * noise
    tl.store(part_wn_ptr + rows * SPLIT + part, tl.sum(acc_dn, 1), mask=row_ok)
    tl.store(part_b_ptr + rows * SPLIT + part, tl.sum(acc_d, 1), mask=row_ok)


_fwd = FlatKernel(_noise_fwd_kernel)
_bwd = RowKernel(_noise_bwd_kernel, has_single=False)


def _check(op, x, noise, noise_weight, bias):
    check_activation(op, "x", x, x.device)
    n, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    check_tensor(op, "noise", noise, x.device, x.dtype, (n, 1, h, w), "[N, 1, H, W]")
    check_tensor(op, "noise_weight", noise_weight, x.device, acc, (c,), "[C]")
    if bias is not None:
        check_tensor(op, "bias", bias, x.device, acc, (c,), "[C]")


def noise_fwd(x, noise, noise_weight, bias, act, slope):
    """y [N,C,H,W] = x + noise_weight·noise (+ bias) (then leaky ReLU 0.2 when act)."""
    _check("noise_fwd", x, noise, noise_weight, bias)
    _, c, h, w = x.shape
    y = empty_act(x)
    if x.numel():
        _fwd(x.numel(), x, noise.contiguous(), noise_weight, noise_weight if bias is None else bias, y, c, h * w,
             SLOPE=float(slope), ACC=tl_acc(x.dtype), HAS_BIAS=bias is not None, ACT=bool(act),
             NHWC=not x.is_contiguous())
    return y


def noise_bwd(grad_y, x, noise, noise_weight, bias, act, slope):
    """(grad_x [N,C,H,W], grad_noise_weight [C], grad_bias [C], zeros when bias is None)."""
    _check("noise_bwd", x, noise, noise_weight, bias)
    check_tensor("noise_bwd", "grad_y", grad_y, x.device, x.dtype, x.shape, "[N, C, H, W]")
    n, c, h, w = x.shape
    grad_x = empty_act(x)
    split, chunk = row_split(n * c, h * w, x.device)
    # Per-(n, c, chunk) partial sums, reduced over N and the chunks afterwards: deterministic, no atomics.
    part_wn, part_b = (torch.zeros((n, c, split), dtype=noise_weight.dtype, device=x.device) for _ in range(2))
    if x.numel():
        _bwd(n * c, h * w, match_layout(grad_y, x), x, noise.contiguous(), noise_weight,
             noise_weight if bias is None else bias, grad_x, part_wn, part_b, c, split=split, chunk=chunk,
             SLOPE=float(slope), ACC=tl_acc(x.dtype), HAS_BIAS=bias is not None, ACT=bool(act),
             NHWC=not x.is_contiguous())
    grad_bias = part_b.sum((0, 2)) if bias is not None else torch.zeros_like(noise_weight)
    return grad_x, part_wn.sum((0, 2)), grad_bias
