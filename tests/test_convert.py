"""Official checkpoint conversion: stub-tolerant loading, the official layout (StyleALAE and MNIST-FC),
round trips that keep F, G, E and D (checked against an independent forward of the official layout),
and the CLI's safety: never over its input, atomic writes, one-line errors for malformed files."""

import os
import pickle

import pytest
import torch
from _official import (draw_official_noise, official_keys, random_official, ref_discriminate, ref_encode,
                       ref_fc_encode, ref_fc_generate, ref_generate, ref_map, shapes)

from alae_fast.convert import (alae_fast_to_official, infer_config, load_official,
                               official_to_alae_fast, safe_torch_load)
from alae_fast.cli import main as alae_fast_cli
from alae_fast.convert import safe_pickle
from alae_fast.models import ModelConfig, build_model



def convert_main(argv) -> int:
    return alae_fast_cli(["convert", *argv])


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


def _outputs(model, cfg, z, lod):
    ws = model.styles(z, lod, mixing_prob=0.0)
    img = model.generate(ws, lod, noise="fixed")
    w = model.encode(img, lod)
    return model.map(z), img, w, model.discriminate(w)


def check_official_shapes(models, cfg):
    for net, keys in official_keys(cfg).items():
        assert dict(shapes(models[net])) == dict(keys), net
        if net != "dlatent_avg":
            assert dict(shapes(models[net + "_s"])) == dict(keys), net


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
    assert convert_main([str(official), str(ours)]) == 0
    state = torch.load(ours, weights_only=True)
    assert ModelConfig(**state["config"]["model"]) == cfg
    for name, t in model.state_dict().items():
        torch.testing.assert_close(state["model"][name], t, rtol=1e-5, atol=1e-6)
    again = tmp_path / "again.pth"
    assert convert_main([str(ours), str(again), "--to", "official"]) == 0
    assert '"to": "official"' in capsys.readouterr().out
    torch.testing.assert_close(load_official(again)["generator"]["const"], model.generator.const.detach())
    assert convert_main([str(ours), str(tmp_path / "x.pt"), "--to", "alae_fast"]) == 2
    assert "already in the alae_fast layout" in capsys.readouterr().err


# --- seeded noise: the official draws give the official images ---

@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"L{c.layer_count}")
def test_seeded_random_noise_gives_the_official_images(cfg):
    model = random_model(cfg, 0)
    generator = alae_fast_to_official(model.state_dict(), None, cfg)["generator"]
    lod = cfg.layer_count - 1
    ws = model.styles(torch.randn(2, cfg.latent_size), lod, mixing_prob=0.0)
    with torch.no_grad():
        torch.manual_seed(7)
        ours = model.generate(ws, lod, noise="random")
        torch.manual_seed(7)
        official = ref_generate(generator, ws, lod, draw_official_noise(2, lod))
        torch.manual_seed(7)  # every map [N, 1, H, W]: the draws shift, and the images differ
        shifted = ref_generate(generator, ws, lod, [[torch.randn(2, 1, 4 << i, 4 << i) for _ in "12"]
                                                    for i in range(lod + 1)])
    torch.testing.assert_close(ours, official, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, shifted, rtol=1e-2, atol=1e-2)


# --- MNIST-FC ---

FC = ModelConfig("mlp", latent_size=50, mapping_layers=6, channels=1, image_size=28, hidden=1024)


