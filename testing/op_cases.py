"""Input factories for every fused op and the parity rule, shared by tests and benchmarks.

An OpCase builds random inputs for an activation shape (N, C, H, W) and names which
arguments are differentiable. `public(*args, impl=...)` and `reference(*args)` return a
tuple of outputs.

Parity rule (check_parity): every output and every input gradient of a backend is compared
with the fp64 reference on the same inputs. Its error may be at most ERROR_RATIO times the
error of the pure-PyTorch reference run in the same dtype, on the same inputs and device, plus
a small floor (FLOORS). Errors are measured twice: as an L2 norm and as the largest absolute
error. A backend is thus held to what PyTorch itself achieves in that dtype; fp64 (where
PyTorch's error is ~0) to the floor alone. Elements that overflow the dtype in PyTorch's own
result or in the fp64 reference (a true value beyond fp16's range) are left out.

Non-finite rule (check_nonfinite): on inputs holding NaN or inf, every output and input gradient
of a backend has NaN, +inf and -inf exactly where PyTorch's same-dtype reference has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from alae_fast import ops

ERROR_RATIO = 2.0
# Floors added to ERROR_RATIO × PyTorch's error, by dtype of the compared tensor: (relative,
# absolute). The L2 floor is relative·‖ref‖ + absolute·sqrt(numel), the max-error floor
# MAX_FLOOR_SCALE·(relative·max|ref| + absolute). The absolute part (the inputs are O(1))
# covers results that cancel to ~0, such as a bias gradient through instance norm, where the
# error is rounding noise of O(1) terms; fp16/bf16's relative part is an eighth of their epsilon.
FLOORS = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-6, 1e-6),
    torch.float16: (torch.finfo(torch.float16).eps / 8, 1e-6),
    torch.bfloat16: (torch.finfo(torch.bfloat16).eps / 8, 1e-6),
}
MAX_FLOOR_SCALE = 4.0


def _tuple(out):
    return out if isinstance(out, tuple) else (out,)


@dataclass(frozen=True)
class OpCase:
    name: str
    public: Callable
    reference: Callable
    make: Callable  # (shape, dtype, device, generator) -> list of args
    differentiable: tuple[int, ...]  # indices of args that get gradients
    needs_even: bool = False
    second_order: bool = False  # R1 differentiates it twice in the model

    def run(self, args, impl):
        return _tuple(self.public(*args, impl=impl))

    def run_reference(self, args):
        return _tuple(self.reference(*args))


def _randn(shape, dtype, device, gen, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _param(shape, dtype, device, gen, scale=0.5):
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return _randn(shape, acc, device, gen, scale)


def _adain(shape, dtype, device, gen):
    n, c, h, w = shape
    return [_randn(shape, dtype, device, gen), _randn((n, 1, h, w), dtype, device, gen),
            _param((c,), dtype, device, gen), _param((c,), dtype, device, gen),
            _param((n, 2 * c), dtype, device, gen)]


def _style(shape, dtype, device, gen):
    return [_randn(shape, dtype, device, gen), _param((shape[1],), dtype, device, gen)]


def _noise(shape, dtype, device, gen):
    n, c, h, w = shape
    return [_randn(shape, dtype, device, gen), _randn((n, 1, h, w), dtype, device, gen),
            _param((c,), dtype, device, gen), _param((c,), dtype, device, gen)]


def _blend_up(shape, dtype, device, gen):
    n, c, h, w = shape
    return [_randn((n, c, h // 2, w // 2), dtype, device, gen), _randn(shape, dtype, device, gen), 0.3]


def _blend_real(shape, dtype, device, gen):
    return [_randn(shape, dtype, device, gen), 0.3]


def _blend_down(shape, dtype, device, gen):
    n, c, h, w = shape
    k = 3
    return [_randn((n, k, h, w), dtype, device, gen), _param((c, k), dtype, device, gen),
            _param((c,), dtype, device, gen), _randn((n, c, h // 2, w // 2), dtype, device, gen), 0.3]


def _noise_act(*args, impl="auto"):
    return ops.noise_inject(*args, act=True, impl=impl)


def _noise_act_ref(*args):
    return ops.noise_inject_ref(*args, act=True)


CASES = {
    "modulated_adain": OpCase("modulated_adain", ops.modulated_adain, ops.modulated_adain_ref, _adain, (0, 2, 3, 4)),
    "style_extract": OpCase("style_extract", ops.style_extract, ops.style_extract_ref, _style, (0, 1),
                            second_order=True),
    "noise_inject": OpCase("noise_inject", _noise_act, _noise_act_ref, _noise, (0, 2, 3)),
    "blend_up": OpCase("blend_up", ops.blend_up, ops.blend_up_ref, _blend_up, (0, 1), needs_even=True,
                       second_order=True),
    "blend_real": OpCase("blend_real", ops.blend_real, ops.blend_real_ref, _blend_real, (0,), needs_even=True),
    "blend_down": OpCase("blend_down", ops.blend_down, ops.blend_down_ref, _blend_down, (0, 1, 2, 3),
                         needs_even=True, second_order=True),
}


def to_reference(args):
    """fp64 copies of the inputs, for the reference."""
    return [a.detach().to(torch.float64) if isinstance(a, torch.Tensor) else a for a in args]


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(L2 norm, max abs) of out - ref, with `ref` in fp64."""
    if out.numel() == 0:
        return 0.0, 0.0
    diff = out.detach().to(torch.float64) - ref
    return diff.norm().item(), diff.abs().max().item()


