"""Metrics: FID against pytorch-fid (distance and Inception forward), LPIPS against its formula and the
lpips package (real heads), FID at snapshots, every metric end to end on tiny random networks, and the
CLI's one-line errors. The reference packages are optional: `pip install --no-deps lpips==0.1.4
pytorch-fid==0.3.0`; their tests skip without them."""

import dataclasses
import functools
import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alae_fast.data import load_builtin
from alae_fast.metrics import (LPIPSVGG, FeatureStats, InceptionV3Features, SnapshotFID, fid_from_stats,
                               fid_model_vs_data, frechet_distance, image_batches, installed_lpips_heads,
                               latent_accuracy, load_inception, load_lpips_heads, load_lpips_vgg, ppl_w,
                               reconstruction_error, snapshot_fid, stats_of)
from alae_fast.cli import main as alae_fast_cli
from alae_fast.cli import metrics_cmd as metrics_cli
from alae_fast.metrics import inception as ours
from alae_fast.metrics import perceptual
from alae_fast.metrics.classify import fit_and_score
from alae_fast.metrics.fid import quantize
from alae_fast.metrics.weights import load_into
from alae_fast.models import ModelConfig, build_model
from alae_fast.io.checkpoint import save_file

STYLE = ModelConfig("style", layer_count=3, startf=4, maxf=8, latent_size=8, mapping_layers=2, channels=1)
MLP = ModelConfig("mlp", latent_size=8, mapping_layers=2, channels=1, image_size=28, hidden=16)
TINY_VGG = (4, 4, "M", 5, 5, "M", 6, 6, 6, "M", 7, 7, 7, "M", 8, 8, 8)
TINY_TAPS = (4, 5, 6, 7, 8)
VGG16_TAPS = (64, 128, 256, 512, 512)

needs_lpips = pytest.mark.skipif(importlib.util.find_spec("lpips") is None,
                                 reason="pip install --no-deps lpips==0.1.4")
needs_pytorch_fid = pytest.mark.skipif(importlib.util.find_spec("pytorch_fid") is None,
                                       reason="pip install --no-deps pytorch-fid==0.3.0")


@pytest.fixture(scope="module")
def digits():
    return load_builtin("digits")


def tiny_model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


