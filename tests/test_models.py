"""alae_fast.models: shapes per lod and blend, fused 128² path, mixing, truncation, w_avg, noise (the official
draw order), R1, MLP."""

import pytest
import torch
import torch.nn.functional as F
from _official import official_noise_shapes

from alae_fast.models import MLPALAE, ModelConfig, StyleALAE, build_model
from alae_fast.ops import use_impl

LATENT = 16


def _tiny(channels=1, **kwargs):
    torch.manual_seed(0)
    cfg = ModelConfig("style", layer_count=3, startf=8, maxf=16, latent_size=LATENT, channels=channels, **kwargs)
    return build_model(cfg)


def _randomize(model, scale=0.3):
    """Give the zero-initialised noise weights and biases values, so every path shows up."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "noise_weight" in name or name.endswith("bias"):
                p.normal_(0, scale)
    return model


def _up2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def test_build_and_attributes():
    model = _tiny()
    assert isinstance(model, StyleALAE)
    assert (model.num_ws, model.max_lod, model.latent_size, model.channels) == (6, 2, LATENT, 1)
    assert [model.resolution(k) for k in range(3)] == [4, 8, 16]
    assert model.w_avg.shape == (LATENT,)
    names = dict(model.named_parameters())
    assert names["generator.const"].shape == (1, 16, 4, 4) and torch.all(names["generator.const"] == 1)
    assert names["generator.blocks.2.conv_1.weight"].shape == (8, 16, 3, 3)
    assert names["generator.blocks.1.adain_1.noise_weight"].shape == (16,)
    assert names["generator.blocks.1.adain_2.style.weight"].shape == (32, LATENT)
    assert names["encoder.blocks.0.extract_1.style.weight"].shape == (LATENT, 16)
    assert names["encoder.blocks.0.conv_2.weight"].shape == (16, 8, 3, 3)
    assert names["encoder.from_rgb.0.conv.weight"].shape == (8, 1, 1, 1)
    assert names["mapping_d.blocks.2.weight"].shape == (2 * LATENT, LATENT)
    assert len(model.mapping_f.blocks) == 4
    ed, fg = list(model.parameters_ed()), list(model.parameters_fg())
    assert {id(p) for p in ed}.isdisjoint(id(p) for p in fg)
    assert len(ed) + len(fg) == len(list(model.parameters()))


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_every_lod_and_blend(channels):
    model = _tiny(channels)
    z = torch.randn(2, LATENT)
    for lod in range(model.max_lod + 1):
        ws = model.styles(z, lod)
        assert ws.shape == (2, model.num_ws, LATENT)
        for blend in (0.37, 1.0):
            r = model.resolution(lod)
            x = model.generate(ws, lod, blend)
            assert x.shape == (2, channels, r, r) and torch.isfinite(x).all()
            w = model.encode(x, lod, blend)
            assert w.shape == (2, LATENT)
            assert model.discriminate(w).shape == (2,)
    assert model.generate(model.map(z), 1, 0.5).shape == (2, channels, 8, 8)  # [N, ℓ] broadcast


def test_forward_is_the_reconstruction():
    model = _tiny(3)
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(1)
    expected = model.generate(model.encode(x, 1, 0.5), 1, 0.5)
    torch.manual_seed(1)
    torch.testing.assert_close(model(x, 1, 0.5), expected)
    top = model.resolution(model.max_lod)
    assert model(torch.randn(2, 3, top, top), noise="fixed").shape == (2, 3, top, top)


def test_generator_blend_endpoints():
    """blend 0 shows the previous level upsampled; blend 1 the new level alone."""
    model = _randomize(_tiny(3))
    ws = model.styles(torch.randn(2, LATENT), 2, mixing_prob=0)
    for lod in (1, 2):
        prev = model.generate(ws, lod - 1, 1.0, noise="fixed")
        torch.testing.assert_close(model.generate(ws, lod, 0.0, noise="fixed"), _up2(prev))
        new = model.generate(ws, lod, 1.0, noise="fixed")
        half = model.generate(ws, lod, 0.5, noise="fixed")
        torch.testing.assert_close(half, (new + _up2(prev)) / 2, rtol=1e-5, atol=1e-6)


def test_encoder_blend_endpoints():
    """blend 0 encodes the 2× downsampled image one level down; the new block then adds nothing."""
    model = _randomize(_tiny(3))
    x = torch.randn(2, 3, 16, 16)
    for lod in (1, 2):
        r = model.resolution(lod)
        img = F.adaptive_avg_pool2d(x, r)
        want = model.encode(F.avg_pool2d(img, 2), lod - 1, 1.0)
        torch.testing.assert_close(model.encode(img, lod, 0.0), want, rtol=1e-4, atol=1e-5)


def test_fused_resampling_at_128():
    torch.manual_seed(0)
    cfg = ModelConfig("style", layer_count=6, startf=1, maxf=2, latent_size=8, mapping_layers=1, channels=1)
    model = build_model(cfg)
    assert [b.fused for b in model.generator.blocks] == [False] * 5 + [True]
    assert [b.fused for b in model.encoder.blocks] == [True] + [False] * 5
    assert model.generator.blocks[5].conv_1.up and model.encoder.blocks[0].conv_2.down
    ws = model.styles(torch.randn(1, 8), 5)
    x = model.generate(ws, 5, 0.5)
    assert x.shape == (1, 1, 128, 128) and torch.isfinite(x).all()
    assert model.encode(x, 5, 0.5).shape == (1, 8)


def _cutoff(ws):
    """First layer whose w differs from layer 0 (num_ws when none does)."""
    differs = (ws != ws[:, :1]).any(dim=2).any(dim=0)
    return int(differs.nonzero()[0]) if differs.any() else ws.shape[1]


def test_style_mixing():
    model = _tiny()
    z = torch.randn(3, LATENT)
    w = model.map(z)
    torch.manual_seed(0)
    unmixed = model.styles(z, 2, mixing_prob=0)
    assert torch.equal(unmixed, w[:, None].expand_as(unmixed))
    seen = set()
    for lod in (0, 2):
        for _ in range(40):
            ws = model.styles(z, lod, mixing_prob=1.0)
            cut = _cutoff(ws)
            assert 1 <= cut <= 2 * (lod + 1)
            # layers < cutoff keep F(z) (mapped in one batch with z2, so equal up to rounding)
            torch.testing.assert_close(ws[:, :cut], w[:, None].expand(-1, cut, -1), rtol=1e-6, atol=1e-6)
            assert torch.equal(ws[:, cut:], ws[:, -1:].expand(-1, 6 - cut, -1))  # the rest share F(z2)
            seen.add((lod, cut))
    assert {(0, 1), (2, 1), (2, 5)} <= seen  # U{1..2(lod+1)}: cutoff 2(lod+1) gives no visible mixing


def test_style_mixing_probability_default():
    model = _tiny(style_mixing_prob=0.0)
    z = torch.randn(2, LATENT)
    assert _cutoff(model.styles(z, 2)) == model.num_ws


def test_truncation():
    model = _tiny(truncation_psi=0.5, truncation_cutoff=2)
    model.w_avg.normal_()
    ws = torch.randn(2, model.num_ws, LATENT)
    out = model.truncate(ws)
    avg = model.w_avg
    torch.testing.assert_close(out[:, :2], avg + 0.5 * (ws[:, :2] - avg))
    assert torch.equal(out[:, 2:], ws[:, 2:])
    torch.testing.assert_close(model.truncate(ws, psi=1.0, cutoff=6), ws)
    torch.testing.assert_close(model.truncate(ws, psi=0.0, cutoff=6), avg.expand_as(ws))
    with pytest.raises(ValueError, match="ws"):
        model.truncate(ws[:, 0])


def test_w_avg_update():
    model = _tiny(w_avg_beta=0.9)
    w1, w2 = torch.randn(8, LATENT), torch.randn(8, LATENT)
    model.update_w_avg(w1)
    torch.testing.assert_close(model.w_avg, 0.1 * w1.mean(0))
    model.update_w_avg(w2.requires_grad_())
    torch.testing.assert_close(model.w_avg, 0.9 * 0.1 * w1.mean(0) + 0.1 * w2.mean(0))
    assert not model.w_avg.requires_grad


def _model_and_styles(batch):
    """A tiny random model and unmixed styles [batch, layers, LATENT] of it at lod 2."""
    model = _randomize(_tiny())
    return model, model.styles(torch.randn(batch, LATENT), 2, mixing_prob=0)


def test_noise_modes():
    model, ws = _model_and_styles(2)
    torch.manual_seed(5)
    fixed = model.generate(ws, 2, 1.0, noise="fixed")
    torch.manual_seed(6)
    assert torch.equal(fixed, model.generate(ws, 2, 1.0, noise="fixed"))
    # 'const' shares one random map over the batch: equal styles give equal images within a call only.
    same = model.styles(torch.randn(1, LATENT), 2, mixing_prob=0).expand(2, -1, -1)
    const = model.generate(same, 2, 1.0, noise="const")
    assert torch.equal(const[0], const[1])
    assert not torch.equal(const, model.generate(same, 2, 1.0, noise="const"))
    random = model.generate(same, 2, 1.0, noise="random")
    assert not torch.allclose(random[0], random[1])
    assert not torch.allclose(model.generate(ws, 2, 1.0, noise="random"), model.generate(ws, 2, 1.0, noise="random"))
    assert not torch.allclose(fixed, model.generate(ws, 2, 1.0, noise="const"))
    with pytest.raises(ValueError, match="noise"):
        model.generate(ws, 2, 1.0, noise="batch")


def test_random_noise_draws_in_the_official_order(monkeypatch):
    model, ws = _model_and_styles(3)
    drawn, randn = [], torch.randn

    def recording_randn(*args, **kwargs):
        out = randn(*args, **kwargs)
        drawn.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "randn", recording_randn)
    for noise, lod, blend in (("random", 2, 1.0), ("random", 2, 0.4), ("random", 1, 1.0), ("random", 0, 1.0),
                              ("const", 2, 1.0)):
        drawn.clear()
        model.generate(ws, lod, blend, noise=noise)
        assert drawn == official_noise_shapes(3, lod, batch_constant=noise == "const"), (noise, lod, blend)
    drawn.clear()
    model.generate(ws, 2, 1.0, noise="fixed")
    assert drawn == []


def test_seeded_random_noise_is_the_official_draws_fed_block_by_block():
    model, ws = _model_and_styles(3)
    torch.manual_seed(11)
    got = model.generate(ws, 2, 1.0, noise="random")
    torch.manual_seed(11)
    maps = [torch.randn(shape).expand(3, -1, -1, -1) for shape in official_noise_shapes(3, 2)]
    x = model.generator.const.expand(3, -1, -1, -1)
    for i, block in enumerate(model.generator.blocks):
        if i > 0:
            x = block.blur(block.conv_1(_up2(x)))
        x = block.adain_1(x, ws[:, 2 * i], maps[2 * i])
        x = block.adain_2(block.conv_2(x), ws[:, 2 * i + 1], maps[2 * i + 1])
    torch.testing.assert_close(got, model.generator.to_rgb[2](x))
    torch.manual_seed(11)
    assert not torch.allclose(got, model.generate(ws, 2, 1.0, noise="const"))


def test_arguments_are_checked():
    model = _tiny()
    ws = torch.randn(2, LATENT)
    with pytest.raises(ValueError, match="lod"):
        model.generate(ws, 3, 1.0)
    with pytest.raises(ValueError, match="blend"):
        model.generate(ws, 1, 1.5)
    with pytest.raises(ValueError, match="'x'"):
        model.encode(torch.randn(2, 1, 8, 8), 2, 1.0)
    with pytest.raises(ValueError, match="'z'"):
        model.map(torch.randn(2, LATENT + 1))
    with pytest.raises(ValueError, match="kind"):
        ModelConfig("conv")


@pytest.mark.parametrize("impl", ["ref", "auto"])
@pytest.mark.parametrize("blend", [1.0, 0.6])
def test_r1_double_backward(impl, blend):
    model = _randomize(_tiny(3))
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    with use_impl(impl):
        logits = model.discriminate(model.encode(x, 2, blend))
    (grad,) = torch.autograd.grad(F.softplus(-logits).sum(), x, create_graph=True)
    (grad.square().sum() * 5).backward()
    grads = [p.grad for p in model.parameters_ed() if p.grad is not None]  # unused from_rgb have none
    assert len(grads) > 20 and all(torch.isfinite(g).all() for g in grads)
    assert model.encoder.blocks[0].conv_1.weight.grad.abs().sum() > 0
    assert model.encoder.blocks[0].extract_1.bias.grad.abs().sum() > 0


def test_ref_and_auto_models_agree():
    model = _randomize(_tiny(3))
    ws = model.styles(torch.randn(2, LATENT), 2)
    for blend in (0.4, 1.0):
        with use_impl("ref"):
            xr, er = model.generate(ws, 2, blend, noise="fixed"), model.encode(model.generate(ws, 2, blend, noise="fixed"), 2, blend)
        xa = model.generate(ws, 2, blend, noise="fixed")
        torch.testing.assert_close(xa, xr, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.encode(xr, 2, blend), er, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_smoke():
    model = _tiny(3)
    ws = model.styles(torch.randn(2, LATENT), 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = model.generate(ws, 1, 0.5)
        w = model.encode(x, 1, 1.0)
        logits = model.discriminate(w)
    assert x.shape == (2, 3, 8, 8) and torch.isfinite(logits.float()).all()


def test_mlp_alae():
    torch.manual_seed(0)
    model = build_model(ModelConfig("mlp", latent_size=50, mapping_layers=6, hidden=64))
    assert isinstance(model, MLPALAE)
    assert (model.num_ws, model.max_lod, model.resolution(0), model.channels) == (1, 0, 28, 1)
    assert len(model.mapping_f.blocks) == 6
    z = torch.randn(4, 50)
    ws = model.styles(z, 0)
    assert ws.shape == (4, 1, 50)
    torch.testing.assert_close(ws[:, 0], model.map(z))
    x = model.generate(ws, 0, 1.0)
    assert x.shape == (4, 1, 28, 28)
    assert torch.equal(model.generate(ws[:, 0], 0, 1.0), x)
    w = model.encode(x, 0, 1.0)
    assert w.shape == (4, 50) and model.discriminate(w).shape == (4,)
    assert model.truncate(ws, psi=0.0).abs().sum() == 0  # w_avg starts at 0
    with pytest.raises(ValueError, match="'x'"):
        model.encode(torch.randn(4, 784), 0, 1.0)


def test_mlp_layers_as_the_official_fc_model():
    """E has a leaky ReLU after every layer, its last included; G has none after its last."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("mlp", latent_size=8, mapping_layers=2, hidden=32))
    x, w = torch.randn(4, 1, 28, 28), torch.randn(4, 8)
    h = x.flatten(1)
    for block in model.encoder.blocks:
        h = F.leaky_relu(block(h), 0.2)
    torch.testing.assert_close(model.encode(x), h)
    g = F.leaky_relu(model.generator.blocks[1](F.leaky_relu(model.generator.blocks[0](w), 0.2)), 0.2)
    torch.testing.assert_close(model.generate(w), model.generator.blocks[2](g).view(4, 1, 28, 28))