def compare(out: torch.Tensor, ref: torch.Tensor, torch_out: torch.Tensor, what: str) -> None:
    """Raise AssertionError unless `out` meets the parity rule against the fp64 `ref`, where
    `torch_out` is the same-dtype PyTorch reference's value on the same inputs."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert out.dtype == torch_out.dtype, f"{what}: dtype {out.dtype}, but PyTorch's reference gives {torch_out.dtype}"
    # Where PyTorch's own result or the true value overflows the dtype, the backend may too; those
    # elements are left out.
    representable = torch.isfinite(torch_out) & (ref.abs() <= torch.finfo(out.dtype).max)
    assert (torch.isfinite(out) | ~representable).all(), f"{what}: non-finite values where PyTorch's are finite"
    if not representable.all():
        out, ref, torch_out = out[representable], ref[representable], torch_out[representable]
    if out.numel() == 0:
        return
    err, worst = errors(out, ref)
    torch_err, torch_worst = errors(torch_out, ref)
    relative, absolute = FLOORS[out.dtype]
    ref_l2, ref_max = ref.norm().item(), ref.abs().max().item()
    limit_err = ERROR_RATIO * torch_err + relative * ref_l2 + absolute * out.numel() ** 0.5
    limit_worst = ERROR_RATIO * torch_worst + MAX_FLOOR_SCALE * (relative * ref_max + absolute)
    scale_l2, scale_max = ref_l2 or 1.0, ref_max or 1.0
    assert err <= limit_err and worst <= limit_worst, (
        f"{what}: error {err / scale_l2:.3e} (limit {limit_err / scale_l2:.3e}), max error {worst / scale_max:.3e} "
        f"(limit {limit_worst / scale_max:.3e}) in {out.dtype}, relative to the reference's norm and max; "
        f"PyTorch's own: {torch_err / scale_l2:.3e}, {torch_worst / scale_max:.3e}; "
        f"limit = {ERROR_RATIO:g}x PyTorch's + floor")


def _forward_backward(fn, case: OpCase, args, grads: bool, grad_outputs):
    """Detached outputs of fn(args) and, if `grads`, the gradients of every differentiable argument
    for grad_outputs(outputs) (a list, or a callable making it from the outputs)."""
    leaves = [a.detach().requires_grad_(grads and i in case.differentiable) if isinstance(a, torch.Tensor) else a
              for i, a in enumerate(args)]
    with torch.set_grad_enabled(grads):
        outs = fn(leaves)
    if not grads:
        return [o.detach() for o in outs], [], []
    gouts = grad_outputs(outs) if callable(grad_outputs) else grad_outputs
    got = torch.autograd.grad(outs, [leaves[i] for i in case.differentiable], gouts)
    return [o.detach() for o in outs], list(got), gouts


@dataclass(frozen=True)
class Reference:
    """The fp64 reference and PyTorch's same-dtype reference on one input set (gradients empty
    when not asked). grad_outputs are random, in each output's dtype and device."""

    outputs: list
    grads: list
    torch_outputs: list
    torch_grads: list
    grad_outputs: list


