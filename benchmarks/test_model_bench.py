"""Whole-model throughput: one ALAE training iteration (SPEC §5) and inference, per lod.

Training: every lod of celeba-hq256 and the 512² and 1024² lods of ffhq, at the per-GPU
batch of the official schedule (benchmarks/shapes.py), GPU only. Lods > 0 are timed in a
transition (blend 0.5), which also runs the blend ops. Variants:
  fp32-eager-ref     the official setting: fp32, eager, reference ops, plain Adam
  bf16-eager-ref     bf16 autocast, eager, reference ops
  bf16-compile-ref   bf16 autocast, reference ops, F/G/E/D methods under torch.compile. AOTAutograd
                     cannot differentiate its compiled backward again, so when R1's double
                     backward fails through the compiled E∘D, the R1 branch (real images) runs
                     eager and everything else stays compiled; extra_info['compile'] says which ran.
  bf16-fused-<b>     bf16 autocast, eager, fused kernels of backend b
The non-official variants use Adam(fused=True) on CUDA. report.py projects the full ffhq
schedule's wall time from these numbers.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from alae_fast import ops
from benchmarks import shapes, timing
from benchmarks.conftest import device_name, option_list

models = pytest.importorskip("alae_fast.models", reason="alae_fast.models is not importable yet")

R1_GAMMA = 10.0
MIXING = 0.9
LR = 0.0015
INFER_BATCH = 32
TRAIN_LODS = [("celeba-hq256", lod) for lod in range(7)] + [("ffhq", 7), ("ffhq", 8)]
INFER_LODS = [("celeba-hq256", 6), ("ffhq", 7), ("ffhq", 8)]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    impl: str
    autocast: torch.dtype | None
    compile: bool = False


VARIANTS = [Variant("fp32-eager-ref", "ref", None), Variant("bf16-eager-ref", "ref", torch.bfloat16),
            Variant("bf16-compile-ref", "ref", torch.bfloat16, compile=True),
            Variant("bf16-fused-cuda", "cuda", torch.bfloat16), Variant("bf16-fused-triton", "triton", torch.bfloat16)]


def build(cfg: shapes.Config, variant: Variant, device: torch.device):
    model_cfg = models.ModelConfig(kind="style", layer_count=cfg.layer_count, startf=cfg.startf, maxf=cfg.maxf,
                                   latent_size=cfg.latent, mapping_layers=cfg.mapping_layers,
                                   channels=cfg.channels, impl=variant.impl)
    return models.build_model(model_cfg).to(device)


class Nets:
    """The model's F/G/E/D entry points, compiled for the compile variant."""

    def __init__(self, model, variant: Variant):
        self.model = model
        wrap = torch.compile if variant.compile else (lambda f: f)
        self.styles, self.generate = wrap(model.styles), wrap(model.generate)
        self.encode, self.discriminate = wrap(model.encode), wrap(model.discriminate)
        self.eager_r1 = False  # set when the compiled E∘D cannot run R1's double backward

    def d_of_e(self, x, lod, blend, r1: bool = False):
        if r1 and self.eager_r1:
            return self.model.discriminate(self.model.encode(x, lod, blend))
        return self.discriminate(self.encode(x, lod, blend))


class Iteration:
    """One ALAE iteration: D/E step with R1, G step with E and D frozen, latent-AE step; Adam."""

    def __init__(self, model, variant: Variant, lod: int, blend: float, batch: int, device: torch.device):
        self.model, self.variant, self.lod, self.blend, self.batch, self.device = model, variant, lod, blend, batch, device
        fused = device.type == "cuda" and variant.name != "fp32-eager-ref"
        adam = dict(lr=LR, betas=(0.0, 0.99), eps=1e-8, fused=fused or None)
        self.ed, self.fg = list(model.parameters_ed()), list(model.parameters_fg())
        self.opt_ed, self.opt_fg = torch.optim.Adam(self.ed, **adam), torch.optim.Adam(self.fg, **adam)
        self.nets = Nets(model, variant)
        res = model.resolution(lod)
        self.real = torch.rand(batch, model.channels, res, res, device=device) * 2 - 1

    def _autocast(self):
        dtype = self.variant.autocast
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _z(self):
        return torch.randn(self.batch, self.model.latent_size, device=self.device)

    def _real(self):
        if self.blend >= 1.0:
            return self.real
        return ops.blend_real(self.real, self.blend, impl=self.variant.impl)

    def _fake(self, mixing):
        return self.nets.generate(self.nets.styles(self._z(), self.lod, mixing), self.lod, self.blend)

    def step_d(self):
        n, lod, blend = self.nets, self.lod, self.blend
        with self._autocast():
            with torch.no_grad():
                fake = self._fake(MIXING)
            x = self._real().detach().requires_grad_(True)
            d_real = n.d_of_e(x, lod, blend, r1=True)
            (grad,) = torch.autograd.grad(d_real.float().sum(), x, create_graph=True)
            r1 = grad.float().square().sum((1, 2, 3)).mean() * (R1_GAMMA / 2)
            loss = F.softplus(n.d_of_e(fake, lod, blend).float()).mean() + F.softplus(-d_real.float()).mean() + r1
        self.opt_ed.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_ed.step()
        return loss

    def step_g(self):
        for p in self.ed:
            p.requires_grad_(False)
        with self._autocast():
            loss = F.softplus(-self.nets.d_of_e(self._fake(MIXING), self.lod, self.blend).float()).mean()
        self.opt_fg.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_fg.step()
        for p in self.ed:
            p.requires_grad_(True)
        return loss

    def step_ae(self):
        n = self.nets
        with self._autocast():
            ws = n.styles(self._z(), self.lod, 0.0)
            w_rec = n.encode(n.generate(ws, self.lod, self.blend), self.lod, self.blend)
            loss = (w_rec.float() - ws[:, 0].detach().float()).square().mean()
        self.opt_ed.zero_grad(set_to_none=True)
        self.opt_fg.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_ed.step()
        self.opt_fg.step()
        return loss

    def __call__(self):
        return self.step_d(), self.step_g(), self.step_ae()

    def first(self) -> str:
        """Runs one iteration; for the compile variant falls back to an eager R1 branch if needed."""
        if not self.variant.compile:
            self()
            return "none"
        try:
            self()
            return "F/G/E/D compiled, R1 through compiled E∘D"
        except RuntimeError as exc:
            self.nets.eager_r1 = True
            self()
            return f"F/G/E/D compiled; R1 branch eager ({str(exc).splitlines()[0][:120]})"


