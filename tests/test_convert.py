"""Official checkpoint conversion: stub-tolerant loading, the §8 layout, and a round trip that
keeps G(w), E(x) and D logits — checked against an independent forward of the official layout."""

import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from alae_fast.convert import (alae_fast_to_official, infer_config, load_official, main,
                               official_to_alae_fast, safe_torch_load)
from alae_fast.convert import safe_pickle
from alae_fast.models import ModelConfig, build_model
from alae_fast.models.style_alae import block_channels

CONFIGS = [
    ModelConfig("style", layer_count=3, startf=8, maxf=16, latent_size=16, mapping_layers=2, channels=1),
    # L=6: the last level is 128², with fused (transposed / stride-2) resampling convs and Cin != C.
    ModelConfig("style", layer_count=6, startf=4, maxf=8, latent_size=8, mapping_layers=3, channels=3),
]


class Tracker:
    """Stands for the official run's custom classes pickled under 'auxiliary'."""

    def __init__(self):
        self.history = {"loss": [1.0, 0.5]}


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def random_model(cfg, seed):
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        model.w_avg.normal_()
    return model


# --- an independent forward over the official layout (effective weights, SPEC §3/§8) ---

def _fuse(w):
    w = F.pad(w, (1, 1, 1, 1))
    return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]


def _inorm(x, eps):
    m = x.mean((2, 3), keepdim=True)
    return (x - m) * torch.rsqrt(x.var((2, 3), unbiased=False, keepdim=True) + eps)


def ref_generate(g, ws, lod, noises):
    x = g["const"].expand(ws.shape[0], -1, -1, -1)
    for i in range(lod + 1):
        p = f"decode_block.{i}."
        if i > 0:
            if 4 * 2 ** i >= 128:
                x = F.conv_transpose2d(x, _fuse(g[p + "conv_1.weight"]), stride=2, padding=1)
            else:
                x = F.conv2d(F.interpolate(x, scale_factor=2), g[p + "conv_1.weight"], padding=1)
            x = F.conv2d(x, g[p + "blur.weight"], padding=1, groups=x.shape[1])
        for k in (1, 2):
            if k == 2:
                x = F.conv2d(x, g[p + "conv_2.weight"], padding=1)
            x = x + g[p + f"noise_weight_{k}"] * noises[i][k - 1] + g[p + f"bias_{k}"]
            x = _inorm(F.leaky_relu(x, 0.2), 1e-8)
            s = F.linear(ws[:, 2 * i + k - 1], g[p + f"style_{k}.weight"], g[p + f"style_{k}.bias"])
            s = s.view(s.shape[0], 2, x.shape[1], 1, 1)
            x = x * (s[:, 0] + 1) + s[:, 1]
    return F.conv2d(x, g[f"to_rgb.{lod}.to_rgb.weight"], g[f"to_rgb.{lod}.to_rgb.bias"])


def _stats(x):
    m = x.mean((2, 3))
    return torch.cat([m, (x - m[..., None, None]).square().mean((2, 3)).sqrt()], 1)


def ref_encode(e, x, lod, layers):
    first = layers - 1 - lod
    side = x.shape[-1]
    x = F.leaky_relu(F.leaky_relu(F.conv2d(x, e[f"from_rgb.{first}.from_rgb.weight"],
                                           e[f"from_rgb.{first}.from_rgb.bias"]), 0.2), 0.2)
    w = 0
    for j in range(first, layers):
        p = f"encode_block.{j}."
        x = F.leaky_relu(F.conv2d(x, e[p + "conv_1.weight"], padding=1) + e[p + "bias_1"], 0.2)
        s1 = _stats(x)
        x = F.conv2d(_inorm(x, 1e-5), e[p + "blur.weight"], padding=1, groups=x.shape[1])
        if side >= 128:
            x = F.conv2d(x, _fuse(e[p + "conv_2.weight"]) * 0.25, stride=2, padding=1)
        else:
            x = F.avg_pool2d(F.conv2d(x, e[p + "conv_2.weight"], padding=1), 2)
        x = F.leaky_relu(x + e[p + "bias_2"], 0.2)
        s2 = _stats(x)
        x = _inorm(x, 1e-5)
        side //= 2
        w = w + F.linear(s1, e[p + "style_1.weight"], e[p + "style_1.bias"]) \
            + F.linear(s2, e[p + "style_2.weight"], e[p + "style_2.bias"])
    return w


