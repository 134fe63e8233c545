"""alae_fast.official: the original code's classes, loading official state dicts strictly and agreeing
with the native model through the converter (F, G, E, D and the three losses)."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from _official import draw_official_noise, official_keys, random_official, ref_generate, shapes

from alae_fast.convert import alae_fast_to_official
from alae_fast.models import ModelConfig, build_model
from alae_fast.official import (ENCODERS, GENERATORS, MAPPINGS, EncodeBlock, EncoderDefault, EncoderFC, Generator,
                                GeneratorFC, MappingD, MappingF, Model)
from alae_fast.train import losses

CONFIGS = [
    ModelConfig("style", layer_count=3, startf=8, maxf=16, latent_size=16, mapping_layers=2, channels=1),
    # L=6: the last level is 128², with the fused (transposed / stride-2) resampling convs.
    ModelConfig("style", layer_count=6, startf=4, maxf=8, latent_size=8, mapping_layers=3, channels=3),
]
FC = ModelConfig("mlp", latent_size=50, mapping_layers=6, channels=1, image_size=28, hidden=1024)
NETS = {"generator": "decoder", "discriminator": "encoder", "mapping_fl": "mapping_f", "mapping_tl": "mapping_d",
        "dlatent_avg": "dlatent_avg"}


def official_model(cfg, **kwargs):
    fc = cfg.kind == "mlp"
    return Model(startf=cfg.startf, maxf=cfg.maxf, layer_count=cfg.layer_count, latent_size=cfg.latent_size,
                 mapping_layers=cfg.mapping_layers, channels=cfg.channels,
                 generator="GeneratorFC" if fc else "GeneratorDefault", encoder="EncoderFC" if fc else "EncoderDefault",
                 **kwargs)


def load_strict(model, models, suffix=""):
    for net, attr in NETS.items():
        getattr(model, attr).load_state_dict(models[net + (suffix if net != "dlatent_avg" else "")], strict=True)
    return model


def native_and_official(cfg, seed=0, **kwargs):
    """A native model with random weights (noise weights and biases too) and the official Model holding them."""
    torch.manual_seed(seed)
    native = build_model(cfg).eval()
    with torch.no_grad():
        for name, p in native.named_parameters():
            p.normal_(0, 1.0 if "weight" in name and "noise" not in name else 0.3)
        native.w_avg.normal_()
    official = official_model(cfg, **kwargs).eval()
    return native, load_strict(official, alae_fast_to_official(native.state_dict(), None, cfg))


@pytest.mark.parametrize("cfg", [*CONFIGS, FC], ids=["L3", "L6", "mnist_fc"])
def test_state_dicts_have_the_original_layout(cfg):
    model = official_model(cfg)
    for net, keys in official_keys(cfg).items():
        assert shapes(getattr(model, NETS[net]).state_dict()) == keys, net  # same keys, shapes and order
    for module in model.modules():
        if hasattr(module, "weight_gain"):  # effective weights: no runtime scale
            assert module.weight_gain == 1.0 and module.lrmul == 1.0


def test_an_official_checkpoint_loads_unchanged():
    cfg = CONFIGS[1]
    models = random_official(cfg, 3)
    model = load_strict(official_model(cfg), models, "_s")
    conv = models["generator_s"]["decode_block.5.conv_1.weight"]
    assert torch.equal(model.decoder.decode_block[5].conv_1.weight, conv)
    bad = dict(models["generator"], extra=torch.zeros(1))
    with pytest.raises(RuntimeError, match="extra"):
        model.decoder.load_state_dict(bad, strict=True)


def _draw(shape, gain, fan_in, lrmul=1.0):
    """The original lreq init: N(0, std/lrmul) with std = gain/sqrt(fan_in)·lrmul, computed as it does."""
    return torch.empty(shape).normal_(0, gain / math.sqrt(fan_in) * lrmul / lrmul)


def test_construction_draws_the_original_initial_weights():
    """Each lreq layer draws its weight once, in construction order; LREQAdam's coefficients ride along."""
    torch.manual_seed(0)
    mapping = MappingD(mapping_layers=3, latent_size=8, dlatent_size=8, mapping_fmaps=8)
    generator = Generator(startf=4, maxf=8, layer_count=2, latent_size=8, channels=3)
    torch.manual_seed(0)
    want = [_draw((o, 8), math.sqrt(2), 8, 0.1) for o in (8, 8, 16)]
    for i, (c, cin) in enumerate(((8, 8), (4, 8))):  # per block: [conv_1], style_1, conv_2, style_2, then to_rgb
        if i > 0:
            want.append(_draw((c, cin, 3, 3), math.sqrt(2), 9 * cin))
        want += [_draw((2 * c, 8), 1, 8), _draw((c, c, 3, 3), math.sqrt(2), 9 * c), _draw((2 * c, 8), 1, 8),
                 _draw((3, c, 1, 1), 0.03, c)]
    b0, b1 = generator.decode_block
    rgb0, rgb1 = (t.to_rgb for t in generator.to_rgb)
    got = [*(layer.weight for layer in mapping.map_blocks), b0.style_1.weight, b0.conv_2.weight, b0.style_2.weight,
           rgb0.weight, b1.conv_1.weight, b1.style_1.weight, b1.conv_2.weight, b1.style_2.weight, rgb1.weight]
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    assert mapping.map_blocks[0].weight.lr_equalization_coef == pytest.approx(math.sqrt(2 / 8) * 0.1)
    assert mapping.map_blocks[0].bias.lr_equalization_coef == 0.1
    assert rgb1.weight.lr_equalization_coef == pytest.approx(0.03 / 2)
    assert torch.equal(generator.const, torch.ones(1, 8, 4, 4)) and not b0.noise_weight_1.any()