def _skip_unavailable(variant: Variant, device: torch.device):
    from alae_fast.ops import _backend

    reason = _backend.unavailable_reason(variant.impl, device.type)
    if reason:
        pytest.skip(reason)


def _variants(config):
    wanted = option_list(config, "backends")
    return [v for v in VARIANTS if wanted is None or v.impl in wanted or (v.compile and "compile" in wanted)]


def pytest_generate_tests(metafunc):
    if "variant" in metafunc.fixturenames and "train_lod" in metafunc.fixturenames:
        metafunc.parametrize("variant", _variants(metafunc.config), ids=lambda v: v.name)
        metafunc.parametrize("train_lod", TRAIN_LODS, ids=lambda c: f"{c[0]}-lod{c[1]}")
    elif "variant" in metafunc.fixturenames and "infer_lod" in metafunc.fixturenames:
        metafunc.parametrize("variant", _variants(metafunc.config), ids=lambda v: v.name)
        metafunc.parametrize("infer_lod", INFER_LODS, ids=lambda c: f"{c[0]}-lod{c[1]}")


def _record(benchmark, device, **info):
    benchmark.extra_info.update({"device": device_name(device), **info})


@pytest.mark.gpu
def test_train_iteration(benchmark, variant, train_lod, device):
    _skip_unavailable(variant, device)
    cfg_name, lod = train_lod
    cfg = shapes.CONFIGS[cfg_name]
    batch, blend = cfg.batch(lod), (0.5 if lod > 0 else 1.0)
    it = Iteration(build(cfg, variant, device), variant, lod, blend, batch, device)
    compiled = it.first()
    with timing.PeakMemory(device) as peak:
        stats = timing.measure([it], device, warmup=3, reps=10, min_s=1.0, max_reps=50)
    benchmark.pedantic(lambda: (it(), timing.sync(device)), rounds=3)
    _record(benchmark, device, kind="train", variant=variant.name, config=cfg_name, lod=lod,
            resolution=cfg.resolution(lod), batch=batch, blend=blend, **stats,
            img_per_s=batch / stats["median_s"], peak_mem_bytes=peak.peak, compile=compiled)


@pytest.mark.gpu
@pytest.mark.parametrize("what", ["generate", "encode"])
def test_inference(benchmark, variant, infer_lod, what, device):
    _skip_unavailable(variant, device)
    cfg_name, lod = infer_lod
    cfg = shapes.CONFIGS[cfg_name]
    model = build(cfg, variant, device).eval()
    nets = Nets(model, variant)
    res = model.resolution(lod)
    ws = model.styles(torch.randn(INFER_BATCH, cfg.latent, device=device), lod, 0.0)
    x = torch.rand(INFER_BATCH, cfg.channels, res, res, device=device) * 2 - 1
    run = (lambda: nets.generate(ws, lod, 1.0)) if what == "generate" else (lambda: nets.encode(x, lod, 1.0))

    def call():
        with torch.inference_mode(), torch.autocast(device.type, dtype=variant.autocast or torch.float32,
                                                    enabled=variant.autocast is not None):
            return run()

    with timing.PeakMemory(device) as peak:
        stats = timing.measure([call], device, warmup=3, reps=20, min_s=1.0)
    benchmark.pedantic(lambda: (call(), timing.sync(device)), rounds=3)
    _record(benchmark, device, kind="infer", what=what, variant=variant.name, config=cfg_name, lod=lod,
            resolution=res, batch=INFER_BATCH, **stats, img_per_s=INFER_BATCH / stats["median_s"],
            peak_mem_bytes=peak.peak)


SMOKE_CFG = shapes.Config("smoke", 3, 8, 16, 16, 2, 3, 1, 3, (32, 32, 32), 0)


@pytest.mark.smoke
@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_train_iteration_smoke(benchmark, impl):
    """A tiny config, one iteration on the CPU: losses finite and every optimizer moves its weights."""
    cpu = torch.device("cpu")
    variant = Variant(f"fp32-eager-{impl}", impl, None)
    _skip_unavailable(variant, cpu)
    torch.manual_seed(0)
    lod = SMOKE_CFG.layer_count - 1
    it = Iteration(build(SMOKE_CFG, variant, cpu), variant, lod, 0.5, 4, cpu)
    before = [p.detach().clone() for p in it.ed + it.fg]
    losses = benchmark.pedantic(it, rounds=1)
    assert all(torch.isfinite(loss) for loss in losses), losses
    moved = [not torch.equal(b, p) for b, p in zip(before, it.ed + it.fg)]
    assert any(moved[:len(it.ed)]) and any(moved[len(it.ed):]), "an optimizer did not update its weights"
