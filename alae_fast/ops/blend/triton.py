"""Blended 2x resampling for progressive growing (SPEC §7.4) in Triton.

blend_up and blend_real run over low-resolution pixels p = (row, i, j); each program touches
the 2x2 high-resolution block of its pixels as two [BLOCK, 2] tiles (top and bottom rows), so
loads and stores stay contiguous. blend_down fuses avgpool2, the 1×1 from_rgb, bias, leaky ReLU
and the lerp; its backward reduces grad_weight/grad_bias into per-program partials (no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alae_fast.ops._triton import (INTERPRET, FlatKernel, acc_dtype, check_activation, check_alpha, check_even,
                                          check_slope, check_tensor, leaky, leaky_grad, scalar, split_scalar,
                                          tl_acc)


@triton.jit
def _lerp(a, b, w):
    """torch.lerp's formula: exact at both ends."""
    return tl.where(w < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


@triton.jit
def _quad(p, W, W2, HW2):
    """Offsets [BLOCK, 2] of the top row of the 2x2 block of low-res pixels p [BLOCK] (+W: bottom row)."""
    row, r = p // HW2, p % HW2
    base = row * 4 * HW2 + (r // W2) * 2 * W + (r % W2) * 2
    return base[:, None] + tl.arange(0, 2)[None, :]


@triton.jit
def _blend_up_fwd_kernel(
    low_ptr,  # [N*C*H2*W2] x.dtype
    high_ptr,  # [N*C*H*W] x.dtype
    y_ptr,  # [N*C*H*W] x.dtype, written
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    W,  # high-res width
    W2,  # low-res width
    HW2,  # low-res pixels per row
    numel,  # N*C*H2*W2
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    alpha = scalar(alpha_hi, alpha_lo, ACC)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    mask = p < numel
    mask2 = mask[:, None]
    top = _quad(p, W, W2, HW2)  # [BLOCK, 2]
    low = tl.load(low_ptr + p, mask=mask, other=0).to(ACC)[:, None]
    for dy in tl.static_range(2):
        high = tl.load(high_ptr + top + dy * W, mask=mask2, other=0).to(ACC)
        tl.store(y_ptr + top + dy * W, _lerp(low, high, alpha).to(y_ptr.dtype.element_ty), mask=mask2)


@triton.jit
def _blend_up_bwd_kernel(
    grad_y_ptr,  # [N*C*H*W] x.dtype
    grad_low_ptr,  # [N*C*H2*W2] x.dtype, written: (1 − alpha)·Σ_2x2 grad_y
    grad_high_ptr,  # [N*C*H*W] x.dtype, written: alpha·grad_y
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    W,  # high-res width
    W2,  # low-res width
    HW2,  # low-res pixels per row
    numel,  # N*C*H2*W2
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    alpha = scalar(alpha_hi, alpha_lo, ACC)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    mask = p < numel
    mask2 = mask[:, None]
    top = _quad(p, W, W2, HW2)  # [BLOCK, 2]
    total = tl.zeros([BLOCK], ACC)
    for dy in tl.static_range(2):
        g = tl.load(grad_y_ptr + top + dy * W, mask=mask2, other=0).to(ACC)
        tl.store(grad_high_ptr + top + dy * W, (alpha * g).to(grad_high_ptr.dtype.element_ty), mask=mask2)
        total += tl.sum(g, 1)
    tl.store(grad_low_ptr + p, ((1 - alpha) * total).to(grad_low_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _blend_real_fwd_kernel(
    x_ptr,  # [N*C*H*W] x.dtype
    y_ptr,  # [N*C*H*W] x.dtype, written: alpha·x + (1 − alpha)·mean_2x2 x
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    W,  # high-res width
    W2,  # low-res width
    HW2,  # low-res pixels per row
    numel,  # N*C*H2*W2
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    alpha = scalar(alpha_hi, alpha_lo, ACC)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    mask2 = (p < numel)[:, None]
    top = _quad(p, W, W2, HW2)  # [BLOCK, 2]
    x0 = tl.load(x_ptr + top, mask=mask2, other=0).to(ACC)
    x1 = tl.load(x_ptr + top + W, mask=mask2, other=0).to(ACC)
    pooled = ((1 - alpha) * 0.25 * (tl.sum(x0, 1) + tl.sum(x1, 1)))[:, None]
    tl.store(y_ptr + top, (alpha * x0 + pooled).to(y_ptr.dtype.element_ty), mask=mask2)
    tl.store(y_ptr + top + W, (alpha * x1 + pooled).to(y_ptr.dtype.element_ty), mask=mask2)


@triton.jit
def _pool(img_ptr, n, p, p_ok, W, W2, HW2, K, ACC: tl.constexpr, K_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr):
    """avgpool2 of img [N, K, H, W] at sample n, low-res pixels p [P_BLOCK] -> [K_BLOCK, P_BLOCK] in ACC."""
    k = tl.arange(0, K_BLOCK)[:, None]  # [K_BLOCK, 1]
    mask = (k < K) & p_ok[None, :]
    base = img_ptr + (n * K + k) * 4 * HW2 + ((p // W2) * 2 * W + (p % W2) * 2)[None, :]
    total = tl.zeros([K_BLOCK, P_BLOCK], ACC)
    for dy in tl.static_range(2):
        for dx in tl.static_range(2):
            total += tl.load(base + dy * W + dx, mask=mask, other=0).to(ACC)
    return total * 0.25


@triton.jit
def _blend_down_fwd_kernel(
    img_ptr,  # [N, K, H, W] x.dtype
    w_ptr,  # [C, K] acc
    b_ptr,  # [C] acc
    new_ptr,  # [N, C, H2*W2] x.dtype
    y_ptr,  # [N, C, H2*W2] x.dtype, written
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    slope_hi, slope_lo,  # leaky ReLU slope split in two fp32
    C,  # output channels
    K,  # image channels
    W,  # high-res width
    W2,  # low-res width
    HW2,  # low-res pixels per image
    ACC: tl.constexpr, K_BLOCK: tl.constexpr, C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr,
):
    alpha = scalar(alpha_hi, alpha_lo, ACC)
    slope = scalar(slope_hi, slope_lo, ACC)
    n = tl.program_id(0)
    p = tl.program_id(1) * P_BLOCK + tl.arange(0, P_BLOCK)  # [P_BLOCK]
    p_ok = p < HW2
    c = tl.program_id(2) * C_BLOCK + tl.arange(0, C_BLOCK)  # [C_BLOCK]
    c_ok = c < C
    k = tl.arange(0, K_BLOCK)[None, :]  # [1, K_BLOCK]
    pooled = _pool(img_ptr, n, p, p_ok, W, W2, HW2, K, ACC, K_BLOCK, P_BLOCK)  # [K_BLOCK, P_BLOCK]
    weight = tl.load(w_ptr + c[:, None] * K + k, mask=c_ok[:, None] & (k < K), other=0)  # [C_BLOCK, K_BLOCK]
    pre = tl.sum(weight[:, :, None] * pooled[None, :, :], 1)  # [C_BLOCK, P_BLOCK]
    pre += tl.load(b_ptr + c, mask=c_ok, other=0)[:, None]
    offs = (n * C + c[:, None]) * HW2 + p[None, :]
    mask = c_ok[:, None] & p_ok[None, :]
    new = tl.load(new_ptr + offs, mask=mask, other=0).to(ACC)
    tl.store(y_ptr + offs, _lerp(leaky(pre, slope), new, alpha).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _blend_down_bwd_kernel(
    grad_y_ptr,  # [N, C, H2*W2] x.dtype
    img_ptr,  # [N, K, H, W] x.dtype
    w_ptr,  # [C, K] acc
    b_ptr,  # [C] acc
    grad_img_ptr,  # [N, K, H, W] x.dtype, written
    grad_new_ptr,  # [N, C, H2*W2] x.dtype, written: alpha·grad_y
    part_w_ptr,  # [N*G, C, K] acc, zero-initialised; each program accumulates its own slice
    part_b_ptr,  # [N*G, C] acc, zero-initialised; each program accumulates its own slice
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    slope_hi, slope_lo,  # leaky ReLU slope split in two fp32
    C,  # output channels
    K,  # image channels
    W,  # high-res width
    W2,  # low-res width
    HW2,  # low-res pixels per image
    ACC: tl.constexpr, K_BLOCK: tl.constexpr, C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr,
):
    alpha = scalar(alpha_hi, alpha_lo, ACC)
    slope = scalar(slope_hi, slope_lo, ACC)
    n, g = tl.program_id(0), tl.program_id(1)
    G = tl.num_programs(1)
    slot = n * G + g
    kc = tl.arange(0, K_BLOCK)[None, :]  # [1, K_BLOCK]
    kr = tl.arange(0, K_BLOCK)[:, None]  # [K_BLOCK, 1]
    # Program (n, g) owns the pixel blocks g, g + G, ... of sample n.
    for p_start in range(g * P_BLOCK, HW2, G * P_BLOCK):
        p = p_start + tl.arange(0, P_BLOCK)  # [P_BLOCK]
        p_ok = p < HW2
        pooled = _pool(img_ptr, n, p, p_ok, W, W2, HW2, K, ACC, K_BLOCK, P_BLOCK)  # [K_BLOCK, P_BLOCK]
        grad_pooled = tl.zeros([K_BLOCK, P_BLOCK], ACC)
        for c_start in range(0, C, C_BLOCK):
            c = c_start + tl.arange(0, C_BLOCK)  # [C_BLOCK]
            c_ok = c < C
            wk_mask = c_ok[:, None] & (kc < K)
            weight = tl.load(w_ptr + c[:, None] * K + kc, mask=wk_mask, other=0)  # [C_BLOCK, K_BLOCK]
            pre = tl.sum(weight[:, :, None] * pooled[None, :, :], 1)
            pre += tl.load(b_ptr + c, mask=c_ok, other=0)[:, None]  # [C_BLOCK, P_BLOCK]
            offs = (n * C + c[:, None]) * HW2 + p[None, :]
            mask = c_ok[:, None] & p_ok[None, :]
            gy = tl.load(grad_y_ptr + offs, mask=mask, other=0).to(ACC)
            tl.store(grad_new_ptr + offs, (alpha * gy).to(grad_new_ptr.dtype.element_ty), mask=mask)
            dpre = (1 - alpha) * gy * leaky_grad(pre, slope)  # zero where masked (gy = 0)
            grad_pooled += tl.sum(weight[:, :, None] * dpre[:, None, :], 0)
            w_part = part_w_ptr + (slot * C + c[:, None]) * K + kc
            tl.store(w_part, tl.load(w_part, mask=wk_mask, other=0)
                     + tl.sum(dpre[:, None, :] * pooled[None, :, :], 2), mask=wk_mask)
            b_part = part_b_ptr + slot * C + c
            tl.store(b_part, tl.load(b_part, mask=c_ok, other=0) + tl.sum(dpre, 1), mask=c_ok)
        # Each pooled value spreads evenly over its 2x2 block.
        base = grad_img_ptr + (n * K + kr) * 4 * HW2 + ((p // W2) * 2 * W + (p % W2) * 2)[None, :]
        value = (grad_pooled * 0.25).to(grad_img_ptr.dtype.element_ty)
        mask = (kr < K) & p_ok[None, :]
        for dy in tl.static_range(2):
            for dx in tl.static_range(2):
                tl.store(base + dy * W + dx, value, mask=mask)


_up_fwd = FlatKernel(_blend_up_fwd_kernel)
_up_bwd = FlatKernel(_blend_up_bwd_kernel)
_real_fwd = FlatKernel(_blend_real_fwd_kernel)


def _half_dims(t):
    """(W, W2, HW2, low-res numel) of a full-resolution activation."""
    n, c, h, w = t.shape
    return w, w // 2, (h // 2) * (w // 2), n * c * (h // 2) * (w // 2)


def blend_up_fwd(low, high, alpha):
    """y [N,C,H,W] = lerp(nearest_up2(low), high, alpha)."""
    op = "blend_up_fwd"
    check_even(op, "high", high)
    n, c, h, w = high.shape
    check_tensor(op, "low", low, high.device, high.dtype, (n, c, h // 2, w // 2), "[N, C, H/2, W/2]")
    check_alpha(op, alpha)
    y = torch.empty_like(high)
    w_, w2, hw2, numel = _half_dims(high)
    if numel:
        _up_fwd(numel, low, high, y, *split_scalar(alpha), w_, w2, hw2, ACC=tl_acc(high.dtype))
    return y


def blend_up_bwd(grad_y, alpha):
    """(grad_low [N,C,H/2,W/2], grad_high [N,C,H,W])."""
    op = "blend_up_bwd"
    check_even(op, "grad_y", grad_y)
    check_alpha(op, alpha)
    n, c, h, w = grad_y.shape
    grad_low = grad_y.new_empty((n, c, h // 2, w // 2))
    grad_high = torch.empty_like(grad_y)
    w_, w2, hw2, numel = _half_dims(grad_y)
    if numel:
        _up_bwd(numel, grad_y, grad_low, grad_high, *split_scalar(alpha), w_, w2, hw2, ACC=tl_acc(grad_y.dtype))
    return grad_low, grad_high


def blend_real_fwd(x, alpha):
    """y [N,C,H,W] = alpha·x + (1 − alpha)·nearest_up2(avgpool2(x)); self-adjoint."""
    op = "blend_real_fwd"
    check_even(op, "x", x)
    check_alpha(op, alpha)
    y = torch.empty_like(x)
    w_, w2, hw2, numel = _half_dims(x)
    if numel:
        _real_fwd(numel, x, y, *split_scalar(alpha), w_, w2, hw2, ACC=tl_acc(x.dtype))
    return y


def _check_down(op, img, weight, bias, name, half, alpha, slope):
    check_even(op, "img", img)
    check_activation(op, name, half, img.device)
    n, k, h, w = img.shape
    c = half.shape[1]
    acc = acc_dtype(img.dtype)
    check_tensor(op, name, half, img.device, img.dtype, (n, c, h // 2, w // 2), "[N, C, H/2, W/2]")
    check_tensor(op, "weight", weight, img.device, acc, (c, k), "[C, K]")
    check_tensor(op, "bias", bias, img.device, acc, (c,), "[C]")
    check_alpha(op, alpha)
    check_slope(op, slope)


def _down_tiles(k: int, c: int) -> tuple[int, int, int]:
    """(K_BLOCK, C_BLOCK, P_BLOCK) with a [C_BLOCK, K_BLOCK, P_BLOCK] product of ≤ 8K elements."""
    k_block = triton.next_power_of_2(k)
    c_block = min(triton.next_power_of_2(c), 4 if INTERPRET else 16)
    p_block = 8 if INTERPRET else max(16, 8192 // (k_block * c_block))
    return k_block, c_block, p_block


def blend_down_fwd(img, weight, bias, new, alpha, slope):
    """y [N,C,H/2,W/2] = lerp(lrelu(weight·avgpool2(img) + bias, slope), new, alpha)."""
    _check_down("blend_down_fwd", img, weight, bias, "new", new, alpha, slope)
    n, k, h, w = img.shape
    c = new.shape[1]
    y = torch.empty_like(new)
    hw2 = (h // 2) * (w // 2)
    k_block, c_block, p_block = _down_tiles(k, c)
    if y.numel():
        grid = (n, triton.cdiv(hw2, p_block), triton.cdiv(c, c_block))
        _blend_down_fwd_kernel[grid](img, weight, bias, new, y, *split_scalar(alpha), *split_scalar(slope),
                                     c, k, w, w // 2, hw2, ACC=tl_acc(img.dtype), K_BLOCK=k_block,
                                     C_BLOCK=c_block, P_BLOCK=p_block)
    return y


def blend_down_bwd(grad_y, img, weight, bias, alpha, slope):
    """(grad_img [N,K,H,W], grad_weight [C,K], grad_bias [C], grad_new [N,C,H/2,W/2])."""
    _check_down("blend_down_bwd", img, weight, bias, "grad_y", grad_y, alpha, slope)
    n, k, h, w = img.shape
    c = grad_y.shape[1]
    hw2 = (h // 2) * (w // 2)
    k_block, c_block, p_block = _down_tiles(k, c)
    # Pixel groups per sample: enough programs to fill the GPU, few enough partials to stay small.
    groups = max(1, min(triton.cdiv(hw2, p_block), (2 if INTERPRET else 1024) // max(n, 1)))
    # With no output channels (C = 0) no program runs and the image gets no gradient.
    grad_img = torch.empty_like(img) if grad_y.numel() else torch.zeros_like(img)
    grad_new = torch.empty_like(grad_y)
    part_w = torch.zeros((n * groups, c, k), dtype=weight.dtype, device=img.device)
    part_b = torch.zeros((n * groups, c), dtype=weight.dtype, device=img.device)
    if grad_y.numel():
        _blend_down_bwd_kernel[(n, groups)](grad_y, img, weight, bias, grad_img, grad_new, part_w, part_b,
                                            *split_scalar(alpha), *split_scalar(slope), c, k, w, w // 2, hw2,
                                            ACC=tl_acc(img.dtype), K_BLOCK=k_block, C_BLOCK=c_block,
                                            P_BLOCK=p_block)
    return grad_img, part_w.sum(0), part_b.sum(0), grad_new