class TinyFeatures(nn.Module):
    """Stands in for Inception: images [N, 1 or 3, H, W] -> 6 features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, 2), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x.expand(-1, 3, -1, -1))


def random_heads(channels, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(1, c, 1, 1, generator=gen) for c in channels]


def stub_torchvision(monkeypatch, **models):
    """lpips and pytorch_fid import torchvision at module level; it is absent here (its wheels pull their
    own torch). Stand in a torchvision holding only what they touch (`models` as torchvision.models, and
    the Inception blocks pytorch-fid subclasses, built on our port with torchvision's signatures), and
    import them afresh."""
    class InceptionA(ours.InceptionA):
        def __init__(self, in_channels, pool_features):
            super().__init__(in_channels, pool_features, fid=False)

    class InceptionC(ours.InceptionC):
        def __init__(self, in_channels, channels_7x7):
            super().__init__(in_channels, channels_7x7, fid=False)

    class InceptionE(ours.InceptionE):
        def __init__(self, in_channels):
            super().__init__(in_channels, pool="avg")

    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.21.0"
    tv.models = types.ModuleType("torchvision.models")
    tv.models.__dict__.update(models)
    tv.models.inception = types.ModuleType("torchvision.models.inception")
    tv.models.inception.__dict__.update(InceptionA=InceptionA, InceptionC=InceptionC, InceptionE=InceptionE)
    tv.models.utils = types.ModuleType("torchvision.models.utils")
    tv.models.utils.load_state_dict_from_url = models.get("load_state_dict_from_url")
    tv.transforms = types.ModuleType("torchvision.transforms")
    for name in [n for n in sys.modules if n.split(".")[0] in ("torchvision", "lpips", "pytorch_fid")]:
        monkeypatch.delitem(sys.modules, name)
    for module in (tv, tv.models, tv.models.inception, tv.models.utils, tv.transforms):
        monkeypatch.setitem(sys.modules, module.__name__, module)


# ---------------------------------------------------------------- FID

def test_streaming_stats_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(301, 16)) * 3 + 5
    sa = FeatureStats(16)
    for lo, hi in [(0, 7), (7, 100), (100, 301)]:
        sa.update(torch.from_numpy(a[lo:hi]).float())
    mean, cov = sa.mean_cov()
    a32 = a.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mean, a32.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cov, np.cov(a32, rowvar=False), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="'feats' must be"):
        sa.update(torch.zeros(3, 5))


@needs_pytorch_fid
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")  # pytorch-fid's sqrtm call on SciPy >= 1.16
def test_frechet_distance_matches_pytorch_fid(monkeypatch):
    stub_torchvision(monkeypatch)
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    mix = rng.normal(size=(64, 64)) * 0.3
    base = rng.normal(size=(200, 64))
    cases = {"full rank": (rng.normal(size=(600, 64)) * 2 + 1, rng.normal(size=(500, 64)) @ mix + 0.5),
             "fewer samples than dims": (rng.normal(size=(40, 64)), rng.normal(size=(30, 64)) @ mix),
             "same spread, moved": (base, base + 0.25)}
    for name, (a, b) in cases.items():
        stats = [(x.mean(0), np.cov(x, rowvar=False)) for x in (a, b)]
        want = calculate_frechet_distance(*stats[0], *stats[1])
        assert frechet_distance(*stats[0], *stats[1]) == pytest.approx(want, rel=1e-7, abs=1e-9), name
    assert want == pytest.approx(64 * 0.25 ** 2, rel=1e-9)  # a pure shift: only ‖μ1 − μ2‖² remains
    assert frechet_distance(*stats[0], *stats[0]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(stats[0][0], stats[0][1][:3, :3], *stats[1])


def random_inception_state(seed=0) -> dict:
    """A pt_inception-layout state_dict (torchvision names, fc of 1008 classes) with He-initialised convs
    and random BatchNorm statistics, so activations neither vanish nor blow up through the blocks."""
    torch.manual_seed(seed)
    net = InceptionV3Features()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.8, 1.2)
            m.bias.data.normal_(0, 0.1)
    return {**net.state_dict(), "fc.weight": torch.randn(1008, 2048) * 0.01, "fc.bias": torch.zeros(1008)}


def test_inception_layout_and_loading(tmp_path):
    net = InceptionV3Features()
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 21_785_568  # torchvision's minus fc and AuxLogits
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var", "Mixed_5b.branch_pool.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7c.branch3x3dbl_3b.conv.weight"):
        assert key in sd
    path = tmp_path / "inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="tensors missing or misshapen"):
        load_inception(path)
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        load_inception(tmp_path / "missing.pth")


def test_load_into_names_the_first_bad_tensor_and_allows_missing_bn_counters():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    state = {f"m.{k}": torch.rand_like(v.float()) for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # as in files saved before torch 0.4.1
    load_into(net, {**state, "m.extra": torch.zeros(1)}, "m.", "weights", "w.pth", "a test file")
    assert all(torch.equal(net.state_dict()[k[2:]], v) for k, v in state.items())
    with pytest.raises(ValueError, match=r"w.pth: 1 of 6 tensors missing or misshapen \(first: m.1.bias\)"):
        load_into(net, {**state, "m.1.bias": torch.zeros(3)}, "m.", "weights", "w.pth", "a test file")


@needs_pytorch_fid
def test_inception_matches_pytorch_fid(monkeypatch, tmp_path):
    """pytorch-fid's InceptionV3 (its FID blocks' own forward, its stem and pools, its input scaling) loads
    a pt_inception-layout state_dict strictly; load_inception reads it from a file and gives the same
    2048 features."""
    state = random_inception_state()

    def inception_v3(num_classes, aux_logits, weights, init_weights):
        assert (num_classes, aux_logits, weights) == (1008, False, None)
        net = InceptionV3Features(fid_variant=False)
        net.fc = nn.Linear(2048, num_classes)
        return net

    stub_torchvision(monkeypatch, inception_v3=inception_v3, load_state_dict_from_url=lambda url, progress: state)
    from pytorch_fid.inception import InceptionV3

    reference = InceptionV3(resize_input=False).eval()  # strict load_state_dict of `state` inside
    x01 = torch.rand(1, 3, 139, 139, generator=torch.Generator().manual_seed(0))  # 3x3 maps at Mixed_7b/7c
    with torch.no_grad():
        want = reference(x01)[0].flatten(1)
    assert want.std() > 0.05  # features that carry signal
    torch.save(state, tmp_path / "pt_inception.pth")
    net = load_inception(tmp_path / "pt_inception.pth")
    net.resize = False
    with torch.no_grad():
        got = net(x01 * 2 - 1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_fid_pipeline_on_tiny_networks(digits):
    model = tiny_model(STYLE)
    real = digits[0][:40]
    out = fid_model_vs_data(model, TinyFeatures(), image_batches(real, 40, 16, res=16), num=40, batch=16, dim=6)
    assert out["num_real"] == out["num_fake"] == 40 and np.isfinite(out["value"]) and out["value"] >= 0


def test_quantize_matches_8bit_images():
    x = torch.linspace(-1.3, 1.3, 1001)
    q = quantize(x)
    levels = (q + 1) * 127.5
    assert q.min() == -1 and q.max() == 1 and torch.allclose(levels, levels.round(), atol=1e-4)
    assert (q - x.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6


def test_snapshot_fid(digits):
    model = tiny_model(STYLE)
    features = TinyFeatures()
    gen = torch.Generator()

    def generate(n):
        z = torch.randn(n, model.latent_size, generator=gen)
        with torch.no_grad():
            return model.generate(model.styles(z, 2, mixing_prob=0.0), 2, noise="fixed")

    gen.manual_seed(0)
    fid = SnapshotFID(features, digits[0][:50], num_images=50, batch=16, dim=6)
    value = fid(generate)
    # The same FID written out: 50 quantized generated images and the 50 real ones at 16², through the features.
    gen.manual_seed(0)
    fake = torch.cat([quantize(generate(n)) for n in (16, 16, 16, 2)])
    real = F.avg_pool2d(digits[0][:50].float() / 127.5 - 1, 2)
    want = fid_from_stats(stats_of([real], features, 6), stats_of([fake], features, 6))
    assert value == pytest.approx(want, rel=1e-6) and value > 0
    assert list(fid.real_stats) == [16]
    gen.manual_seed(0)
    assert fid(generate) == pytest.approx(value, rel=1e-9) and list(fid.real_stats) == [16]  # real stats kept
    with pytest.raises(ValueError, match=r"generate_fn\(16\) must return"):
        fid(lambda n: torch.zeros(n, 16, 16))
    with pytest.raises(ValueError, match="'num_images' >= 2"):
        SnapshotFID(features, digits[0], num_images=1)
    with pytest.raises(ValueError, match="fewer than num_images"):
        SnapshotFID(features, digits[0][:10], num_images=20)
    with pytest.raises(FileNotFoundError, match="Inception-v3 weights"):
        snapshot_fid(generate, digits[0], "missing-inception.pth", num_images=4)


# ---------------------------------------------------------------- LPIPS

def lpips_by_formula(trunk: nn.Sequential, heads, x, y):
    """LPIPS written out: scale the input, run the trunk's convs/ReLUs/pools layer by layer, take the five
    ReLU outputs before each pool and at the end, unit-normalise over channels, weight the squared
    difference by a 1x1 convolution with the head, average over space, sum over taps."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).to(x.dtype).view(1, 3, 1, 1)  # float32 constants, as LPIPS's
    scale = torch.tensor([0.458, 0.448, 0.450]).to(x.dtype).view(1, 3, 1, 1)
    taps = []
    for img in (x, y):
        h, feats = (img.expand(-1, 3, -1, -1) - shift) / scale, []
        for layer in trunk:
            if isinstance(layer, nn.MaxPool2d):
                feats.append(h)
            h = layer(h)
        taps.append(feats + [h])
    total = 0
    for fx, fy, w in zip(*taps, heads):
        fx = fx / (torch.sqrt((fx ** 2).sum(1, keepdim=True)) + 1e-10)
        fy = fy / (torch.sqrt((fy ** 2).sum(1, keepdim=True)) + 1e-10)
        total = total + F.conv2d((fx - fy) ** 2, w.to(x.dtype)).mean((2, 3)).flatten()
    return total


