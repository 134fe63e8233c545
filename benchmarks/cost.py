"""Cost of one training iteration, counted on the CPU without running it.

    python -m benchmarks.cost --config ffhq --lod 8 --batch 4 [--blend 0.5] [--json]
    python -m benchmarks.cost --write benchmarks/results/cost     # the committed table (ffhq lod 8, celeba-hq256 lod 6)

Runs the shipped step unit (alae_fast.train.step.ALAEStep) on fake tensors (shapes and dtypes only,
no data, no compute) under a dispatch mode that records every ATen op and fused alae_fast op. Per
variant and per phase (d: D/E step with R1, g: G/F step, ae: latent-AE step) it reports:
  bytes                 read + written by every op that is not a matmul or convolution
  ops                   ATen ops / fused ops that launch work (views and metadata are free)
  flops                 of matmuls and convolutions (forward and backward)
  single_channel_convs  convolutions of one output channel over a batch of one, as PyTorch's double
                        backward of a grouped convolution issues per group
The optimizer is counted as Adam's 7 accesses (p, g, m, v read; p, m, v written) per parameter
element, one op per optimizer step (fused Adam). Variants:
  fp32-eager   fp32, pure-PyTorch reference ops
  bf16-eager   bf16 autocast, reference ops
  bf16-fused   bf16 autocast, the fused kernels (counted through the CPU backend, whose ops and
               tensor traffic are those of the CUDA and Triton backends)
Autocast is the CPU one, applied to the fake CPU tensors; its policy follows CUDA's for the ops
that matter here (matmuls and convolutions in bf16, losses in fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from alae_fast.models import build_model
from alae_fast.ops import use_impl
from alae_fast.train import load_config
from alae_fast.train.step import ALAEStep, StepOptions

VARIANTS = {"fp32-eager": ("fp32", "ref"), "bf16-eager": ("bf16", "ref"), "bf16-fused": ("bf16", "cpu")}
PHASES = ("d", "g", "ae")
ADAM_ACCESSES = 7
_MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "convolution", "convolution_backward",
            "_convolution", "cudnn_convolution", "mkldnn_convolution"}
# Ops that only make views or read metadata: no kernel, no traffic.
_FREE = {"view", "_unsafe_view", "reshape", "expand", "permute", "t", "transpose", "slice", "select", "unsqueeze",
         "squeeze", "as_strided", "alias", "detach", "unbind", "split", "split_with_sizes", "chunk", "view_as",
         "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "device",
         "sym_size", "sym_stride", "sym_numel", "is_same_size", "_reshape_alias", "unflatten", "flatten", "narrow",
         "expand_as", "diagonal", "movedim", "set_", "resize_", "_local_scalar_dense", "is_nonzero",
         "_has_compatible_shallow_copy_type", "result_type", "__getitem__"}


@dataclass
class Cost:
    bytes: int = 0
    ops: int = 0
    flops: int = 0
    single_channel_convs: int = 0

    def add(self, other: "Cost") -> None:
        for k in asdict(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _conv_flops(args, out) -> int:
    x, w = args[0], args[1]
    groups = args[8] if len(args) > 8 else 1
    per_out = 2 * (w.shape[1]) * math.prod(w.shape[2:])  # MACs per output element (C_in/groups · k·k), ×2
    first = out[0] if isinstance(out, (tuple, list)) else out
    return per_out * first.numel() if groups else 0


def _conv_backward_flops(args, out) -> int:
    grad, x, w = args[0], args[1], args[2]
    mask = args[-1] if isinstance(args[-1], (list, tuple)) else [True, True, True]
    per = 2 * w.shape[1] * math.prod(w.shape[2:]) * grad.numel()  # one pass ≈ forward flops
    return per * (int(bool(mask[0])) + int(bool(mask[1])))


def _matmul_flops(name: str, args, out) -> int:
    if name in ("convolution", "_convolution", "cudnn_convolution", "mkldnn_convolution"):
        return _conv_flops(args, out)
    if name == "convolution_backward":
        return _conv_backward_flops(args, out)
    a = args[1] if name in ("addmm", "baddbmm") else args[0]
    b = args[2] if name in ("addmm", "baddbmm") else args[1]
    if name == "linear":
        return 2 * a.numel() * b.shape[0]
    return 2 * a.numel() * b.shape[-1]


def _single_channel_conv(name: str, args) -> bool:
    """One output channel over a batch of one: the per-group convolutions that PyTorch's double backward of a
    grouped convolution issues (its weight gradient, group by group)."""
    if name != "convolution":
        return False
    x, w, groups = args[0], args[1], args[8] if len(args) > 8 else 1
    return x.dim() == 4 and x.shape[0] == 1 and w.shape[0] == 1 and groups == 1


class CostCounter(TorchDispatchMode):
    """Counts every dispatched op into the current phase."""

    def __init__(self):
        super().__init__()
        self.phase = None
        self.costs = defaultdict(Cost)
        self.op_names = defaultdict(int)

    @contextlib.contextmanager
    def counting(self, phase: str):
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.phase is None:
            return out
        name = func.__name__.split(".")[0] if func.namespace == "aten" or func.namespace == "prim" else func.name()
        if name in _FREE:
            return out
        cost = self.costs[self.phase]
        cost.ops += 1
        self.op_names[name] += 1
        if name in _MATMULS:
            cost.flops += _matmul_flops(name, args, out)
            cost.single_channel_convs += _single_channel_conv(name, args)
        else:
            inputs = list(_tensors(args)) + list(_tensors(kwargs or {}))
            outputs = [t for t in _tensors(out) if not any(t is i for i in inputs)]
            cost.bytes += sum(_nbytes(t) for t in inputs) + sum(_nbytes(t) for t in outputs)
        return out

    def optimizer_step(self, optimizer) -> None:
        """Fused Adam's traffic for one step of `optimizer`, in place of running it."""
        cost = self.costs[self.phase]
        cost.ops += 1
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    cost.bytes += ADAM_ACCESSES * _nbytes(p)


