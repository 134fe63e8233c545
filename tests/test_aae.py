"""The Adversarial Autoencoder baseline: model shapes, the two phases of AAEStep, a short run through the
Trainer and the loop, exact resume, and the regularisation phase pulling q(z) towards the prior."""

import json

import pytest
import torch

from alae_fast.cli import main as cli_main
from alae_fast.data import TensorStream
from alae_fast.models import AAE, ModelConfig, build_model
from alae_fast.train import RunConfig, TrainConfig, Trainer, load_config, train
from alae_fast.train.aae_step import AAEStep
from alae_fast.train.step import StepOptions
from _train_utils import deterministic_mode, one_thread, tiny_images  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ModelConfig("aae", latent_size=4, image_size=8, hidden=32)


def tiny_trainer(tmp_path=None, deterministic=False, **train):
    values = dict(dataset="unused", epochs=2.0, epochs_per_lod=2.0, batch_per_lod=[8], lr_per_lod=[0.002],
                  log_kimg=0.016, grid_kimg=0.032, snapshot_kimg=0.032, grid_size=2)
    values.update(train)
    cfg = RunConfig(model=TINY, train=TrainConfig(**values), name="tiny-aae")
    images = torch.nn.functional.avg_pool2d(tiny_images().float(), 2).round().to(torch.uint8)  # [32, 1, 8, 8]
    return Trainer(cfg, tmp_path, stream=TensorStream(images), deterministic=deterministic)


def test_shapes_and_interface():
    model = build_model(TINY)
    assert isinstance(model, AAE) and model.num_ws == 1 and model.max_lod == 0 and model.resolution() == 8
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    z = model.encode(x)
    assert z.shape == (5, 4) and model.generate(z).shape == (5, 1, 8, 8)
    assert model.discriminate(z).shape == (5,)
    prior = torch.randn(5, 4)
    assert torch.equal(model.styles(prior, 0)[:, 0], prior)  # no mapping: G decodes prior draws as they are
    with pytest.raises(ValueError, match=r"must have shape \[N, 1, 8, 8\]"):
        model.encode(torch.zeros(2, 1, 7, 7))
    with pytest.raises(ValueError, match="must be 'aae'"):
        AAE(ModelConfig("mlp"))


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_each_phase_updates_only_its_networks():
    model = build_model(TINY)
    step = AAEStep(model, StepOptions(), device="cpu")
    step.begin_lod(0, 0.01)
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    before = {name: _params(getattr(model, name)) for name in ("encoder", "generator", "mapping_d")}
    calls = []
    for name in ("opt_ae", "opt_d", "opt_e"):  # record what each optimizer steps
        opt = getattr(step, name)
        opt.step = (lambda original, name: lambda *a, **k: (calls.append(name), original(*a, **k)))(opt.step, name)
    stats = step(x, 0, 1.0)
    assert calls == ["opt_ae", "opt_d", "opt_e"] and stats["skipped"] == 0
    assert {"loss_ae", "loss_d", "loss_g"} <= set(stats)
    assert {id(p) for p in step.opt_ae.param_groups[0]["params"]} == \
        {id(p) for m in (model.encoder, model.generator) for p in m.parameters()}
    assert {id(p) for p in step.opt_d.param_groups[0]["params"]} == {id(p) for p in model.mapping_d.parameters()}
    assert {id(p) for p in step.opt_e.param_groups[0]["params"]} == {id(p) for p in model.encoder.parameters()}
    for name, old in before.items():
        assert any(not torch.equal(a, b) for a, b in zip(old, getattr(model, name).parameters())), name