def make_reference(case: OpCase, args, *, seed: int = 0, grads: bool = True, fp64: bool = True) -> Reference:
    """Both references for inputs `args`, on their device (without `fp64`, PyTorch's same-dtype one
    alone: `outputs` and `grads` are then empty)."""
    gen = torch.Generator().manual_seed(seed + 1)

    def random_grads(outs):
        return [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device, o.dtype) for o in outs]

    torch_outs, torch_grads, gouts = _forward_backward(case.run_reference, case, args, grads, random_grads)
    if not fp64:
        return Reference([], [], torch_outs, torch_grads, gouts)
    outs, ref_grads, _ = _forward_backward(case.run_reference, case, to_reference(args), grads,
                                           [g.to(torch.float64) for g in gouts])
    return Reference(outs, ref_grads, torch_outs, torch_grads, gouts)


def check_parity(case: OpCase, args, backend: str, *, seed: int = 0, grads: bool = True,
                 reference: Reference | None = None, label: str | None = None):
    """Assert the parity rule for every output and (if `grads`) every input gradient of `backend`
    on inputs `args`. Returns the backend's (outputs, grad_outputs)."""
    ref = reference or make_reference(case, args, seed=seed, grads=grads)
    label = label or f"{case.name}[{backend}, {args[0].dtype}, {list(args[0].shape)}]"
    assert not grads or len(ref.grads) == len(case.differentiable), f"{label}: the reference has no gradients"
    outs, got, gouts = _forward_backward(lambda a: case.run(a, backend), case, args, grads, ref.grad_outputs)
    assert len(outs) == len(ref.outputs), f"{label}: {len(outs)} outputs, the reference has {len(ref.outputs)}"
    for k, (o, r, t) in enumerate(zip(outs, ref.outputs, ref.torch_outputs)):
        compare(o, r, t, f"{label} output {k}")
    for i, g, r, t in zip(case.differentiable, got, ref.grads, ref.torch_grads):
        compare(g, r, t, f"{label} grad of arg {i}")
    return outs, gouts


def _nonfinite_mismatch(out: torch.Tensor, want: torch.Tensor) -> str | None:
    """Where `out` and `want` differ in NaN, +inf or -inf, as a message; None if nowhere."""
    for kind, test in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        differ = test(out) != test(want)
        if differ.any():
            first = [int(i) for i in differ.nonzero()[0]]
            return (f"{kind} at {int(test(out).sum())} elements, the reference at {int(test(want).sum())}; "
                    f"first difference at {first}: {out[tuple(first)].item()} vs {want[tuple(first)].item()}")
    return None


def check_nonfinite(case: OpCase, args, backend: str, *, seed: int = 0, grads: bool = True,
                    label: str | None = None):
    """Assert the non-finite rule for every output and (if `grads`) every input gradient of `backend`
    on inputs `args`, which hold NaN or inf."""
    ref = make_reference(case, args, seed=seed, grads=grads, fp64=False)
    label = label or f"{case.name}[{backend}, {args[0].dtype}, {list(args[0].shape)}]"
    outs, got, _ = _forward_backward(lambda a: case.run(a, backend), case, args, grads, ref.grad_outputs)
    pairs = [(f"output {k}", o, r) for k, (o, r) in enumerate(zip(outs, ref.torch_outputs))]
    pairs += [(f"grad of arg {i}", g, r) for i, g, r in zip(case.differentiable, got, ref.torch_grads)]
    for what, out, want in pairs:
        assert out.shape == want.shape, f"{label} {what}: shape {tuple(out.shape)} != reference {tuple(want.shape)}"
        mismatch = _nonfinite_mismatch(out, want)
        assert mismatch is None, f"{label} {what}: {mismatch}"