def count_iteration(config: str, lod: int, batch: int, variant: str, blend: float = 1.0) -> dict:
    """{'d': Cost, 'g': Cost, 'ae': Cost} of one iteration of built-in `config` at `lod`."""
    precision, impl = VARIANTS[variant]
    cfg = load_config(config).model
    with FakeTensorMode() as fake, use_impl(impl):
        model = build_model(cfg).train()
        counter = CostCounter()
        options = StepOptions(precision=precision, guard=False, fused_adam=False)
        step = ALAEStep(model, options, device="cpu")
        step.begin_lod(lod, 1e-3)
        for opt in (step.opt_ed, step.opt_fg):
            opt.step = (lambda o: (lambda *a, **k: counter.optimizer_step(o)))(opt)
        # Style mixing as in 90% of real iterations: a fixed cutoff, since fake tensors hold no draws.
        model.mixing_cutoff = lambda lod_, p=None, generator=None: None if p == 0.0 else max(1, lod_ + 1)
        res = model.resolution(lod)
        real = torch.empty(batch, cfg.channels, res, res)
        with counter:
            with counter.counting("d"):
                step.d_step(real, lod, blend)
            with counter.counting("g"):
                step.g_step(batch, lod, blend)
            with counter.counting("ae"):
                step.ae_step(batch, lod, blend)
    del fake
    return {phase: counter.costs[phase] for phase in PHASES}


def report(config: str, lod: int, batch: int, blend: float = 1.0, variants=tuple(VARIANTS)) -> dict:
    """{'config', 'lod', 'batch', 'blend', 'variants': {name: totals + {'phases': {...}}}}."""
    out = {"config": config, "lod": lod, "batch": batch, "blend": blend, "torch": torch.__version__, "variants": {}}
    for name in variants:
        phases = count_iteration(config, lod, batch, name, blend)
        total = Cost()
        for cost in phases.values():
            total.add(cost)
        out["variants"][name] = {**asdict(total), "phases": {p: asdict(c) for p, c in phases.items()}}
    return out


def format_table(rep: dict) -> str:
    lines = [f"{rep['config']} lod {rep['lod']} batch {rep['batch']} blend {rep['blend']}: one iteration",
             f"{'variant':<12} {'phase':<6} {'GB':>9} {'ops':>8} {'TFLOP':>8} {'1-ch convs':>10}"]
    for name, v in rep["variants"].items():
        for phase, c in list(v["phases"].items()) + [("total", v)]:
            lines.append(f"{name:<12} {phase:<6} {c['bytes'] / 1e9:9.2f} {c['ops']:8d} {c['flops'] / 1e12:8.3f} "
                         f"{c['single_channel_convs']:10d}")
    return "\n".join(lines)


TABLE_CASES = (("ffhq", 8, 4), ("celeba-hq256", 6, 4))
TARGETS = "bf16-fused: non-matmul bytes ≤ 40 GB, ops ≤ 3,000, 0 single-channel convolutions, D+R1 bytes below bf16-eager's"


def write_results(directory) -> Path:
    """The JSON of every TABLE_CASES entry and table.md beside them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["# Cost of one training iteration, counted on the CPU (benchmarks/cost.py)", "",
             f"torch {torch.__version__}; per-GPU batch as named; stable phase (blend 1). Targets: {TARGETS}.", "",
             "| config | variant | GB moved (non-matmul) | D+R1 GB | ops | TFLOP | single-channel convs |",
             "|---|---|---|---|---|---|---|"]
    for config, lod, batch in TABLE_CASES:
        rep = report(config, lod, batch)
        (directory / f"{config}-lod{lod}-batch{batch}.json").write_text(json.dumps(rep, indent=1))
        for name, v in rep["variants"].items():
            lines.append(f"| {config} lod {lod} batch {batch} | {name} | {v['bytes'] / 1e9:.1f} | "
                         f"{v['phases']['d']['bytes'] / 1e9:.1f} | {v['ops']} | {v['flops'] / 1e12:.2f} | "
                         f"{v['single_channel_convs']} |")
    path = directory / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", metavar="DIR", help="write the committed table (TABLE_CASES) to DIR and exit")
    p.add_argument("--config", help="built-in config name (ffhq, celeba-hq256, mnist, tiny, ...)")
    p.add_argument("--lod", type=int)
    p.add_argument("--batch", type=int, help="per-GPU batch")
    p.add_argument("--blend", type=float, default=1.0, help="< 1 counts a transition (the blend ops run)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    if args.write:
        print(write_results(args.write))
        return 0
    if args.config is None or args.lod is None or args.batch is None:
        p.error("--config, --lod and --batch are required (or --write DIR)")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    rep = report(args.config, args.lod, args.batch, args.blend, variants)
    print(json.dumps(rep) if args.json else format_table(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