def test_regularisation_pulls_the_codes_towards_the_prior():
    """Codes start far from N(0, I) (a shifted, shrunk encoder output); 200 AAE iterations on a toy
    bring their aggregated mean and std close to the prior's, which reconstruction alone does not do."""
    x = torch.rand(256, 1, 8, 8) * 2 - 1

    def run(adversarial: bool):
        torch.manual_seed(0)
        model = build_model(TINY)
        with torch.no_grad():
            last = model.encoder.blocks[-1]
            last.weight.mul_(0.1)
            last.bias.fill_(3.0)  # lrmul 1: the bias is used as stored
        start = model.encode(x).detach()
        step = AAEStep(model, StepOptions(adam_betas=(0.5, 0.99)), device="cpu", seed=0)
        step.begin_lod(0, 0.002)
        if not adversarial:
            step.opt_e.param_groups[0]["lr"] = 0.0
        for i in range(200):
            step(x[(i * 32) % 256:][:32], 0, 1.0)
        return start, model.encode(x).detach()

    def gap(z):  # distance of the aggregated posterior's moments from N(0, I)
        return float(z.mean(0).square().mean() + (z.std(0) - 1).square().mean())

    start, regularised = run(adversarial=True)
    _, unregularised = run(adversarial=False)
    assert gap(start) > 2.0
    assert gap(regularised) < 0.2 * gap(start), (gap(start), gap(regularised))
    assert gap(regularised) < 0.3 * gap(unregularised), (gap(regularised), gap(unregularised))


def test_short_run_writes_grids_and_checkpoints(tmp_path):
    tr = tiny_trainer(tmp_path)
    summary = train(tr, progress=False, tensorboard=False, text=lambda line: None)
    assert summary["kimg"] == pytest.approx(0.064) and summary["skipped_updates"] == 0
    for name in ("samples.png", "reconstructions.png", "losses.csv", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "mixing.png").exists()  # one code per image: nothing to mix
    assert len(list((tmp_path / "checkpoints").glob("ckpt-*.pt"))) == 2
    assert set(summary["final_losses"]) == {"loss_d", "loss_g", "loss_ae"}


def test_resume_is_bit_exact(tmp_path, deterministic_mode):  # noqa: F811
    full = tiny_trainer(deterministic=True)
    for _ in range(6):
        full.step()
    first = tiny_trainer(tmp_path, deterministic=True)
    for _ in range(4):
        first.step()
    first.save_checkpoint()
    del first
    torch.manual_seed(1234)
    resumed = tiny_trainer(tmp_path, deterministic=True)
    resumed.resume(tmp_path / "checkpoints")
    for _ in range(2):
        resumed.step()
    assert resumed.images == full.images
    for name in ("model", "ema"):
        a, b = getattr(full, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    for opt in ("opt_ae", "opt_d", "opt_e"):
        sa, sb = getattr(full.step_unit, opt).state_dict(), getattr(resumed.step_unit, opt).state_dict()
        assert all(torch.equal(sa["state"][k]["exp_avg"], sb["state"][k]["exp_avg"]) for k in sa["state"]), opt


def test_mnist_configs_compare_like_for_like():
    aae, alae = load_config("mnist-aae"), load_config("mnist-mlp")
    assert aae.model.kind == "aae" and alae.model.kind == "mlp"
    for key in ("latent_size", "image_size", "hidden", "channels"):
        assert getattr(aae.model, key) == getattr(alae.model, key), key
    for key in ("dataset", "epochs", "batch_per_lod", "lr_per_lod"):
        assert getattr(aae.train, key) == getattr(alae.train, key), key
    assert alae.train.dataset == "builtin:mnist28-train"


def test_cli_trains_mnist_aae_and_scores_it(tmp_path, capsys):
    """`alae-fast train --config mnist-aae` end to end on a tiny subset (32x32 digits, resized to 28x28), narrowed
    to 32 hidden units; then `alae-fast metrics classify` on the run."""
    out = tmp_path / "run"
    argv = ["train", "--config", "mnist-aae", "--data", "builtin:digits", "--kimg", "0.064", "--batch", "16",
            "--set", "model.hidden=32", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert cli_main(argv) == 0
    assert (out / "reconstructions.png").is_file() and (out / "samples.png").is_file()
    capsys.readouterr()
    assert cli_main(["metrics", "classify", str(out), "--data", "builtin:digits", "--num", "200",
                     "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_train"] == 150 and 0 < result["knn_1nn"] <= 1