@pytest.mark.parametrize("cfg", CONFIGS, ids=["L3", "L6"])
def test_matches_the_native_model(cfg):
    native, official = native_and_official(cfg)
    lod, n = cfg.layer_count - 1, 2
    side = 4 * 2 ** lod
    z, x = torch.randn(n, cfg.latent_size), torch.randn(n, cfg.channels, side, side)
    with torch.no_grad():
        w = native.map(z)
        ws = official.mapping_f(z)
        torch.testing.assert_close(ws[:, 0], w, rtol=1e-5, atol=1e-5)
        for blend in (1.0, 0.6):
            for ours, theirs in (("random", True), ("const", "batch_constant")):
                torch.manual_seed(4)
                want = native.generate(ws, lod, blend, noise=ours)
                torch.manual_seed(4)
                torch.testing.assert_close(official.decoder(ws, lod, blend, theirs), want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(official.encoder(x, lod, blend)[:, 0], native.encode(x, lod, blend),
                                       rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(official.encode(x, lod, 1.0)[1], native.discriminate(native.encode(x, lod)),
                                   rtol=1e-5, atol=1e-5)


def test_generator_without_noise_adds_the_original_term():
    cfg = CONFIGS[0]
    models = random_official(cfg, 1)
    generator = load_strict(official_model(cfg), models).decoder
    ws = torch.randn(2, 6, cfg.latent_size)
    with torch.no_grad():
        torch.testing.assert_close(generator(ws, 2, 1, noise=False),
                                   ref_generate(models["generator"], ws, 2, [[None, None]] * 3), rtol=1e-5, atol=1e-5)
        torch.manual_seed(2)
        got = generator(ws, 2, 1, noise=True)
        torch.manual_seed(2)
        torch.testing.assert_close(got, ref_generate(models["generator"], ws, 2, draw_official_noise(2, 2)),
                                   rtol=1e-5, atol=1e-5)


def _native_losses(model, x, lod, blend, seed):
    """The three ALAE losses of the native model with the original's draws: z, then G's noise."""
    torch.manual_seed(seed)
    with torch.no_grad():
        fake = model.generate(model.map(torch.randn(x.shape[0], model.latent_size)), lod, blend)
    real_logits = model.discriminate(model.encode(x, lod, blend))
    fake_logits = model.discriminate(model.encode(fake, lod, blend))
    r1 = torch.autograd.grad(real_logits.sum(), x, create_graph=True)[0].square().sum((1, 2, 3))
    loss_d = (F.softplus(fake_logits) + F.softplus(-real_logits) + 5.0 * r1).mean()  # the original's formula
    torch.manual_seed(seed)
    w = model.map(torch.randn(x.shape[0], model.latent_size))
    loss_g = losses.g_adversarial(model.discriminate(model.encode(model.generate(w, lod, blend), lod, blend)))
    torch.manual_seed(seed)
    w = model.map(torch.randn(x.shape[0], model.latent_size))
    loss_ae = losses.latent_ae(model.encode(model.generate(w, lod, blend), lod, blend), w)
    return loss_d, loss_g, loss_ae


@pytest.mark.parametrize("blend", [1.0, 0.7])
def test_forward_gives_the_original_losses(blend):
    cfg = CONFIGS[0]
    native, official = native_and_official(cfg, seed=5)
    x = torch.randn(3, 1, 16, 16, requires_grad=True)
    want = _native_losses(native, x, 2, blend, seed=9)
    got = []
    for d_train, ae in ((True, False), (False, False), (True, True)):
        torch.manual_seed(9)
        got.append(official(x, 2, blend, d_train=d_train, ae=ae))
    for g, w, name in zip(got, want, ("loss_d", "loss_g", "loss_ae")):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=name)
    got[0].backward()  # the D loss holds R1's double backward
    assert all(p.grad is not None for p in official.encoder.encode_block.parameters())
    official(x, 2, blend, d_train=False, ae=False)  # the G step freezes E, as the original does
    assert not any(p.requires_grad for p in official.encoder.parameters())


def test_generate_tracks_dlatent_avg_mixes_and_truncates():
    cfg = CONFIGS[0]
    _, model = native_and_official(cfg, dlatent_avg_beta=0.9, truncation_psi=0.5, truncation_cutoff=2,
                                   style_mixing_prob=1.0)
    z = torch.randn(4, cfg.latent_size)
    before = model.dlatent_avg.buff.clone()
    random.seed(0)
    torch.manual_seed(0)
    with torch.no_grad():
        s, _ = model.generate(2, 1, z=z, count=4, return_styles=True)
        w = model.mapping_f(z)
        torch.testing.assert_close(s, w[:, :1])
        torch.testing.assert_close(model.dlatent_avg.buff, torch.lerp(before, w.mean(0), 0.1))
        # the styles reaching G: mixed past a cutoff from random.randint, then truncated below layer 2
        random.seed(0)
        random.random()
        cutoff = random.randint(1, 6)
        torch.manual_seed(0)
        w2 = model.mapping_f(torch.randn(4, cfg.latent_size))
        styles = torch.where(torch.arange(6)[None, :, None] < cutoff, w, w2)
        coefs = torch.tensor([0.5, 0.5, 1, 1, 1, 1])[None, :, None]
        want = torch.lerp(model.dlatent_avg.buff, styles, coefs)
        random.seed(0)
        torch.manual_seed(0)
        model.dlatent_avg.buff.copy_(before)
        seen = []
        model.decoder.forward = lambda st, *args: seen.append(st) or st
        model.generate(2, 1, z=z, count=4)
        torch.testing.assert_close(seen[0], want)


def test_lerp_is_the_original_ema():
    cfg = CONFIGS[0]
    _, a = native_and_official(cfg, seed=1)
    _, b = native_and_official(cfg, seed=2)
    want = {k: torch.lerp(v, b.state_dict()[k], 0.25) for k, v in a.state_dict().items()}
    before = a.dlatent_avg.buff.clone()
    a.lerp(b, 0.75)
    for k, v in a.state_dict().items():  # dlatent_avg is a buffer: the original's EMA leaves it alone
        torch.testing.assert_close(v, before if k == "dlatent_avg.buff" else want[k], msg=k)


def test_mnist_fc_matches_the_native_mlp():
    native, official = native_and_official(FC)
    z, x = torch.randn(3, 50), torch.rand(3, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        w = native.map(z)
        ws = official.mapping_f(z)
        torch.testing.assert_close(ws[:, 0], w, rtol=1e-5, atol=1e-5)
        img = native.generate(w)
        torch.testing.assert_close(official.decoder(ws, 3, 1, True), F.interpolate(img, 32), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(official.encoder(x, 3, 1), native.encode(x), rtol=1e-5, atol=1e-5)
        Z, logits = official.encode(x, 3, 1)
        torch.testing.assert_close(logits, native.discriminate(native.encode(x)), rtol=1e-5, atol=1e-5)
    # The original Model cannot run EncoderFC (its D indexes a third axis of E's [N, ℓ] output); this one can.
    x32 = F.interpolate(x, 32).requires_grad_()
    for d_train, ae in ((True, False), (False, False), (True, True)):
        assert torch.isfinite(official(x32, 3, 1, d_train, ae))


def test_registries_and_what_is_not_provided():
    assert GENERATORS["GeneratorDefault"] is Generator and GENERATORS["GeneratorFC"] is GeneratorFC
    assert ENCODERS["EncoderDefault"] is EncoderDefault and ENCODERS["EncoderFC"] is EncoderFC
    assert MAPPINGS["MappingF"] is MappingF and MAPPINGS["MappingD"] is MappingD
    with pytest.raises(KeyError, match="EncoderWithFC.*EncoderDefault"):
        Model(layer_count=2, generator="GeneratorDefault", encoder="EncoderWithFC")
    with pytest.raises(ValueError, match="'last'"):
        EncodeBlock(4, 8, 8, last=True)
