import math

import pytest
import torch

from alae_fast.data import TensorStream
from alae_fast.models import build_model
from alae_fast.ops import use_impl
from alae_fast.train import NonFiniteTraining, Schedule, Trainer, train
from alae_fast.io.checkpoint import list_checkpoints, load_checkpoint
from alae_fast.train.logging import read_csv
from alae_fast.train.loop import LoopTrainer
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
    unit = tr.step_unit
    before = snapshot(tr.model)
    stats = unit.d_step(real, phase.lod, phase.blend)
    assert changed(before, tr.model) == {"encoder", "mapping_d"}
    before = snapshot(tr.model)
    stats.update(unit.g_step(4, phase.lod, phase.blend))
    assert changed(before, tr.model) == {"mapping_f", "generator"}
    before = snapshot(tr.model)
    stats.update(unit.ae_step(4, phase.lod, phase.blend))
    assert changed(before, tr.model) == {"mapping_f", "generator", "encoder"}
    assert set(stats) == {"loss_d", "r1", "loss_g", "loss_ae", "skipped"} and stats["skipped"] == 0
    assert all(math.isfinite(float(v)) for v in stats.values())
    assert all(p.requires_grad for p in tr.model.parameters())  # the G step's freeze is undone


def test_w_avg_moves_on_every_generate_call():
    """The original rule: w_avg moves towards the batch mean of F(z) in the D, G and AE steps alike."""
    tr = make_trainer()
    phase = tr.phase()
    tr._enter_lod(phase)
    unit, real = tr.step_unit, tr._real_batch(4, phase)
    for call in (lambda: unit.d_step(real, 0, 1.0), lambda: unit.g_step(4, 0, 1.0), lambda: unit.ae_step(4, 0, 1.0)):
        before = tr.model.w_avg.clone()
        call()
        assert not torch.equal(before, tr.model.w_avg)


def test_lazy_r1_every_k_steps_scaled_by_k():
    tr = make_trainer(r1_interval=3)
    seen = [("r1" in tr.step()) for _ in range(6)]
    assert seen == [True, False, False, True, False, False]


@pytest.mark.parametrize("scaled", [False, True])
def test_r1_matches_plain_autograd(scaled):
    torch.manual_seed(0)
    model = build_model(tiny_config().model)
    ref = build_model(tiny_config().model)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 8, 8)
    # The trainer's penalty (fused ops; with fp16-style loss scaling when `scaled`).
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 14, enabled=scaled)
    xa = x.clone().requires_grad_(True)
    r1 = r1_penalty(model.discriminate(model.encode(xa, 1, 0.5)), xa, scaler)
    grads = torch.autograd.grad(r1, list(model.encoder.parameters()), allow_unused=True)
    # Reference: plain double backward through the pure-PyTorch model.
    xr = x.clone().requires_grad_(True)
    with use_impl("ref"):
        ref_logits = ref.discriminate(ref.encode(xr, 1, 0.5))
    (g,) = torch.autograd.grad(ref_logits.sum(), xr, create_graph=True)
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