def test_mnist_fc_converts_both_ways(tmp_path):
    models = random_official(FC, 0)
    official = tmp_path / "mnist_fc.pth"
    torch.save({"models": models, "auxiliary": {"tracker": Tracker()}}, official)
    ours, back = tmp_path / "ours.pt", tmp_path / "back.pth"
    assert convert_main([str(official), str(ours)]) == 0
    state = torch.load(ours, weights_only=True)
    assert ModelConfig(**state["config"]["model"]) == FC
    assert convert_main([str(ours), str(back)]) == 0

    again = load_official(back)
    assert sorted(again) == sorted(models)
    for net, sd in models.items():  # identical up to the rounding of ÷ and × by each layer's scale
        assert dict(shapes(again[net])) == dict(shapes(sd)), net
        for key, t in sd.items():
            torch.testing.assert_close(again[net][key], t, rtol=3e-7, atol=0, msg=f"{net}.{key}")

    model = build_model(FC).eval()
    model.load_state_dict(state["model"])
    z, x = torch.randn(4, 50), torch.rand(4, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        w = model.map(z)
        torch.testing.assert_close(w, ref_map(models["mapping_fl"], z, 6), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.generate(w), ref_fc_generate(models["generator"], w), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode(x), ref_fc_encode(models["discriminator"], x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.discriminate(w), ref_discriminate(models["mapping_tl"], w),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.w_avg, models["dlatent_avg"]["buff"][0])
    ema = build_model(FC).eval()
    ema.load_state_dict(state["ema"])
    torch.testing.assert_close(ema.encoder.blocks[2].weight * ema.encoder.blocks[2].weight_gain,
                               models["discriminator_s"]["fc_3.weight"])


def test_mlp_the_official_code_cannot_hold_is_refused():
    cfg = ModelConfig("mlp", latent_size=8, mapping_layers=2, hidden=16)
    with pytest.raises(ValueError, match="hidden=16"):
        alae_fast_to_official(build_model(cfg).state_dict(), None, cfg)


# --- the CLI: never over its input, atomic, one line per malformed file ---

def _official_file(path):
    cfg = CONFIGS[0]
    torch.save({"models": alae_fast_to_official(random_model(cfg, 0).state_dict(), None, cfg), "auxiliary": {}}, path)
    return path


def _fails(argv, capsys, *needles):
    assert convert_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_cli_never_writes_over_its_input(tmp_path, capsys):
    src = _official_file(tmp_path / "model.pth")
    before = src.read_bytes()
    (tmp_path / "link.pth").symlink_to(src)
    os.link(src, tmp_path / "hard.pth")
    for dst in (src, tmp_path / "link.pth", tmp_path / "hard.pth", tmp_path / "." / "model.pth"):
        _fails([str(src), str(dst)], capsys, "is the input file", str(src))
    _fails([str(src), str(tmp_path)], capsys, "is a directory")
    _fails([str(tmp_path / "missing.pth"), str(tmp_path / "out.pt")], capsys, "missing.pth", "does not exist")
    assert src.read_bytes() == before and (tmp_path / "link.pth").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.pth", "link.pth", "model.pth"]


def test_cli_writes_atomically(tmp_path, capsys, monkeypatch):
    src = _official_file(tmp_path / "model.pth")
    dst = tmp_path / "out.pt"
    dst.write_bytes(b"the previous conversion")

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", torn_save)
    _fails([str(src), str(dst)], capsys, f"cannot write {dst}", "No space left on device")
    assert dst.read_bytes() == b"the previous conversion"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "out.pt"]  # no temp file left
    monkeypatch.undo()
    assert convert_main([str(src), str(dst)]) == 0
    assert "model" in torch.load(dst, weights_only=True)


def _crafted_files(tmp_path, marker):
    cfg = CONFIGS[0]
    good = _official_file(tmp_path / "good.pth").read_bytes()
    flipped = bytearray(good)
    flipped[-200:-100] = bytes(b ^ 0xFF for b in flipped[-200:-100])  # inside the zip's central directory
    raw = {"empty.pth": b"", "truncated.pth": good[:len(good) // 2], "flipped.pth": bytes(flipped),
           "text.pth": b"not a checkpoint\n", "plain-pickle.pth": pickle.dumps({"models": {}})}
    for name, data in raw.items():
        (tmp_path / name).write_bytes(data)

    def models(**change):
        out = alae_fast_to_official(random_model(cfg, 0).state_dict(), None, cfg)
        for key, value in change.items():
            if value is None:
                del out["generator"][key]
            else:
                out["generator"][key] = value
        return {"models": out, "auxiliary": {}}

    crafted = {
        "list.pth": [1, 2, 3],
        "evil-top.pth": Evil(marker),
        "models-stub.pth": {"models": Tracker()},
        "stub-tensor.pth": models(const=Evil(marker)),
        "int-tensor.pth": models(const=torch.ones(1, 16, 4, 4, dtype=torch.int64)),
        "wrong-shape.pth": models(const=torch.ones(1, 3, 4, 4)),
        "missing-key.pth": models(**{"decode_block.1.conv_2.weight": None}),
        "not-style-or-fc.pth": {"models": {net: {} for net in ("generator", "discriminator", "mapping_fl",
                                                                "mapping_tl")}},
        "ours-no-config.pth": {"model": {"w_avg": torch.zeros(16)}},
        "ours-bad-config.pth": {"model": {}, "config": {"model": {"kind": "style", "bogus": 1}}},
        "ours-huge-config.pth": {"model": {}, "config": {"model": {"kind": "style", "mapping_layers": 10 ** 9}}},
        "ours-model-string.pth": {"model": "weights", "config": {"model": {"kind": "style"}}},
    }
    for name, obj in crafted.items():
        torch.save(obj, tmp_path / name)
    return [tmp_path / name for name in [*raw, *crafted]]


def test_cli_reports_malformed_files_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for path in _crafted_files(tmp_path, marker):
        out = tmp_path / (path.stem + ".out")
        _fails([str(path), str(out)], capsys, str(path))
        assert not out.exists(), path
    assert not marker.exists()


def test_alae_fast_convert_exit_status(tmp_path, capsys):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(_official_file(tmp_path / "good.pth").read_bytes()[:1000])
    assert alae_fast_cli([str(x) for x in ("convert", bad, tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"alae-fast convert: error: {bad}: not a readable checkpoint") and err.count("\n") == 1


def test_cli_malicious_auxiliary_is_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = CONFIGS[0]
    src = tmp_path / "evil.pth"
    torch.save({"models": alae_fast_to_official(random_model(cfg, 0).state_dict(), None, cfg),
                "auxiliary": {"tracker": Evil(marker)}}, src)
    assert convert_main([str(src), str(tmp_path / "out.pt")]) == 0
    assert not marker.exists()
