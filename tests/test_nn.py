"""alae_fast.nn modules: equalized-lr scales, fused resampling convs, epilogues, RGB blends, ref/auto parity."""

import math

import pytest
import torch
import torch.nn.functional as F

from alae_fast import nn as ann
from alae_fast import ops
from alae_fast.ops import _backend


def _up2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def test_equalized_linear_scale_and_init():
    torch.manual_seed(0)
    layer = ann.EqualizedLinear(256, 300, lrmul=0.1)
    assert layer.weight_gain == pytest.approx(math.sqrt(2) / math.sqrt(256) * 0.1)
    assert layer.weight.std().item() == pytest.approx(10.0, rel=0.05)  # N(0, 1) / lrmul
    assert torch.equal(layer.bias, torch.zeros(300))
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 256)
    want = x @ (layer.weight * layer.weight_gain).t() + layer.bias * 0.1
    torch.testing.assert_close(layer(x), want)
    assert ann.EqualizedLinear(16, 8, gain=1.0).weight_gain == pytest.approx(0.25)


@pytest.mark.parametrize("kwargs", [{}, {"up": True}, {"down": True}])
def test_equalized_conv_fan_in(kwargs):
    conv = ann.EqualizedConv2d(6, 4, 3, **kwargs)
    assert conv.weight_gain == pytest.approx(math.sqrt(2) / math.sqrt(6 * 9))
    assert conv.weight.shape == ((6, 4, 3, 3) if kwargs.get("up") else (4, 6, 3, 3))
    assert ann.EqualizedConv2d(8, 3, 1, gain=0.03).weight_gain == pytest.approx(0.03 / math.sqrt(8))


def test_fused_up_conv_is_upsample_then_conv():
    torch.manual_seed(0)
    conv = ann.EqualizedConv2d(3, 5, 3, bias=False, up=True)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    conv.double()
    # The transposed layout [in, out] with a flipped kernel is the plain conv of the upsampled input.
    w = (conv.weight * conv.weight_gain).transpose(0, 1).flip(2, 3)
    torch.testing.assert_close(conv(x), F.conv2d(_up2(x), w, padding=1))


def test_fused_down_conv_is_conv_then_avgpool():
    torch.manual_seed(0)
    conv = ann.EqualizedConv2d(3, 5, 3, down=True).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    want = F.avg_pool2d(F.conv2d(x, conv.weight * conv.weight_gain, conv.bias, padding=1), 2)
    torch.testing.assert_close(conv(x), want)


def test_conv_arguments_are_checked():
    with pytest.raises(ValueError, match="up"):
        ann.EqualizedConv2d(3, 3, 3, up=True, down=True)
    with pytest.raises(ValueError, match="kernel_size"):
        ann.EqualizedConv2d(3, 3, 1, down=True)


def test_blur():
    blur = ann.Blur(4)
    assert blur.weight.shape == (4, 1, 3, 3) and "weight" not in blur.state_dict()
    k = torch.tensor([1.0, 2.0, 1.0])
    torch.testing.assert_close(blur.weight[2, 0], torch.outer(k, k) / 16)
    x = torch.randn(2, 4, 5, 5)
    want = torch.cat([F.conv2d(x[:, c:c + 1], blur.weight[c:c + 1], padding=1) for c in range(4)], 1)
    torch.testing.assert_close(blur(x), want)


def test_noise_injection():
    mod = ann.NoiseInjection(3, impl="ref")
    x, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(mod(x, noise), x)  # weight starts at 0
    with torch.no_grad():
        mod.weight.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bias = torch.randn(3)
    want = F.leaky_relu(x + mod.weight.view(1, 3, 1, 1) * noise + bias.view(1, 3, 1, 1), 0.2)
    torch.testing.assert_close(mod(x, noise, bias, act=True), want)


def test_modulated_adain_matches_formula():
    torch.manual_seed(0)
    mod = ann.ModulatedAdaIN(4, 6, impl="ref")
    assert mod.style.weight_gain == pytest.approx(1 / math.sqrt(6))
    with torch.no_grad():
        for p in (mod.noise_weight, mod.bias, mod.style.bias):
            p.normal_()
    x, w, noise = torch.randn(2, 4, 5, 5), torch.randn(2, 6), torch.randn(2, 1, 5, 5)
    t = F.leaky_relu(x + mod.noise_weight.view(1, 4, 1, 1) * noise + mod.bias.view(1, 4, 1, 1), 0.2)
    t = F.instance_norm(t, eps=1e-8)
    ys, yb = mod.style(w).view(2, 2, 4, 1, 1).unbind(1)
    torch.testing.assert_close(mod(x, w, noise), t * (1 + ys) + yb, rtol=1e-4, atol=1e-4)