@pytest.mark.parametrize("stop", [3, 4], ids=["mid-level", "at-level-boundary"])
def test_resume_is_bit_exact(tmp_path, deterministic_mode, stop):  # noqa: F811
    """From any checkpoint, the level boundary included (16 images per lod, batch 4: step 4 ends lod 0),
    the resumed run equals the uninterrupted one: weights, EMA, Adam moments and learning rate."""
    full = make_trainer(deterministic=True, lr_per_lod=[0.002, 0.001])
    _run(full, 7)  # crosses into lod 1 and its transition

    first = make_trainer(tmp_path=tmp_path, deterministic=True, lr_per_lod=[0.002, 0.001])
    _run(first, stop)
    first.save_checkpoint()
    del first  # "kill": everything below comes from the checkpoint
    torch.manual_seed(1234)  # a fresh process would have other RNG state
    resumed = make_trainer(tmp_path=tmp_path, deterministic=True, lr_per_lod=[0.002, 0.001])
    resumed.resume(tmp_path / "checkpoints")
    _run(resumed, 7 - stop)

    assert resumed.images == full.images and resumed.lod == full.lod == 1
    for name in ("model", "ema"):
        a, b = getattr(full, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    for opt in ("opt_ed", "opt_fg"):
        sa, sb = getattr(full.step_unit, opt).state_dict(), getattr(resumed.step_unit, opt).state_dict()
        assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"] == 0.001
        assert all(torch.equal(sa["state"][k]["exp_avg_sq"], sb["state"][k]["exp_avg_sq"]) for k in sa["state"])


def test_resume_refuses_another_model_config(tmp_path):
    tr = make_trainer(tmp_path=tmp_path)
    _run(tr, 1)
    tr.save_checkpoint()
    cfg = tiny_config()
    cfg.model.latent_size = 16
    other = Trainer(cfg, tmp_path, stream=TensorStream(tiny_images()))
    with pytest.raises(ValueError, match=r"model\.latent_size=8 there, 16 here"):
        other.resume(tmp_path / "checkpoints")


def _poison_after(trainer, good_steps: int):
    """Make every D/E gradient NaN after `good_steps` iterations (a numerically exploding run)."""
    calls = {"n": 0}
    original = trainer.step_unit.d_step

    def d_step(real, lod, blend):
        calls["n"] += 1
        if calls["n"] > good_steps:
            real = real * float("nan")
        return original(real, lod, blend)

    trainer.step_unit.d_step = d_step


def test_non_finite_updates_are_skipped_counted_and_logged(tmp_path):
    tr = make_trainer(tmp_path=tmp_path, max_bad_steps=100)
    _poison_after(tr, 2)
    d_before = None
    for i in range(5):
        if i == 2:
            d_before = [p.detach().clone() for p in tr.model.mapping_d.parameters()]  # only the D step moves D
        stats = tr.step()
    assert stats["skipped"] == 1 and tr.skipped_total == 3 and tr.bad_in_a_row == 3
    assert all(torch.equal(a, b) for a, b in zip(d_before, tr.model.mapping_d.parameters()))
    assert torch.isfinite(tr.model.w_avg).all()
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def test_guard_stops_after_consecutive_bad_steps_and_keeps_the_checkpoint(tmp_path):
    tr = make_trainer(tmp_path=tmp_path, max_bad_steps=3, snapshot_kimg=0.008)
    _poison_after(tr, 2)
    lines = []
    with pytest.raises(NonFiniteTraining, match="3 consecutive iterations had non-finite"):
        train(tr, progress=False, tensorboard=False, text=lines.append)
    (last,) = list_checkpoints(tmp_path / "checkpoints")[-1:]
    assert last.name == "ckpt-000000000008.pt"  # the last good one; nothing written after the blow-up
    state = load_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    rows = read_csv(tmp_path / "losses.csv")  # the skipped updates show in the log, on disk and on the console
    assert [(r["kimg"], r["skipped"]) for r in rows] == [(0.008, 0), (0.016, 2)]
    assert any("skipped 2" in line for line in lines), lines


def test_exploding_loss_warns_in_the_log(tmp_path):
    tr = make_trainer(tmp_path=tmp_path, lr_per_lod=[3.0], total_kimg=0.128, kimg_per_lod=1.0,
                      max_bad_steps=1000)
    lines = []
    train(tr, progress=False, tensorboard=False, text=lines.append)
    assert any("grew to" in line and "diverging" in line for line in lines), lines


def test_bf16_training_lowers_ae_loss_as_fp32_does():
    """60 steps: the latent AE loss falls (the last 20 average below 0.75x the first 5; about 0.63 measured)
    and bf16 ends within 10% of fp32 on the same seed. A window this long averages out the step-to-step noise."""
    tail = {}
    for precision in ("bf16", "fp32"):
        torch.manual_seed(0)
        tr = make_trainer(precision=precision, kimg_per_lod=10, total_kimg=10, lr_per_lod=[0.003], batch_per_lod=[8])
        ae = [tr.step()["loss_ae"].item() for _ in range(60)]
        assert all(math.isfinite(v) for v in ae), (precision, ae)
        tail[precision] = sum(ae[-20:]) / 20
        assert tail[precision] < 0.75 * sum(ae[:5]) / 5, (precision, ae)
    assert abs(tail["bf16"] - tail["fp32"]) < 0.1 * tail["fp32"], tail


def test_train_loop_writes_outputs(tmp_path):
    tr = make_trainer(tmp_path=tmp_path)
    assert isinstance(tr, LoopTrainer)  # every member the loop uses is there
    summary = train(tr, progress=False, tensorboard=False)
    assert summary["kimg"] == pytest.approx(0.064)
    for name in ("samples.png", "reconstructions.png", "mixing.png", "losses.png", "losses.csv", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert len(list((tmp_path / "grids").glob("samples-*.png"))) == 2
    assert len(list((tmp_path / "checkpoints").glob("ckpt-*.pt"))) == 2  # mid-run + final


def test_data_is_checked_against_the_config_before_the_first_step():
    rgb = tiny_images().expand(-1, 3, -1, -1).contiguous()
    with pytest.raises(ValueError, match=r"has 3 channel\(s\) but config 'tiny-style' has model.channels = 1"):
        Trainer(tiny_config(), stream=TensorStream(rgb))
    small = torch.nn.functional.avg_pool2d(tiny_images().float(), 4).to(torch.uint8)  # 4x4; the config trains up to 8x8
    with pytest.raises(ValueError, match=r"is 4x4 but config 'tiny-style' trains up to 8x8 \(lod 1\).*--kimg"):
        Trainer(tiny_config(), stream=TensorStream(small))
    Trainer(tiny_config(total_kimg=0.008), stream=TensorStream(small))  # a run that stays at 4x4 is fine


@pytest.mark.parametrize("impl", ["ref", "auto"])
def test_compiled_steps_match_eager(impl):
    """compile=True runs the generation, G and AE forwards as one fullgraph graph each (no graph break,
    proven to have run compiled) and trains as the eager step does."""
    from alae_fast.train.step import ALAEStep, StepOptions

    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny_config().model)
        step = ALAEStep(model, StepOptions(compile=compiled, compile_backend="aot_eager"), device="cpu")
        step.begin_lod(1, 0.002)
        real = torch.randn(4, 1, 8, 8)
        with use_impl(impl):
            stats = [step(real, 1, 1.0) for _ in range(2)]
        runs.append((stats, [p.detach().clone() for p in model.parameters()]))
    (eager_stats, eager_params), (comp_stats, comp_params) = runs
    for a, b in zip(eager_stats, comp_stats):
        for k in a:
            torch.testing.assert_close(torch.as_tensor(a[k]).float(), torch.as_tensor(b[k]).float(),
                                       rtol=1e-4, atol=1e-5)
    for a, b in zip(eager_params, comp_params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fid_at_snapshots_leaves_training_untouched(tmp_path, monkeypatch):
    """With fid_inception set, each snapshot appends the EMA's FID to metrics.jsonl; the training run itself
    (weights, logged losses) is the same as without it."""
    import json

    from alae_fast.metrics import fid as fid_module
    from test_metrics import TinyFeatures

    monkeypatch.setattr(fid_module, "load_inception", lambda path, *a, **k: TinyFeatures())
    runs = {}
    for name, inception in (("plain", None), ("fid", "tiny-inception.pth")):
        torch.manual_seed(0)
        cfg = tiny_config(snapshot_kimg=0.016, fid_inception=inception, fid_images=8, dataset="builtin:digits")
        tr = Trainer(cfg, tmp_path / name, stream=TensorStream(tiny_images()))
        train(tr, progress=False, tensorboard=False, text=lambda line: None)
        runs[name] = tr
    lines = [json.loads(line) for line in (tmp_path / "fid" / "metrics.jsonl").read_text().splitlines()]
    assert [row["kimg"] for row in lines] == [0.016, 0.032, 0.048] and all(row["fid"] >= 0 for row in lines)
    for a, b in zip(runs["plain"].model.parameters(), runs["fid"].model.parameters()):
        assert torch.equal(a, b)
