import math

import pytest
import torch

from alae_fast.data import TensorStream
from alae_fast.models import ModelConfig, build_model
from alae_fast.train import Schedule, Trainer, train
from alae_fast.train.losses import r1_penalty
from _train_utils import deterministic_mode, one_thread, tiny_config, tiny_images  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
GROUPS = ("mapping_f", "generator", "encoder", "mapping_d")


def make_trainer(kind="style", tmp_path=None, **kw):
    train_kw = {k: kw.pop(k) for k in list(kw) if k not in ("precision", "deterministic")}
    cfg = tiny_config(kind, **train_kw)
    return Trainer(cfg, tmp_path, stream=TensorStream(tiny_images()), **kw)


def snapshot(model):
    return {g: [p.detach().clone() for p in getattr(model, g).parameters()] for g in GROUPS}


def changed(before, model):
    return {g for g in GROUPS
            if any(not torch.equal(a, b) for a, b in zip(before[g], getattr(model, g).parameters()))}


@pytest.mark.parametrize("kind", ["style", "mlp"])
def test_each_step_updates_only_its_networks(kind):
    tr = make_trainer(kind)
    phase = tr.phase()
    tr._enter_lod(phase)
    real = tr._real_batch(4, phase)
    before = snapshot(tr.model)
    stats = tr.d_step(real, phase)
    assert changed(before, tr.model) == {"encoder", "mapping_d"}
    before = snapshot(tr.model)
    stats.update(tr.g_step(4, phase))
    assert changed(before, tr.model) == {"mapping_f", "generator"}
    before = snapshot(tr.model)
    stats.update(tr.ae_step(4, phase))
    assert changed(before, tr.model) == {"mapping_f", "generator", "encoder"}
    assert set(stats) == {"loss_d", "r1", "loss_g", "loss_ae"}
    assert all(math.isfinite(v.item()) for v in stats.values())
    assert all(p.requires_grad for p in tr.model.parameters())  # the G step's freeze is undone


@pytest.mark.parametrize("scaled", [False, True])
def test_r1_matches_plain_autograd(scaled):
    torch.manual_seed(0)
    model = build_model(tiny_config().model)
    ref = build_model(ModelConfig(**{**tiny_config().model.__dict__, "impl": "ref"}))
    ref.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 8, 8)
    # The trainer's penalty (fused ops; with fp16-style loss scaling when `scaled`).
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 14, enabled=scaled)
    xa = x.clone().requires_grad_(True)
    r1 = r1_penalty(model.discriminate(model.encode(xa, 1, 0.5)), xa, scaler)
    grads = torch.autograd.grad(r1, list(model.encoder.parameters()), allow_unused=True)
    # Reference: plain double backward through the pure-PyTorch model.
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref.discriminate(ref.encode(xr, 1, 0.5)).sum(), xr, create_graph=True)
    r1_ref = g.pow(2).sum(dim=[1, 2, 3]).mean()
    grads_ref = torch.autograd.grad(r1_ref, list(ref.encoder.parameters()), allow_unused=True)
    torch.testing.assert_close(r1, r1_ref, rtol=1e-4, atol=1e-6)
    assert sum(g is not None for g in grads) > 4
    for a, b in zip(grads, grads_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_schedule_lod_blend_batch_lr():
    s = Schedule(3, 100, [8, 4], [0.1, 0.2, 0.3])
    assert [s.lod(i) for i in (0, 99, 100, 250, 10_000)] == [0, 0, 1, 2, 2]
    assert s.blend(0) == 1.0 and s.blend(50) == 1.0
    assert s.blend(100) == pytest.approx(0.0) and s.blend(125) == pytest.approx(0.5)
    assert s.blend(110) == pytest.approx(math.sin(math.pi * 0.2 - math.pi / 2) / 2 + 0.5)
    assert s.blend(150) == 1.0 and s.blend(175) == 1.0
    assert s.at(250).batch == 4 and s.at(250).lr == 0.3


def _run(trainer, steps):
    for _ in range(steps):
        trainer.step()


def test_resume_is_bit_exact(tmp_path, deterministic_mode):  # noqa: F811
    full = make_trainer(deterministic=True)
    _run(full, 6)  # crosses into lod 1 (16 images per lod, batch 4) and its transition

    first = make_trainer(tmp_path=tmp_path, deterministic=True)
    _run(first, 3)
    first.save_checkpoint()
    del first  # "kill": everything below comes from the checkpoint
    torch.manual_seed(1234)  # a fresh process would have other RNG state
    resumed = make_trainer(tmp_path=tmp_path, deterministic=True)
    resumed.resume(tmp_path / "checkpoints")
    _run(resumed, 3)

    assert resumed.images == full.images and resumed.lod == full.lod == 1
    for name in ("model", "ema"):
        a, b = getattr(full, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    sa, sb = full.opt_ed.state_dict()["state"], resumed.opt_ed.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


def test_bf16_training_lowers_ae_loss():
    tr = make_trainer(precision="bf16", kimg_per_lod=10, total_kimg=10, lr_per_lod=[0.003], batch_per_lod=[8])
    ae = [tr.step()["loss_ae"].item() for _ in range(30)]
    assert all(math.isfinite(v) for v in ae)
    assert sum(ae[-5:]) < 0.7 * sum(ae[:5]), ae


def test_train_loop_writes_outputs(tmp_path):
    tr = make_trainer(tmp_path=tmp_path)
    summary = train(tr, progress=False, tensorboard=False)
    assert summary["kimg"] == pytest.approx(0.064)
    for name in ("samples.png", "reconstructions.png", "mixing.png", "losses.png", "losses.csv", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert len(list((tmp_path / "grids").glob("samples-*.png"))) == 2
    assert len(list((tmp_path / "checkpoints").glob("ckpt-*.pt"))) == 2  # mid-run + final