def test_lpips_matches_its_formula():
    heads = random_heads(TINY_TAPS)
    dist = LPIPSVGG(heads, TINY_VGG).double().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=gen, dtype=torch.float64) * 2 - 1
    y = (x + 0.3 * torch.randn(3, 3, 32, 32, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    d = dist(x, y)
    torch.testing.assert_close(d, lpips_by_formula(dist.features, heads, x, y), rtol=1e-10, atol=0)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(dist(y, x), d, rtol=1e-12, atol=0)
    assert dist(x, x).abs().max() == 0
    gray = x[:, :1]
    torch.testing.assert_close(dist(gray, y[:, :1]), dist(gray.expand(-1, 3, -1, -1), y[:, :1].expand(-1, 3, -1, -1)))


def test_lpips_refuses_what_is_not_lpips(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"heads\[1\] must have shape \[1, 5, 1, 1\]"):
        LPIPSVGG(random_heads((4, 6, 6, 7, 8)), TINY_VGG)
    with pytest.raises(ValueError, match="negative"):
        LPIPSVGG([h - 0.5 for h in random_heads(TINY_TAPS)], TINY_VGG)
    with pytest.raises(ValueError, match="5 tensors"):
        LPIPSVGG(random_heads(TINY_TAPS)[:4], TINY_VGG)
    monkeypatch.setattr(perceptual, "installed_lpips_heads", lambda net="vgg": None)
    with pytest.raises(ValueError, match="no LPIPS heads given and the lpips package is not installed"):
        load_lpips_heads()
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lack lin1.model.1.weight"):
        load_lpips_heads(tmp_path / "partial.pth")


@needs_lpips
def test_lpips_published_heads_load_without_importing_lpips():
    path = installed_lpips_heads()
    assert path is not None and path.parts[-3:] == ("weights", "v0.1", "vgg.pth")
    heads = load_lpips_heads()
    assert "lpips" not in sys.modules
    assert [tuple(h.shape) for h in heads] == [(1, c, 1, 1) for c in VGG16_TAPS]
    assert all((h >= 0).all() and h.max() > 0 for h in heads)
    net = LPIPSVGG(heads)
    assert [tuple(getattr(net, f"lin{k}").shape) for k in range(5)] == [(1, c, 1, 1) for c in VGG16_TAPS]


@needs_lpips
def test_lpips_matches_the_lpips_package(monkeypatch, tmp_path):
    """lpips.LPIPS(net='vgg') (its scaling layer, slices, normalisation, heads read by itself) on the same
    random VGG16 trunk that load_lpips_vgg reads from a torchvision-layout file."""
    torch.manual_seed(0)
    trunk = perceptual.vgg16_features()
    torch.save({**{f"features.{k}": v for k, v in trunk.state_dict().items()},
                "classifier.6.bias": torch.zeros(1000)}, tmp_path / "vgg16.pth")
    ours_net = load_lpips_vgg(tmp_path / "vgg16.pth").double()
    stub_torchvision(monkeypatch, vgg16=lambda pretrained: types.SimpleNamespace(features=trunk))
    import lpips

    reference = lpips.LPIPS(net="vgg", verbose=False).double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=gen, dtype=torch.float64) * 2 - 1
    y = (x + 0.2 * torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    with torch.no_grad():
        want = reference(x, y).flatten()
        got = ours_net(x, y)
    assert (want > 0).all()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)
    assert ours_net(x, x).abs().max() == 0


def test_ppl_on_tiny_networks():
    dist = LPIPSVGG(random_heads(TINY_TAPS), TINY_VGG).eval()
    out = ppl_w(tiny_model(STYLE), dist, num_samples=24, batch=12)
    assert out["metric"] == "ppl_w" and np.isfinite(out["value"]) and out["value"] > 0 and out["num_samples"] == 24


# ---------------------------------------------------------------- reconstruction, classification

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
    test = (images[1000:1060], labels[1000:1060])
    out = latent_accuracy(tiny_model(MLP), images, labels, num=200, test=test)  # fitted on one set, scored on another
    assert out["n_train"] == 200 and out["n_test"] == 60


def test_fit_and_score_separates_clustered_features():
    """Well separated classes score 1.0 with both classifiers; features carrying no label information do not."""
    gen = np.random.default_rng(0)
    train_y, test_y = np.arange(200) % 10, np.arange(100) % 10
    centres = 5 * np.eye(10, 16)
    train_x = centres[train_y] + gen.normal(size=(200, 16)) * 0.3
    test_x = centres[test_y] + gen.normal(size=(100, 16)) * 0.3
    out = fit_and_score(train_x, train_y, test_x, test_y)
    assert out == {"knn_1nn": 1.0, "linear_svm": 1.0, "n_train": 200, "n_test": 100}
    noise = fit_and_score(gen.normal(size=(200, 16)), train_y, gen.normal(size=(100, 16)), test_y)
    assert noise["knn_1nn"] < 0.4 and noise["linear_svm"] < 0.4


# ---------------------------------------------------------------- CLI

def save_checkpoint(cfg, path):
    model = tiny_model(cfg)
    save_file({"config": {"model": dataclasses.asdict(cfg)}, "model": model.state_dict(),
               "ema": model.state_dict()}, path)
    return path


def run_cli(argv, capsys):
    """(exit status, stdout lines, stderr lines) of `alae-fast metrics ARGV`."""
    try:
        code = alae_fast_cli(["metrics", *map(str, argv)])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def test_cli_prints_one_json_line(tmp_path, capsys, digits):
    ckpt = save_checkpoint(MLP, tmp_path / "ckpt.pt")
    np.savez(tmp_path / "labelled.npz", images=digits[0][:120, 0].numpy(), labels=digits[1][:120].numpy())
    code, out, err = run_cli(["classify", ckpt, "--data", tmp_path / "labelled.npz"], capsys)
    assert code == 0 and not err and len(out) == 1
    result = json.loads(out[0])
    assert result["metric"] == "latent_classification" and result["n_train"] + result["n_test"] == 120
    assert result["checkpoint"] == str(ckpt)


def test_cli_classify_fits_on_data_and_scores_test_data(tmp_path, capsys, digits):
    ckpt = save_checkpoint(MLP, tmp_path / "ckpt.pt")
    np.savez(tmp_path / "train.npz", images=digits[0][:100, 0].numpy(), labels=digits[1][:100].numpy())
    np.savez(tmp_path / "test.npz", images=digits[0][100:140, 0].numpy(), labels=digits[1][100:140].numpy())
    code, out, _ = run_cli(["classify", ckpt, "--data", tmp_path / "train.npz", "--test-data", tmp_path / "test.npz"],
                           capsys)
    assert code == 0 and (json.loads(out[0])["n_train"], json.loads(out[0])["n_test"]) == (100, 40)
    code, _, err = run_cli(["classify", ckpt, "--test-data", tmp_path / "missing.npz"], capsys)
    assert code == 2 and err[-1].startswith("alae-fast metrics classify: error: --test-data:"), err


def test_cli_names_the_checkpoint_it_fell_back_to(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    save_checkpoint(MLP, run_dir / "checkpoints" / "ckpt-000000000100.pt")
    (run_dir / "checkpoints" / "ckpt-000000000200.pt").write_bytes(b"truncated")
    code, out, err = run_cli(["classify", run_dir, "--num", 120], capsys)
    assert code == 0 and len(out) == 1 and json.loads(out[0])["checkpoint"].endswith("ckpt-000000000100.pt")
    assert len(err) == 1 and "1 unreadable checkpoint(s) skipped" in err[0]


def test_cli_fid_and_recon_json(tmp_path, capsys, monkeypatch):
    """The fid and recon subcommands end to end on builtin:digits at lod 1 (8²), Inception replaced by
    TinyFeatures (its real forward is tested above)."""
    ckpt = save_checkpoint(STYLE, tmp_path / "style.pt")
    monkeypatch.setattr(metrics_cli, "load_inception", lambda path, fid_variant: TinyFeatures())
    monkeypatch.setattr(metrics_cli, "fid_model_vs_data", functools.partial(fid_model_vs_data, dim=6))
    common = [ckpt, "--data", "builtin:digits", "--num", 20, "--batch", 8, "--lod", 1, "--device", "cpu"]
    code, out, err = run_cli(["fid", *common, "--inception", "unused.pth"], capsys)
    assert code == 0 and len(out) == 1, err
    result = json.loads(out[0])
    assert result["metric"] == "fid" and result["lod"] == 1 and result["num_real"] == result["num_fake"] == 20
    code, out, err = run_cli(["recon", *common], capsys)
    assert code == 0 and len(out) == 1, err
    assert json.loads(out[0])["num_images"] == 20


@needs_lpips
def test_cli_ppl_json(tmp_path, capsys):
    ckpt = save_checkpoint(STYLE, tmp_path / "style.pt")
    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in perceptual.vgg16_features().state_dict().items()},
               tmp_path / "vgg16.pth")
    code, out, err = run_cli(["ppl", ckpt, "--vgg", tmp_path / "vgg16.pth", "--num", 8, "--batch", 4], capsys)
    assert code == 0 and len(out) == 1, err
    result = json.loads(out[0])
    assert result["metric"] == "ppl_w" and result["num_samples"] == 8 and result["value"] > 0