def ref_map(fl, z, layers):
    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    for k in range(layers):
        x = F.leaky_relu(F.linear(x, fl[f"map_blocks.{k}.fc.weight"], fl[f"map_blocks.{k}.fc.bias"]), 0.2)
    return x


def ref_discriminate(tl, w):
    for k in range(3):
        w = F.linear(w, tl[f"map_blocks.{k}.weight"], tl[f"map_blocks.{k}.bias"])
    return w.view(w.shape[0], 2, -1)[:, 1, 0]  # the official logit


def _outputs(model, cfg, z, lod):
    ws = model.styles(z, lod, mixing_prob=0.0)
    img = model.generate(ws, lod, noise="fixed")
    w = model.encode(img, lod)
    return model.map(z), img, w, model.discriminate(w)


def check_official_shapes(models, cfg):
    L, lat, ch = cfg.layer_count, cfg.latent_size, cfg.channels
    g, e = models["generator"], models["discriminator"]
    assert g["const"].shape == (1, block_channels(cfg, 0), 4, 4)
    for i in range(L):
        c, cin = block_channels(cfg, i), block_channels(cfg, max(i - 1, 0))
        p = f"decode_block.{i}."
        if i > 0:
            assert g[p + "conv_1.weight"].shape == ((cin, c, 3, 3) if 4 * 2 ** i >= 128 else (c, cin, 3, 3))
        for k in (1, 2):
            assert g[p + f"noise_weight_{k}"].shape == g[p + f"bias_{k}"].shape == (1, c, 1, 1)
            assert g[p + f"style_{k}.weight"].shape == (2 * c, lat) and g[p + f"style_{k}.bias"].shape == (2 * c,)
        assert g[p + "conv_2.weight"].shape == (c, c, 3, 3) and g[p + "blur.weight"].shape == (c, 1, 3, 3)
        assert g[f"to_rgb.{i}.to_rgb.weight"].shape == (ch, c, 1, 1) and g[f"to_rgb.{i}.to_rgb.bias"].shape == (ch,)
        cin, cout = block_channels(cfg, L - 1 - i), min(cfg.maxf, cfg.startf * 2 ** (i + 1))
        p = f"encode_block.{i}."
        assert e[p + "conv_1.weight"].shape == (cin, cin, 3, 3) and e[p + "conv_2.weight"].shape == (cout, cin, 3, 3)
        assert e[p + "bias_1"].shape == (1, cin, 1, 1) and e[p + "bias_2"].shape == (1, cout, 1, 1)
        assert e[p + "style_1.weight"].shape == (lat, 2 * cin) and e[p + "style_2.weight"].shape == (lat, 2 * cout)
        assert e[p + "blur.weight"].shape == (cin, 1, 3, 3) and e[f"from_rgb.{i}.from_rgb.weight"].shape == (cin, ch, 1, 1)
    for k in range(cfg.mapping_layers):
        assert models["mapping_fl"][f"map_blocks.{k}.fc.weight"].shape == (lat, lat)
    assert models["mapping_tl"]["map_blocks.2.weight"].shape == (2 * lat, lat)
    assert models["dlatent_avg"]["buff"].shape == (2 * L, lat)
    for net in ("generator", "discriminator", "mapping_fl", "mapping_tl"):
        assert models[net + "_s"].keys() == models[net].keys()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"L{c.layer_count}")
