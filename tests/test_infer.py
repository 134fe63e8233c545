"""Inference helpers on a tiny random StyleALAE: shapes, determinism, and the files they write."""

import pytest
import torch
from PIL import Image

from alae_fast import infer
from alae_fast.models import ModelConfig, build_model
from alae_fast.io.checkpoint import save_file

CFG = ModelConfig("style", layer_count=3, startf=4, maxf=8, latent_size=8, mapping_layers=2, channels=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(CFG).eval()
    with torch.no_grad():
        m.w_avg.normal_()
    return m


def test_generate_is_seeded_and_truncates(model):
    a = infer.generate(model, [1, 2, 3])
    assert a.shape == (3, 1, 16, 16)
    torch.testing.assert_close(infer.generate(model, [2]), a[1:2])
    assert not torch.allclose(infer.generate(model, [1], psi=0.5), a[:1])
    assert infer.generate(model, [1], lod=1).shape == (1, 1, 8, 8)


def test_reconstruct_pairs(model):
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    pairs = infer.reconstruct(model, images)
    assert pairs.shape == (3, 2, 1, 16, 16)
    x = images.float().div(127.5).sub(1)
    torch.testing.assert_close(pairs[:, 0], torch.nn.functional.avg_pool2d(x, 2))
    with torch.no_grad():
        torch.testing.assert_close(pairs[:, 1], model(pairs[:, 0], noise="fixed").clamp(-1, 1))


def test_every_image_returned_is_clamped():
    torch.manual_seed(0)
    loud = build_model(CFG).eval()
    with torch.no_grad():
        for p in loud.generator.to_rgb.parameters():
            p.mul_(20.0)  # raw outputs far outside [-1, 1]
        raw = loud.generate(loud.styles(infer.seeds_to_z([1, 2], 8), 2, 0.0), 2, noise="fixed")
    assert raw.abs().max() > 1.5
    images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    w = loud.encode(images.float() / 127.5 - 1, 2).detach()[0]
    outputs = {"generate": infer.generate(loud, [1, 2]), "reconstruct": infer.reconstruct(loud, images),
               "style_mix": infer.style_mix(loud, [1], [2]), "interpolate": infer.interpolate(loud, 1, 2, 3),
               "edit": infer.edit(loud, w, torch.ones(8), [0.0, 1.0])}
    for name, out in outputs.items():
        assert out.min() >= -1 and out.max() <= 1, name
        assert (out.abs() == 1).any(), name  # it was clamped, not rescaled


def test_style_mix_grid(model):
    grid = infer.style_mix(model, [1, 2], [3, 4, 5], layer_range=(0, 2))
    assert grid.shape == (3 * 4, 1, 16, 16)
    cols = infer.generate(model, [3, 4, 5])
    torch.testing.assert_close(grid[1:4], cols)
    torch.testing.assert_close(grid[4], infer.generate(model, [1])[0])
    ws_row = model.styles(infer.seeds_to_z([1], 8), 2, 0.0)
    ws_col = model.styles(infer.seeds_to_z([3], 8), 2, 0.0)
    mixed = torch.cat([ws_col[:, :2], ws_row[:, 2:]], 1)
    with torch.no_grad():
        torch.testing.assert_close(grid[5], model.generate(mixed, 2, noise="fixed")[0])
    with pytest.raises(ValueError, match="layer_range"):
        infer.style_mix(model, [1], [2], layer_range=(3, 2))


def test_interpolate_and_gif(model, tmp_path):
    frames = infer.interpolate(model, 1, 2, steps=5)
    assert frames.shape == (5, 1, 16, 16)
    torch.testing.assert_close(frames[0], infer.generate(model, [1])[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(frames[-1], infer.generate(model, [2])[0], rtol=1e-4, atol=1e-4)
    path = infer.save_gif(frames, tmp_path / "lerp.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 5 and gif.size == (64, 64)


def test_edit_and_grid(model, tmp_path):
    w = model.map(infer.seeds_to_z([7], 8))[0].detach()
    direction = torch.randn(8)
    images = infer.edit(model, w, direction, strengths=[-1.0, 0.0, 2.0])
    assert images.shape == (3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(images[1], model.generate(w[None], 2, noise="fixed")[0])
        torch.testing.assert_close(images[2], model.generate((w + 2 * direction)[None], 2, noise="fixed")[0])
    coarse = infer.edit(model, w, direction, strengths=[2.0], layers=(0, 2))
    assert not torch.allclose(coarse[0], images[2])
    path = infer.save_grid(images, tmp_path / "edit.png", nrow=3)
    assert Image.open(path).size[0] > Image.open(path).size[1]


def test_load_model_round_trip(model, tmp_path):
    import dataclasses

    path = tmp_path / "ckpt.pt"
    save_file({"config": {"model": dataclasses.asdict(CFG)}, "model": model.state_dict(),
               "ema": model.state_dict()}, path)
    loaded = infer.load_model(path)
    torch.testing.assert_close(infer.generate(loaded, [5]), infer.generate(model, [5]))
    with pytest.raises(ValueError, match="which"):
        infer.load_model(path, which="best")