@pytest.fixture
def bad_files(tmp_path, monkeypatch):
    """Files for the CLI error cases; no lpips heads are found unless given."""
    monkeypatch.setattr(perceptual, "installed_lpips_heads", lambda net="vgg": None)
    torch.save(nn.Linear(2, 2), tmp_path / "pickled_module.pt")  # refused by weights-only loading
    torch.save({"model": {}}, tmp_path / "no_config.pt")
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "wrong_layout.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(VGG16_TAPS)},
               tmp_path / "heads.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    save_checkpoint(STYLE, tmp_path / "style.pt")
    return tmp_path


CLI_MISTAKES = {
    "inception missing": (["fid", "{d}/style.pt", "--data", "builtin:digits", "--inception", "{d}/missing.pth"],
                          "--inception", "does not exist"),
    "inception pickles a module": (["fid", "{d}/style.pt", "--data", "builtin:digits", "--inception",
                                    "{d}/pickled_module.pt"], "--inception", "not a readable tensor state_dict"),
    "inception not torch": (["fid", "{d}/style.pt", "--data", "builtin:digits", "--inception", "{d}/text.pth"],
                            "--inception", "not a readable tensor state_dict"),
    "inception wrong layout": (["fid", "{d}/style.pt", "--data", "builtin:digits", "--inception",
                                "{d}/wrong_layout.pth"], "--inception", "missing or misshapen"),
    "inception a directory": (["fid", "{d}/style.pt", "--data", "builtin:digits", "--inception", "{d}"],
                              "--inception", "is a directory"),
    "checkpoint missing": (["recon", "{d}/none.pt", "--data", "builtin:digits"], "CHECKPOINT", "does not exist"),
    "checkpoint pickles a module": (["recon", "{d}/pickled_module.pt", "--data", "builtin:digits"], "CHECKPOINT",
                                    "objects other than tensors"),
    "checkpoint without config": (["recon", "{d}/no_config.pt", "--data", "builtin:digits"], "CHECKPOINT",
                                  "not a usable alae_fast checkpoint"),
    "empty checkpoint directory": (["recon", "{d}", "--data", "builtin:digits"], "CHECKPOINT",
                                   "no checkpoint (ckpt-*.pt) found"),
    "lod too high": (["recon", "{d}/style.pt", "--data", "builtin:digits", "--lod", "9"], "--lod", "levels are 0..2"),
    "data missing": (["recon", "{d}/style.pt", "--data", "{d}/no-data"], "--data", "does not exist"),
    "unknown builtin": (["recon", "{d}/style.pt", "--data", "builtin:nope"], "--data", "unknown dataset"),
    "labelled data missing": (["classify", "{d}/style.pt", "--data", "{d}/none.npz"], "--data", ".npz"),
    "num zero": (["recon", "{d}/style.pt", "--data", "builtin:digits", "--num", "0"], "--num", "integer >= 1"),
    "batch not a number": (["recon", "{d}/style.pt", "--data", "builtin:digits", "--batch", "x"], "--batch", ">= 1"),
    "unknown metric": (["fidd", "{d}/style.pt"], "argument metric", "invalid choice"),
    "no cuda": (["recon", "{d}/style.pt", "--data", "builtin:digits", "--device", "cuda"], "--device", "CUDA"),
    "bad device": (["recon", "{d}/style.pt", "--data", "builtin:digits", "--device", "gpu0"], "--device", "gpu0"),
    "no lpips heads": (["ppl", "{d}/style.pt", "--vgg", "{d}/vgg.pth"], "--lpips-lin", "pip install --no-deps lpips"),
    "heads missing": (["ppl", "{d}/style.pt", "--vgg", "{d}/vgg.pth", "--lpips-lin", "{d}/none.pth"], "--lpips-lin",
                      "does not exist"),
    "heads misshapen": (["ppl", "{d}/style.pt", "--vgg", "{d}/vgg.pth", "--lpips-lin", "{d}/wrong_layout.pth"],
                        "--lpips-lin", "lack lin0"),
    "vgg missing": (["ppl", "{d}/style.pt", "--vgg", "{d}/vgg.pth", "--lpips-lin", "{d}/heads.pth"], "--vgg",
                    "does not exist"),
    "vgg wrong layout": (["ppl", "{d}/style.pt", "--vgg", "{d}/heads.pth", "--lpips-lin", "{d}/heads.pth"], "--vgg",
                         "features.0.weight"),
}


@pytest.mark.parametrize("case", list(CLI_MISTAKES))
def test_cli_mistakes_end_in_one_line(case, bad_files, capsys):
    argv, argument, reason = CLI_MISTAKES[case]
    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    code, out, err = run_cli([a.replace("{d}", str(bad_files)) for a in argv], capsys)
    assert code == 2 and not out
    assert len(err) == 1, err
    assert argument in err[0] and reason in err[0], err[0]
    assert "Traceback" not in err[0] and "weights_only" not in err[0].replace("weights-only", "")


def test_the_issue_case_through_alae_fast_cli(bad_files, capsys):
    from alae_fast.cli import main as alae_fast_main

    code = alae_fast_main(["metrics", "fid", str(bad_files / "style.pt"), "--data", "builtin:digits",
                           "--inception", "/missing.pth"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("alae-fast metrics fid: error: --inception: ")
