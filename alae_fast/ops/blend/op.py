"""Blended resampling for progressive growing. Resampling is 2x2 box down, nearest up.

blend_up(low, high, α)   = lerp(nearest_up2(low), high, α)                       generator RGB
blend_real(x, α)         = α·x + (1−α)·nearest_up2(avgpool2(x))                  real images
blend_down(img, W, b, new, α, slope)
                         = lerp(lrelu(W·avgpool2(img) + b, slope), new, α)       encoder input,
  fusing the previous level's 1×1 from_rgb (slope 0.04 = leaky ReLU 0.2 applied twice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alae_fast.ops import _backend, _checks
from alae_fast.ops.constants import LEAKY_SLOPE

FROM_RGB_SLOPE = LEAKY_SLOPE * LEAKY_SLOPE  # from_rgb's leaky ReLU, applied twice as the original does


def _up2(t):
    return t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def blend_up_ref(low, high, alpha):
    acc = _backend.acc_dtype(high.dtype)
    return torch.lerp(_up2(low.to(acc)), high.to(acc), alpha).to(high.dtype)


def _pool2(t):
    # avg_pool2d refuses tensors with an empty C, H or W; any slice of the right shape stands in.
    return F.avg_pool2d(t, 2) if t.numel() else t[:, :, ::2, ::2]


def blend_real_ref(x, alpha):
    acc = _backend.acc_dtype(x.dtype)
    xa = x.to(acc)
    return (alpha * xa + (1 - alpha) * _up2(_pool2(xa))).to(x.dtype)


def blend_down_ref(img, weight, bias, new, alpha, slope=FROM_RGB_SLOPE):
    acc = _backend.acc_dtype(new.dtype)
    with torch.autocast(img.device.type, enabled=False):  # the 1x1 conv stays in acc dtype under AMP
        pooled, weight, bias = _pool2(img.to(acc)), weight.to(acc), bias.to(acc)
        if pooled.numel() and new.numel():
            pre = F.conv2d(pooled, weight[:, :, None, None], bias)
        else:  # conv2d refuses empty channel and spatial dims
            pre = torch.einsum("ck,nkhw->nchw", weight, pooled) + bias[:, None, None]
    return torch.lerp(F.leaky_relu(pre, slope), new.to(acc), alpha).to(new.dtype)


# Kernel contract (every backend). blend_up and blend_real are linear: their backward is the
# adjoint, which for blend_real is blend_real itself, so every order of gradient is a kernel.
#   blend_up_fwd(low [N,C,H/2,W/2], high [N,C,H,W], alpha) -> y [N,C,H,W]
#   blend_up_bwd(grad_y [N,C,H,W], alpha) -> (grad_low [N,C,H/2,W/2], grad_high [N,C,H,W])
#   blend_real_fwd(x [N,C,H,W], alpha) -> y [N,C,H,W]
#   blend_down_fwd(img [N,K,H,W], weight [C,K] acc, bias [C] acc, new [N,C,H/2,W/2], alpha, slope) -> y
#   blend_down_bwd(grad_y [N,C,H/2,W/2], img, weight, bias, alpha, slope)
#             -> (grad_img [N,K,H,W], grad_weight [C,K], grad_bias [C], grad_new [N,C,H/2,W/2])
@_backend.kernel_op("blend_up", "blend_up_fwd")
def _blend_up_op(low: torch.Tensor, high: torch.Tensor, alpha: float, backend: str) -> torch.Tensor:
    return _backend.empty_dense_like(high)


@_backend.kernel_op("blend_up_backward", "blend_up_bwd")
def _blend_up_backward_op(grad_y: torch.Tensor, alpha: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, h, w = grad_y.shape
    return _backend.empty_dense_like(grad_y, (n, c, h // 2, w // 2)), _backend.empty_dense_like(grad_y)


def _setup_up(ctx, inputs, output):
    ctx.alpha, ctx.backend = inputs[2], inputs[3]


def _backward_up(ctx, grad_y):
    g_low, g_high = _blend_up_backward_op(_backend.dense(grad_y, ctx.backend), ctx.alpha, ctx.backend)
    return g_low, g_high, None, None


def _setup_up_backward(ctx, inputs, output):
    grad_y, ctx.alpha, ctx.backend = inputs
    ctx.low_shape = output[0].shape


def _double_backward_up(ctx, gg_low, gg_high):
    # The adjoint of the (linear) backward is the forward.
    return (_blend_up_op(_backend.dense(gg_low, ctx.backend), _backend.dense(gg_high, ctx.backend), ctx.alpha,
                         ctx.backend), None, None)


_blend_up_op.register_autograd(_backward_up, setup_context=_setup_up)
_blend_up_backward_op.register_autograd(_double_backward_up, setup_context=_setup_up_backward)


@_backend.kernel_op("blend_real", "blend_real_fwd")
def _blend_real_op(x: torch.Tensor, alpha: float, backend: str) -> torch.Tensor:
    return _backend.empty_dense_like(x)


def _setup_real(ctx, inputs, output):
    ctx.alpha, ctx.backend = inputs[1], inputs[2]


def _backward_real(ctx, grad_y):
    # Self-adjoint: the backward is the op itself, differentiable to any order.
    return _blend_real_op(_backend.dense(grad_y, ctx.backend), ctx.alpha, ctx.backend), None, None


_blend_real_op.register_autograd(_backward_real, setup_context=_setup_real)


@_backend.kernel_op("blend_down", "blend_down_fwd")
def _blend_down_op(img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, new: torch.Tensor,
                   alpha: float, slope: float, backend: str) -> torch.Tensor:
    return _backend.empty_dense_like(new)


@_backend.kernel_op("blend_down_backward", "blend_down_bwd")
def _blend_down_backward_op(grad_y: torch.Tensor, img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            alpha: float, slope: float, backend: str
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (_backend.empty_dense_like(img), torch.empty_like(weight),
            torch.empty_like(bias), _backend.empty_dense_like(grad_y))


def _setup_down(ctx, inputs, output):
    img, weight, bias, new, alpha, slope, backend = inputs
    ctx.save_for_backward(img, weight, bias)
    ctx.alpha, ctx.slope, ctx.backend = alpha, slope, backend


def _backward_down(ctx, grad_y):
    img, weight, bias = ctx.saved_tensors
    g_img, g_w, g_b, g_new = _blend_down_backward_op(_backend.dense(grad_y, ctx.backend), img, weight, bias, ctx.alpha,
                                                     ctx.slope, ctx.backend)
    return g_img, g_w, g_b, g_new, None, None, None


def _setup_down_backward(ctx, inputs, output):
    grad_y, img, weight, bias, alpha, slope, backend = inputs
    ctx.save_for_backward(grad_y, img, weight, bias)
    ctx.alpha, ctx.slope, ctx.backend = alpha, slope, backend


def _double_backward_down(ctx, gg_img, gg_w, gg_b, gg_new):
    """The backward of blend_down's backward from the forward and backward kernels themselves.

    With pre = W·pool(img) + b and d = lrelu'(pre) (piecewise constant), the backward is bilinear:
    grad_pre = (1 − α)·d·grad_y, grad_img = up(Wᵀ·grad_pre)/4, grad_W = Σ grad_pre ⊗ pool(img),
    grad_b = Σ grad_pre, grad_new = α·grad_y. So the cotangent reaching grad_pre is
    q = W·pool(gg_img) + gg_W·pool(img) + gg_b (two fused 1×1 forwards with slope 1 and α = 0), and
    the backward kernel with slope 1 and α = 0 maps grad_pre to up(gg_Wᵀ·grad_pre)/4 and
    Σ grad_pre ⊗ pool(gg_img). b gets no second-order gradient.
    """
    grad_y, img, weight, bias = ctx.saved_tensors
    a, backend = ctx.alpha, ctx.backend
    zero_bias = torch.zeros_like(bias)

    def fused_linear(image, w, b):  # w·pool(image) + b: the forward kernel with slope 1 and α = 0
        return _blend_down_op(_backend.dense(image, backend), w.contiguous(), b, grad_y, 0.0, 1.0, backend)

    d = torch.where(fused_linear(img, weight, bias) > 0, 1.0, ctx.slope).to(grad_y.dtype)
    terms = []
    if gg_img is not None:
        terms.append(fused_linear(gg_img, weight, zero_bias))
    if gg_w is not None:
        terms.append(fused_linear(img, gg_w, zero_bias))
    if gg_b is not None:
        terms.append(gg_b.to(grad_y.dtype).view(1, -1, 1, 1))
    g_grad_y = (1 - a) * d * sum(terms[1:], terms[0]) if terms else None
    if gg_new is not None:
        g_grad_y = a * gg_new if g_grad_y is None else g_grad_y + a * gg_new
    g_img = g_w = None
    if gg_img is not None or gg_w is not None:
        grad_pre = _backend.dense((1 - a) * d * grad_y, backend)
        g_img_full, g_w_full, _, _ = _blend_down_backward_op(
            grad_pre, _backend.dense(gg_img if gg_img is not None else img, backend),
            (gg_w if gg_w is not None else weight).contiguous(), bias, 0.0, 1.0, backend)
        g_img = g_img_full if gg_w is not None else None
        g_w = g_w_full if gg_img is not None else None
    if g_grad_y is not None:
        g_grad_y = g_grad_y.expand_as(grad_y)
    return g_grad_y, g_img, g_w, None, None, None, None


_blend_down_op.register_autograd(_backward_down, setup_context=_setup_down)
_blend_down_backward_op.register_autograd(_double_backward_down, setup_context=_setup_down_backward)


def blend_up(low, high, alpha: float, *, impl: str = "auto"):
    """lerp(nearest_up2(low), high, alpha). low [N, C, H/2, W/2]; high [N, C, H, W]."""
    op = "blend_up"
    n, c, h, w = _checks.activation(op, "high", high)
    _checks.even_spatial(op, "high", h, w)
    _checks.tensor(op, "low", low, (n, c, h // 2, w // 2), spec="[N, C, H/2, W/2]", like=high)
    _checks.same_dtype(op, "low", low, high, "high")
    alpha = _checks.alpha(op, alpha)
    backend = _backend.resolve(impl, high, op=op)
    if backend == "ref":
        return blend_up_ref(low, high, alpha)
    return _blend_up_op(_backend.dense(low, backend), _backend.dense(high, backend), alpha, backend)


def blend_real(x, alpha: float, *, impl: str = "auto"):
    """alpha·x + (1 − alpha)·nearest_up2(avgpool2(x)), the real-image fade-in. x [N, C, H, W]."""
    op = "blend_real"
    _, _, h, w = _checks.activation(op, "x", x)
    _checks.even_spatial(op, "x", h, w)
    alpha = _checks.alpha(op, alpha)
    backend = _backend.resolve(impl, x, op=op)
    if backend == "ref":
        return blend_real_ref(x, alpha)
    return _blend_real_op(_backend.dense(x, backend), alpha, backend)


def blend_down(img, weight, bias, new, alpha: float, *, slope: float = FROM_RGB_SLOPE, impl: str = "auto"):
    """lerp(lrelu(weight·avgpool2(img) + bias, slope), new, alpha): from_rgb of the previous level, fused.

    img [N, K, H, W]; weight [C, K] (runtime scale already applied); bias [C]; new [N, C, H/2, W/2];
    alpha in [0, 1]; slope finite and >= 0.
    """
    op = "blend_down"
    n, k, h, w = _checks.activation(op, "img", img)
    _checks.even_spatial(op, "img", h, w)
    _, c, _, _ = _checks.activation(op, "new", new, spec="[N, C, H/2, W/2]")
    _checks.tensor(op, "new", new, (n, c, h // 2, w // 2), spec="[N, C, H/2, W/2]", like=img)
    _checks.same_dtype(op, "new", new, img, "img")
    _checks.tensor(op, "weight", weight, (c, k), spec="[C, K]", like=img)
    _checks.tensor(op, "bias", bias, (c,), spec="[C]", like=img)
    alpha = _checks.alpha(op, alpha)
    slope = _checks.slope(op, slope)
    backend = _backend.resolve(impl, img, op=op, numel=new.numel() * 4)
    if backend == "ref":
        return blend_down_ref(img, weight, bias, new, alpha, slope)
    acc = _backend.acc_dtype(img.dtype)
    return _blend_down_op(_backend.dense(img, backend), weight.to(acc).contiguous(), bias.to(acc).contiguous(),
                          _backend.dense(new, backend), alpha, slope, backend)