def test_style_extract_matches_formula():
    torch.manual_seed(0)
    mod = ann.StyleExtract(4, 6, impl="ref")
    with torch.no_grad():
        mod.bias.normal_()
    x = torch.randn(2, 4, 5, 5)
    t = F.leaky_relu(x + mod.bias.view(1, 4, 1, 1), 0.2)
    stats = torch.cat([t.mean((2, 3)), t.std((2, 3), unbiased=False)], 1)
    y, w = mod(x)
    torch.testing.assert_close(y, F.instance_norm(t, eps=1e-5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w, mod.style(stats))


def test_rgb_and_blends():
    torch.manual_seed(0)
    to_rgb, from_rgb = ann.ToRGB(8, 3, impl="ref"), ann.FromRGB(3, 8, impl="ref")
    assert to_rgb.conv.weight_gain == pytest.approx(0.03 / math.sqrt(8))
    with torch.no_grad():
        from_rgb.conv.bias.normal_()
    low, high = torch.randn(2, 8, 4, 4), torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(to_rgb.blend(low, high, 0.3), torch.lerp(_up2(to_rgb(low)), high, 0.3))
    img, new = torch.randn(2, 3, 8, 8), torch.randn(2, 8, 4, 4)
    twice = F.leaky_relu(F.leaky_relu(from_rgb.conv(img), 0.2), 0.2)
    torch.testing.assert_close(from_rgb(img), twice)
    want = torch.lerp(from_rgb(F.avg_pool2d(img, 2)), new, 0.3)
    torch.testing.assert_close(from_rgb.blend(img, new, 0.3), want, rtol=1e-5, atol=1e-5)


def _module_cases():
    """name -> make(impl) returning (module, args) or (fn, module, args); args needing grad have it."""

    def adain(impl):
        m = ann.ModulatedAdaIN(4, 6, impl=impl)
        return m, (torch.randn(2, 4, 6, 6).requires_grad_(), torch.randn(2, 6).requires_grad_(),
                   torch.randn(2, 1, 6, 6))

    def extract(impl):
        return ann.StyleExtract(4, 6, impl=impl), (torch.randn(2, 4, 6, 6).requires_grad_(),)

    def noise(impl):
        return ann.NoiseInjection(4, impl=impl), (torch.randn(2, 4, 6, 6).requires_grad_(), torch.randn(2, 1, 6, 6))

    def up(impl):
        m = ann.ToRGB(4, 3, impl=impl)
        args = (torch.randn(2, 4, 3, 3).requires_grad_(), torch.randn(2, 3, 6, 6).requires_grad_())
        return (lambda low, high: m.blend(low, high, 0.4)), m, args

    def down(impl):
        m = ann.FromRGB(3, 4, impl=impl)
        args = (torch.randn(2, 3, 6, 6).requires_grad_(), torch.randn(2, 4, 3, 3).requires_grad_())
        return (lambda img, new: m.blend(img, new, 0.4)), m, args

    return {"adain": adain, "extract": extract, "noise": noise, "blend_up": up, "blend_down": down}


@pytest.mark.parametrize("name", list(_module_cases()))
def test_ref_and_auto_agree(name):
    make = _module_cases()[name]
    outs = {}
    for impl in ("ref", "auto"):
        torch.manual_seed(0)
        made = make(impl)
        fn, mod, args = made if len(made) == 3 else (made[0], made[0], made[1])
        with torch.no_grad():
            for p in mod.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        out = fn(*args)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in out)
        grads = torch.autograd.grad(loss, [a for a in args if a.requires_grad] + list(mod.parameters()))
        outs[impl] = (out, grads)
    for a, b in zip(outs["ref"][0] + outs["ref"][1], outs["auto"][0] + outs["auto"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _backend.EXT_LOADED, reason="alae_fast._C is not built")
def test_from_rgb_blend_under_autocast():
    m = ann.FromRGB(3, 4, impl="cpu")
    img = torch.randn(2, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        new = m(img[:, :, ::2, ::2])
        out = m.blend(img, new, 0.5)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 3, 3)
    assert ops.FROM_RGB_SLOPE == pytest.approx(0.04)