def test_round_trip_keeps_outputs(cfg, tmp_path):
    model, ema = random_model(cfg, 0), random_model(cfg, 1)
    models = alae_fast_to_official(model.state_dict(), ema.state_dict(), cfg)
    check_official_shapes(models, cfg)
    path = tmp_path / "official.pth"
    torch.save({"models": models, "auxiliary": {"tracker": Tracker(), "optimizer": {"lr": 0.1}}}, path)

    loaded = load_official(path)
    assert infer_config(loaded) == cfg
    state = official_to_alae_fast(loaded)
    back, back_ema = build_model(cfg).eval(), build_model(cfg).eval()
    back.load_state_dict(state["model"])
    back_ema.load_state_dict(state["ema"])
    for name, t in ema.state_dict().items():  # the official file has one dlatent_avg: the model's
        want = model.w_avg if name == "w_avg" else t
        torch.testing.assert_close(back_ema.state_dict()[name], want, rtol=1e-5, atol=1e-6, msg=name)

    lod = cfg.layer_count - 1
    z = torch.randn(1 if lod >= 5 else 3, cfg.latent_size)
    img_in = torch.randn(z.shape[0], cfg.channels, 4 * 2 ** lod, 4 * 2 ** lod)
    with torch.no_grad():
        want = _outputs(model, cfg, z, lod)
        got = _outputs(back, cfg, z, lod)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(back.encode(img_in, lod), model.encode(img_in, lod), rtol=1e-4, atol=1e-4)

        # The official layout itself computes the same F, G, E and D.
        noises = [(b.noise_fixed_1, b.noise_fixed_2) for b in model.generator.blocks]
        w, img, w_rec, logit = want
        torch.testing.assert_close(ref_map(loaded["mapping_fl"], z, cfg.mapping_layers), w, rtol=1e-4, atol=1e-4)
        ws = w[:, None].expand(-1, 2 * cfg.layer_count, -1)
        torch.testing.assert_close(ref_generate(loaded["generator"], ws, lod, noises), img, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ref_encode(loaded["discriminator"], img_in, lod, cfg.layer_count),
                                   model.encode(img_in, lod), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ref_discriminate(loaded["mapping_tl"], w_rec), logit, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(back.w_avg, model.w_avg)


def test_malicious_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    cfg = CONFIGS[0]
    models = alae_fast_to_official(random_model(cfg, 0).state_dict(), None, cfg)
    path = tmp_path / "evil.pth"
    torch.save({"models": models, "auxiliary": {"x": Evil(marker)}}, path)
    data = safe_torch_load(path)
    assert not marker.exists()
    assert isinstance(data["auxiliary"]["x"], safe_pickle.Stub)
    assert data["auxiliary"]["x"].stub_of in ("posix.system", "nt.system", "os.system")
    assert isinstance(safe_pickle.loads(pickle.dumps(Evil(marker))), safe_pickle.Stub)
    assert not marker.exists()
    official_to_alae_fast(load_official(path))  # the weights are still usable


def test_mismatched_shapes_are_named():
    cfg = CONFIGS[0]
    models = alae_fast_to_official(random_model(cfg, 0).state_dict(), None, cfg)
    models["generator"]["decode_block.1.conv_2.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(ValueError, match="decode_block.1.conv_2.weight"):
        official_to_alae_fast(models, cfg)


def test_cli_both_directions(tmp_path, capsys):
    cfg = CONFIGS[0]
    model = random_model(cfg, 0)
    official = tmp_path / "model_1.pth"
    torch.save({"models": alae_fast_to_official(model.state_dict(), None, cfg), "auxiliary": {"t": Tracker()}},
               official)
    ours = tmp_path / "ours.pt"
    assert main([str(official), str(ours)]) == 0
    state = torch.load(ours, weights_only=True)
    assert ModelConfig(**state["config"]["model"]) == cfg
    for name, t in model.state_dict().items():
        torch.testing.assert_close(state["model"][name], t, rtol=1e-5, atol=1e-6)
    again = tmp_path / "again.pth"
    assert main([str(ours), str(again), "--to", "official"]) == 0
    assert '"to": "official"' in capsys.readouterr().out
    torch.testing.assert_close(load_official(again)["generator"]["const"], model.generator.const.detach())
    with pytest.raises(SystemExit):
        main([str(ours), str(tmp_path / "x.pt"), "--to", "alae_fast"])
