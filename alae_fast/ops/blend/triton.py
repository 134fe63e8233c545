"""Blended 2x resampling for progressive growing in Triton, on NCHW or NHWC activations.

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
                                   check_slope, check_tensor, empty_act, in_layout, is_nhwc, leaky, leaky_grad,
                                   match_layout, scalar, split_scalar, tl_acc)


@triton.jit
def _lerp(a, b, w):
    """torch.lerp's formula: exact at both ends."""
    return tl.where(w < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


@triton.jit
def _quad(p, C, W, W2, HW2, NHWC: tl.constexpr):
    """(offsets [BLOCK, 2] of the top row of the 2x2 high-res block of the low-res elements p [BLOCK],
    the step to its bottom row). p counts in the low-res tensor's memory order (NCHW or NHWC)."""
    if NHWC:
        q = p // C
        base = (q // HW2) * 4 * HW2 * C + ((q % HW2) // W2 * 2 * W + (q % W2) * 2) * C + p % C
        return base[:, None] + tl.arange(0, 2)[None, :] * C, W * C
    row, r = p // HW2, p % HW2
    base = row * 4 * HW2 + (r // W2) * 2 * W + (r % W2) * 2
    return base[:, None] + tl.arange(0, 2)[None, :], W


@triton.jit
def _quad_program(alpha_hi, alpha_lo, C, W, W2, HW2, numel, ACC: tl.constexpr, NHWC: tl.constexpr,
                  BLOCK: tl.constexpr):
    """(alpha in ACC, this program's low-res elements p [BLOCK], their mask [BLOCK], and the offsets
    [BLOCK, 2] of the top row of their 2x2 blocks with the step to the bottom row; see _quad)."""
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    top, down = _quad(p, C, W, W2, HW2, NHWC)
    return scalar(alpha_hi, alpha_lo, ACC), p, p < numel, top, down


@triton.jit
def _blend_up_fwd_kernel(
    low_ptr,  # [N, C, H2, W2] x.dtype, NCHW or NHWC
    high_ptr,  # [N, C, H, W] x.dtype, low's layout
    y_ptr,  # [N, C, H, W] x.dtype, low's layout, written
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    C, W, W2, HW2, numel,  # channels, high-res width, low-res width, low-res pixels per row, N*C*H2*W2
    ACC: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr,
):
    alpha, p, mask, top, down = _quad_program(alpha_hi, alpha_lo, C, W, W2, HW2, numel, ACC, NHWC, BLOCK)
    mask2 = mask[:, None]
    low = tl.load(low_ptr + p, mask=mask, other=0).to(ACC)[:, None]
    for dy in tl.static_range(2):
        high = tl.load(high_ptr + top + dy * down, mask=mask2, other=0).to(ACC)
        tl.store(y_ptr + top + dy * down, _lerp(low, high, alpha).to(y_ptr.dtype.element_ty), mask=mask2)


@triton.jit
def _blend_up_bwd_kernel(
    grad_y_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    grad_low_ptr,  # [N, C, H2, W2] x.dtype, grad_y's layout, written: (1 − alpha)·Σ_2x2 grad_y
    grad_high_ptr,  # [N, C, H, W] x.dtype, grad_y's layout, written: alpha·grad_y
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    C, W, W2, HW2, numel,  # channels, high-res width, low-res width, low-res pixels per row, N*C*H2*W2
    ACC: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr,
):
    alpha, p, mask, top, down = _quad_program(alpha_hi, alpha_lo, C, W, W2, HW2, numel, ACC, NHWC, BLOCK)
    mask2 = mask[:, None]
    total = tl.zeros([BLOCK], ACC)
    for dy in tl.static_range(2):
        g = tl.load(grad_y_ptr + top + dy * down, mask=mask2, other=0).to(ACC)
        tl.store(grad_high_ptr + top + dy * down, (alpha * g).to(grad_high_ptr.dtype.element_ty), mask=mask2)
        total += tl.sum(g, 1)
    tl.store(grad_low_ptr + p, ((1 - alpha) * total).to(grad_low_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _blend_real_fwd_kernel(
    x_ptr,  # [N, C, H, W] x.dtype, NCHW or NHWC
    y_ptr,  # [N, C, H, W] x.dtype, x's layout, written: alpha·x + (1 − alpha)·mean_2x2 x
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    C, W, W2, HW2, numel,  # channels, high-res width, low-res width, low-res pixels per row, N*C*H2*W2
    ACC: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr,
):
    alpha, _, mask, top, down = _quad_program(alpha_hi, alpha_lo, C, W, W2, HW2, numel, ACC, NHWC, BLOCK)
    mask2 = mask[:, None]
    x0 = tl.load(x_ptr + top, mask=mask2, other=0).to(ACC)
    x1 = tl.load(x_ptr + top + down, mask=mask2, other=0).to(ACC)
    pooled = ((1 - alpha) * 0.25 * (tl.sum(x0, 1) + tl.sum(x1, 1)))[:, None]
    tl.store(y_ptr + top, (alpha * x0 + pooled).to(y_ptr.dtype.element_ty), mask=mask2)
    tl.store(y_ptr + top + down, (alpha * x1 + pooled).to(y_ptr.dtype.element_ty), mask=mask2)


@triton.jit
def _block_base(n, k, p, K, W, W2, HW2, NHWC: tl.constexpr):
    """(offsets [K_BLOCK, P_BLOCK] of the top-left pixel of the 2x2 blocks of channels k [K_BLOCK, 1] under
    low-res pixels p [P_BLOCK] of sample n in an [N, K, H, W] image, the x step, the y step)."""
    corner = ((p // W2) * 2 * W + (p % W2) * 2)[None, :]
    if NHWC:
        return n * K * 4 * HW2 + corner * K + k, K, W * K
    return (n * K + k) * 4 * HW2 + corner, 1, W


@triton.jit
def _low_offsets(n, c, p, C, HW2, NHWC: tl.constexpr):
    """Offsets [C_BLOCK, P_BLOCK] of channels c [C_BLOCK] at low-res pixels p [P_BLOCK] of sample n."""
    if NHWC:
        return (n * HW2 + p[None, :]) * C + c[:, None]
    return (n * C + c[:, None]) * HW2 + p[None, :]


@triton.jit
def _pool(img_ptr, n, p, p_ok, W, W2, HW2, K, ACC: tl.constexpr, NHWC: tl.constexpr, K_BLOCK: tl.constexpr,
          P_BLOCK: tl.constexpr):
    """avgpool2 of img [N, K, H, W] at sample n, low-res pixels p [P_BLOCK] -> [K_BLOCK, P_BLOCK] in ACC."""
    k = tl.arange(0, K_BLOCK)[:, None]  # [K_BLOCK, 1]
    mask = (k < K) & p_ok[None, :]
    base, step_x, step_y = _block_base(n, k, p, K, W, W2, HW2, NHWC)
    total = tl.zeros([K_BLOCK, P_BLOCK], ACC)
    for dy in tl.static_range(2):
        for dx in tl.static_range(2):
            total += tl.load(img_ptr + base + dy * step_y + dx * step_x, mask=mask, other=0).to(ACC)
    return total * 0.25


@triton.jit
def _blend_down_fwd_kernel(
    img_ptr,  # [N, K, H, W] x.dtype, NCHW or NHWC
    w_ptr,  # [C, K] acc
    b_ptr,  # [C] acc
    new_ptr,  # [N, C, H2, W2] x.dtype, img's layout
    y_ptr,  # [N, C, H2, W2] x.dtype, img's layout, written
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    slope_hi, slope_lo,  # leaky ReLU slope split in two fp32
    C, K, W, W2, HW2,  # output channels, image channels, high-res width, low-res width, low-res pixels per image
    ACC: tl.constexpr, NHWC: tl.constexpr, K_BLOCK: tl.constexpr, C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr,
):
    alpha, slope = scalar(alpha_hi, alpha_lo, ACC), scalar(slope_hi, slope_lo, ACC)
    n = tl.program_id(0)
    p = tl.program_id(1) * P_BLOCK + tl.arange(0, P_BLOCK)  # [P_BLOCK]
    p_ok = p < HW2
    c = tl.program_id(2) * C_BLOCK + tl.arange(0, C_BLOCK)  # [C_BLOCK]
    c_ok = c < C
    k = tl.arange(0, K_BLOCK)[None, :]  # [1, K_BLOCK]
    pooled = _pool(img_ptr, n, p, p_ok, W, W2, HW2, K, ACC, NHWC, K_BLOCK, P_BLOCK)  # [K_BLOCK, P_BLOCK]
    weight = tl.load(w_ptr + c[:, None] * K + k, mask=c_ok[:, None] & (k < K), other=0)  # [C_BLOCK, K_BLOCK]
    pre = tl.sum(weight[:, :, None] * pooled[None, :, :], 1)  # [C_BLOCK, P_BLOCK]
    pre += tl.load(b_ptr + c, mask=c_ok, other=0)[:, None]
    offs = _low_offsets(n, c, p, C, HW2, NHWC)
    mask = c_ok[:, None] & p_ok[None, :]
    new = tl.load(new_ptr + offs, mask=mask, other=0).to(ACC)
    tl.store(y_ptr + offs, _lerp(leaky(pre, slope), new, alpha).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _blend_down_bwd_kernel(
    grad_y_ptr,  # [N, C, H2, W2] x.dtype, img's layout
    img_ptr,  # [N, K, H, W] x.dtype, NCHW or NHWC
    w_ptr,  # [C, K] acc
    b_ptr,  # [C] acc
    grad_img_ptr,  # [N, K, H, W] x.dtype, img's layout, written
    grad_new_ptr,  # [N, C, H2, W2] x.dtype, img's layout, written: alpha·grad_y
    part_w_ptr,  # [N*G, C, K] acc, zero-initialised; each program accumulates its own slice
    part_b_ptr,  # [N*G, C] acc, zero-initialised; each program accumulates its own slice
    alpha_hi, alpha_lo,  # alpha split in two fp32 (see split_scalar)
    slope_hi, slope_lo,  # leaky ReLU slope split in two fp32
    C, K, W, W2, HW2,  # output channels, image channels, high-res width, low-res width, low-res pixels per image
    ACC: tl.constexpr, NHWC: tl.constexpr, K_BLOCK: tl.constexpr, C_BLOCK: tl.constexpr, P_BLOCK: tl.constexpr,
):
    alpha, slope = scalar(alpha_hi, alpha_lo, ACC), scalar(slope_hi, slope_lo, ACC)
    n, g = tl.program_id(0), tl.program_id(1)
    G = tl.num_programs(1)
    slot = n * G + g
    kc = tl.arange(0, K_BLOCK)[None, :]  # [1, K_BLOCK]
    kr = tl.arange(0, K_BLOCK)[:, None]  # [K_BLOCK, 1]
    # Program (n, g) owns the pixel blocks g, g + G, ... of sample n.
    for p_start in range(g * P_BLOCK, HW2, G * P_BLOCK):
        p = p_start + tl.arange(0, P_BLOCK)  # [P_BLOCK]
        p_ok = p < HW2
        pooled = _pool(img_ptr, n, p, p_ok, W, W2, HW2, K, ACC, NHWC, K_BLOCK, P_BLOCK)  # [K_BLOCK, P_BLOCK]
        grad_pooled = tl.zeros([K_BLOCK, P_BLOCK], ACC)
        for c_start in range(0, C, C_BLOCK):
            c = c_start + tl.arange(0, C_BLOCK)  # [C_BLOCK]
            c_ok = c < C
            wk_mask = c_ok[:, None] & (kc < K)
            weight = tl.load(w_ptr + c[:, None] * K + kc, mask=wk_mask, other=0)  # [C_BLOCK, K_BLOCK]
            pre = tl.sum(weight[:, :, None] * pooled[None, :, :], 1)
            pre += tl.load(b_ptr + c, mask=c_ok, other=0)[:, None]  # [C_BLOCK, P_BLOCK]
            offs = _low_offsets(n, c, p, C, HW2, NHWC)
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
        base, step_x, step_y = _block_base(n, kr, p, K, W, W2, HW2, NHWC)
        value = (grad_pooled * 0.25).to(grad_img_ptr.dtype.element_ty)
        mask = (kr < K) & p_ok[None, :]
        for dy in tl.static_range(2):
            for dx in tl.static_range(2):
                tl.store(grad_img_ptr + base + dy * step_y + dx * step_x, value, mask=mask)


_up_fwd = FlatKernel(_blend_up_fwd_kernel)
_up_bwd = FlatKernel(_blend_up_bwd_kernel)
_real_fwd = FlatKernel(_blend_real_fwd_kernel)


def _half_dims(t):
    """(W, W2, HW2, low-res numel) of a full-resolution activation."""
    n, c, h, w = t.shape
    return w, w // 2, (h // 2) * (w // 2), n * c * (h // 2) * (w // 2)


def blend_up_fwd(low, high, alpha):
    """y [N,C,H,W] in high's layout = lerp(nearest_up2(low), high, alpha)."""
    op = "blend_up_fwd"
    check_even(op, "high", high)
    n, c, h, w = high.shape
    check_tensor(op, "low", low, high.device, high.dtype, (n, c, h // 2, w // 2), "[N, C, H/2, W/2]")
    check_alpha(op, alpha)
    nhwc = is_nhwc(high)
    y = empty_act(high)
    w_, w2, hw2, numel = _half_dims(high)
    if numel:
        _up_fwd(numel, in_layout(low, nhwc), in_layout(high, nhwc), y, *split_scalar(alpha), c, w_, w2, hw2,
                ACC=tl_acc(high.dtype), NHWC=nhwc)
    return y


def blend_up_bwd(grad_y, alpha):
    """(grad_low [N,C,H/2,W/2], grad_high [N,C,H,W]) in grad_y's layout."""
    op = "blend_up_bwd"
    check_even(op, "grad_y", grad_y)
    check_alpha(op, alpha)
    n, c, h, w = grad_y.shape
    nhwc = is_nhwc(grad_y)
    grad_low = empty_act(grad_y, shape=(n, c, h // 2, w // 2))
    grad_high = empty_act(grad_y)
    w_, w2, hw2, numel = _half_dims(grad_y)
    if numel:
        _up_bwd(numel, grad_y, grad_low, grad_high, *split_scalar(alpha), c, w_, w2, hw2, ACC=tl_acc(grad_y.dtype),
                NHWC=nhwc)
    return grad_low, grad_high


def blend_real_fwd(x, alpha):
    """y [N,C,H,W] in x's layout = alpha·x + (1 − alpha)·nearest_up2(avgpool2(x)); self-adjoint."""
    op = "blend_real_fwd"
    check_even(op, "x", x)
    check_alpha(op, alpha)
    y = empty_act(x)
    w_, w2, hw2, numel = _half_dims(x)
    if numel:
        _real_fwd(numel, x, y, *split_scalar(alpha), x.shape[1], w_, w2, hw2, ACC=tl_acc(x.dtype),
                  NHWC=is_nhwc(x))
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
    nhwc = is_nhwc(new)  # y follows new; img is read in new's layout
    y = empty_act(new)
    hw2 = (h // 2) * (w // 2)
    k_block, c_block, p_block = _down_tiles(k, c)
    if y.numel():
        grid = (n, triton.cdiv(hw2, p_block), triton.cdiv(c, c_block))
        _blend_down_fwd_kernel[grid](in_layout(img, nhwc), weight, bias, in_layout(new, nhwc), y,
                                     *split_scalar(alpha), *split_scalar(slope), c, k, w, w // 2, hw2,
                                     ACC=tl_acc(img.dtype), NHWC=nhwc, K_BLOCK=k_block, C_BLOCK=c_block,
                                     P_BLOCK=p_block)
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
    nhwc = is_nhwc(grad_y)  # the kernel runs in grad_y's layout; grad_img is returned in img's
    # With no output channels (C = 0) no program runs and the image gets no gradient.
    grad_img = empty_act(img, nhwc) if grad_y.numel() else torch.zeros_like(img)
    grad_new = empty_act(grad_y)
    part_w = torch.zeros((n * groups, c, k), dtype=weight.dtype, device=img.device)
    part_b = torch.zeros((n * groups, c), dtype=weight.dtype, device=img.device)
    if grad_y.numel():
        _blend_down_bwd_kernel[(n, groups)](in_layout(grad_y, nhwc), in_layout(img, nhwc), weight, bias, grad_img,
                                            grad_new, part_w, part_b, *split_scalar(alpha), *split_scalar(slope), c,
                                            k, w, w // 2, hw2, ACC=tl_acc(img.dtype), NHWC=nhwc, K_BLOCK=k_block,
                                            C_BLOCK=c_block, P_BLOCK=p_block)
    return match_layout(grad_img, img), part_w.sum(0), part_b.sum(0), grad_new
