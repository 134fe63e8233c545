"""Metrics: streaming FID statistics against NumPy/SciPy, the feature networks' layouts, and every
metric end to end on tiny random networks (no real weights)."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from alae_fast.data import load_builtin
from alae_fast.metrics import (FeatureStats, InceptionV3Features, LPIPSVGG, fid_from_stats, fid_model_vs_data,
                               frechet_distance, image_batches, latent_accuracy, load_inception, load_lpips_vgg,
                               main, ppl_w, reconstruction_error)
from alae_fast.models import ModelConfig, build_model
from alae_fast.train.checkpoint import save_file

STYLE = ModelConfig("style", layer_count=3, startf=4, maxf=8, latent_size=8, mapping_layers=2, channels=1)
MLP = ModelConfig("mlp", latent_size=8, mapping_layers=2, channels=1, image_size=28, hidden=16)
TINY_VGG = [4, 4, "M", 4, 4, "M", 4, 4, 4, "M", 4, 4, 4, "M", 4, 4, 4]


@pytest.fixture(scope="module")
def digits():
    return load_builtin("digits")


def tiny_model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


class TinyFeatures(nn.Module):
    """Stands in for Inception: images -> 6 features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(1, 6, 3, 2), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def reference_fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)


def test_streaming_stats_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(301, 16)) * 3 + 5
    b = rng.normal(size=(257, 16)) @ rng.normal(size=(16, 16)) * 0.5
    sa, sb = FeatureStats(16), FeatureStats(16)
    for lo, hi in [(0, 7), (7, 100), (100, 301)]:
        sa.update(torch.from_numpy(a[lo:hi]).float())
    for chunk in np.array_split(b, 5):
        sb.update(torch.from_numpy(chunk).float())
    mean, cov = sa.mean_cov()
    a32 = a.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mean, a32.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cov, np.cov(a32, rowvar=False), rtol=1e-8, atol=1e-8)
    want = reference_fid(a32, b.astype(np.float32).astype(np.float64))
    assert fid_from_stats(sa, sb) == pytest.approx(want, rel=1e-6)
    assert frechet_distance(*sa.mean_cov(), *sa.mean_cov()) == pytest.approx(0.0, abs=1e-6)


def test_inception_layout_and_loading(tmp_path):
    net = InceptionV3Features()
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 21_785_568  # torchvision's minus fc and AuxLogits
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var", "Mixed_5b.branch_pool.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7c.branch3x3dbl_3b.conv.weight"):
        assert key in sd
    path = tmp_path / "inception.pth"
    torch.save({**sd, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, path)
    loaded = load_inception(path)
    net.resize = loaded.resize = False
    with torch.no_grad():
        x = torch.rand(1, 3, 75, 75) * 2 - 1
        assert loaded(x).shape == (1, 2048)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="missing keys"):
        load_inception(path)


def test_fid_pipeline_on_tiny_networks(digits):
    model = tiny_model(STYLE)
    real = digits[0][:40]
    out = fid_model_vs_data(model, TinyFeatures(), image_batches(real, 40, 16, res=16), num=40, batch=16, dim=6)
    assert out["num_real"] == out["num_fake"] == 40 and np.isfinite(out["value"]) and out["value"] >= 0


def test_lpips_vgg_and_ppl(tmp_path):
    dist = LPIPSVGG(TINY_VGG).eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    d = dist(x, x.flip(0))
    assert d.shape == (2,) and (d > 0).all() and dist(x, x).abs().max() < 1e-6
    out = ppl_w(tiny_model(STYLE), dist, num_samples=24, batch=12)
    assert out["metric"] == "ppl_w" and np.isfinite(out["value"]) and out["value"] > 0
    # Full-size VGG16 files load by torchvision key names (features.N.*), LPIPS heads by lin{k}.model.1.weight.
    full = LPIPSVGG()
    torch.save({**{f"features.{k}": v for k, v in full.features.state_dict().items()},
                "classifier.0.weight": torch.zeros(1)}, tmp_path / "vgg16.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand_like(getattr(full, f"lin{k}")) for k in range(5)},
               tmp_path / "lin.pth")
    net = load_lpips_vgg(tmp_path / "vgg16.pth", tmp_path / "lin.pth")
    assert net.lin4.shape == (1, 512, 1, 1)


def test_reconstruction_error(digits):
    model = tiny_model(STYLE)
    images = digits[0][:20]
    out = reconstruction_error(model, images, num=20, batch=8)
    assert out["num_images"] == 20 and out["mse"] > 0 and np.isfinite(out["psnr"])
    x = next(image_batches(images, 20, 20, res=16))
    with torch.no_grad():
        mse = (model.generate(model.encode(x, 2), 2, noise="fixed") - x).square().mean().item()
    assert out["mse"] == pytest.approx(mse, rel=1e-4)


def test_latent_classification_mlp(digits):
    images, labels = digits
    out = latent_accuracy(tiny_model(MLP), images, labels, num=200)
    assert 0 <= out["knn_1nn"] <= 1 and 0 <= out["linear_svm"] <= 1 and out["n_test"] == 50


def test_cli_prints_one_json_line(tmp_path, capsys, digits):
    model = tiny_model(MLP)
    ckpt = tmp_path / "ckpt.pt"
    save_file({"config": {"model": dataclasses.asdict(MLP)}, "model": model.state_dict(),
               "ema": model.state_dict()}, ckpt)
    np.savez(tmp_path / "labelled.npz", images=digits[0][:120, 0].numpy(), labels=digits[1][:120].numpy())
    assert main(["classify", str(ckpt), "--data", str(tmp_path / "labelled.npz")]) == 0
    line, = capsys.readouterr().out.strip().splitlines()
    out = json.loads(line)
    assert out["metric"] == "latent_classification" and out["n_train"] + out["n_test"] == 120
