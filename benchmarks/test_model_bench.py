"""Whole-model throughput: the shipped training step (alae_fast.train.step.ALAEStep, the code the
Trainer runs) per lod, and inference.

Training: every lod of celeba-hq256 and the 512² and 1024² lods of ffhq, at the per-GPU batch of the
official schedule (benchmarks/shapes.py), GPU only, timed at the stable phase of each level (blend 1;
the blend ops of a transition cost next to nothing). Every variant uses fused Adam and cudnn.benchmark on
CUDA, as the trainer does:
  fp32-eager          the official setting: fp32, eager, reference ops
  bf16-eager          bf16 autocast, eager, reference ops
  bf16-compile        bf16 autocast, reference ops; the step's generation, G and AE forwards under
                      torch.compile(fullgraph=True), compiled once per lod. The D step stays eager:
                      AOTAutograd cannot differentiate its compiled backward again for R1.
  bf16-fused-<b>      bf16 autocast, eager, the fused kernels of backend b
report.py projects the full ffhq schedule's wall time from these numbers.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from alae_fast.models import ModelConfig, build_model
from alae_fast.ops import use_impl
from alae_fast.train.step import ALAEStep, StepOptions
from benchmarks import shapes, timing
from benchmarks.conftest import device_name, option_list

INFER_BATCH = 32
TRAIN_LODS = [("celeba-hq256", lod) for lod in range(7)] + [("ffhq", 7), ("ffhq", 8)]
INFER_LODS = [("celeba-hq256", 6), ("ffhq", 7), ("ffhq", 8)]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    impl: str
    precision: str
    compile: bool = False


VARIANTS = [Variant("fp32-eager", "ref", "fp32"), Variant("bf16-eager", "ref", "bf16"),
            Variant("bf16-compile", "ref", "bf16", compile=True),
            Variant("bf16-fused-cuda", "cuda", "bf16"), Variant("bf16-fused-triton", "triton", "bf16")]


def build(cfg: shapes.Config, variant: Variant, device: torch.device):
    return build_model(cfg.model).to(device)


def training_step(model, variant: Variant, lod: int, device: torch.device) -> ALAEStep:
    torch.backends.cudnn.benchmark = True
    step = ALAEStep(model, StepOptions(precision=variant.precision, compile=variant.compile), device=device)
    step.begin_lod(lod, 0.0015)
    return step


def _skip_unavailable(variant: Variant, device: torch.device):
    from alae_fast.ops import _backend

    reason = _backend.unavailable_reason(variant.impl, device.type)
    if reason:
        pytest.skip(reason)


def _variants(config):
    wanted = option_list(config, "backends")
    return [v for v in VARIANTS if wanted is None or v.impl in wanted or (v.compile and "compile" in wanted)]


def _lods(config, table):
    configs, lods = option_list(config, "configs"), option_list(config, "lods")
    return [(c, lod) for c, lod in table
            if (configs is None or c in configs) and (lods is None or str(lod) in lods)]


def pytest_generate_tests(metafunc):
    if "variant" in metafunc.fixturenames and "train_lod" in metafunc.fixturenames:
        metafunc.parametrize("variant", _variants(metafunc.config), ids=lambda v: v.name)
        metafunc.parametrize("train_lod", _lods(metafunc.config, TRAIN_LODS), ids=lambda c: f"{c[0]}-lod{c[1]}")
    elif "variant" in metafunc.fixturenames and "infer_lod" in metafunc.fixturenames:
        metafunc.parametrize("variant", _variants(metafunc.config), ids=lambda v: v.name)
        metafunc.parametrize("infer_lod", _lods(metafunc.config, INFER_LODS), ids=lambda c: f"{c[0]}-lod{c[1]}")


def _record(benchmark, device, **info):
    benchmark.extra_info.update({"device": device_name(device), **info})


@pytest.mark.gpu
def test_train_iteration(benchmark, variant, train_lod, device):
    _skip_unavailable(variant, device)
    cfg_name, lod = train_lod
    cfg = shapes.CONFIGS[cfg_name]
    batch = cfg.batch(lod)
    model = build(cfg, variant, device)
    step = training_step(model, variant, lod, device)
    res = model.resolution(lod)
    real = torch.rand(batch, cfg.channels, res, res, device=device) * 2 - 1

    def iteration():
        with use_impl(variant.impl):
            return step(real, lod, 1.0)

    iteration()  # compiles the compile variant (and proves its compiled path ran)
    with timing.PeakMemory(device) as peak:
        stats = timing.measure([iteration], device, warmup=3, reps=10, min_s=1.0, max_reps=50)
    benchmark.pedantic(lambda: (iteration(), timing.sync(device)), rounds=3)
    _record(benchmark, device, kind="train", variant=variant.name, config=cfg_name, lod=lod,
            resolution=cfg.resolution(lod), batch=batch, blend=1.0, **stats,
            img_per_s=batch / stats["median_s"], peak_mem_bytes=peak.peak,
            compile="generation, G and AE forwards; D eager" if variant.compile else "none")


@pytest.mark.gpu
@pytest.mark.parametrize("what", ["generate", "encode"])
def test_inference(benchmark, variant, infer_lod, what, device):
    _skip_unavailable(variant, device)
    cfg_name, lod = infer_lod
    cfg = shapes.CONFIGS[cfg_name]
    model = build(cfg, variant, device).eval()
    res = model.resolution(lod)
    ws = model.styles(torch.randn(INFER_BATCH, cfg.latent, device=device), lod, 0.0)
    x = torch.rand(INFER_BATCH, cfg.channels, res, res, device=device) * 2 - 1
    run = (lambda: model.generate(ws, lod, 1.0)) if what == "generate" else (lambda: model.encode(x, lod, 1.0))
    run = torch.compile(run, fullgraph=True) if variant.compile else run
    dtype = torch.bfloat16 if variant.precision == "bf16" else None

    def call():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None), use_impl(variant.impl):
            return run()

    with timing.PeakMemory(device) as peak:
        stats = timing.measure([call], device, warmup=3, reps=20, min_s=1.0)
    benchmark.pedantic(lambda: (call(), timing.sync(device)), rounds=3)
    _record(benchmark, device, kind="infer", what=what, variant=variant.name, config=cfg_name, lod=lod,
            resolution=res, batch=INFER_BATCH, **stats, img_per_s=INFER_BATCH / stats["median_s"],
            peak_mem_bytes=peak.peak)


SMOKE_CFG = shapes.Config("smoke", ModelConfig(kind="style", layer_count=3, startf=8, maxf=16, latent_size=16,
                                                mapping_layers=2, channels=3), 1, 3, (32, 32, 32), 0)


@pytest.mark.smoke
@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_train_iteration_smoke(benchmark, impl):
    """A tiny config, one iteration of the shipped step on the CPU: losses finite, nothing skipped, and
    both optimizers move their weights."""
    cpu = torch.device("cpu")
    variant = Variant(f"fp32-eager-{impl}", impl, "fp32")
    _skip_unavailable(variant, cpu)
    torch.manual_seed(0)
    lod = SMOKE_CFG.layer_count - 1
    model = build(SMOKE_CFG, variant, cpu)
    step = training_step(model, variant, lod, cpu)
    ed, fg = list(model.parameters_ed()), list(model.parameters_fg())
    before = [p.detach().clone() for p in ed + fg]
    real = torch.rand(4, SMOKE_CFG.channels, model.resolution(lod), model.resolution(lod)) * 2 - 1
    with use_impl(impl):
        stats = benchmark.pedantic(lambda: step(real, lod, 0.5), rounds=1)
    assert stats["skipped"] == 0 and all(torch.isfinite(torch.as_tensor(v)) for v in stats.values()), stats
    moved = [not torch.equal(b, p) for b, p in zip(before, ed + fg)]
    assert any(moved[:len(ed)]) and any(moved[len(ed):]), "an optimizer did not update its weights"
