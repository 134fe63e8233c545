"""Input factories and tolerances for every fused op, shared by tests and benchmarks.

An OpCase builds random inputs for an activation shape (N, C, H, W) and names which
arguments are differentiable. `public(*args, impl=...)` and `reference(*args)` return a
tuple of outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from alae_fast import ops

# Tolerances of a backend against the fp64 reference: (relative L2 error, max abs error).
TOLERANCES = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (1e-5, 2e-4),
    torch.float16: (2e-3, 3e-2),
    torch.bfloat16: (1.5e-2, 1.5e-1),
}


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
    """fp64 CPU copies of the inputs, for the reference."""
    return [a.detach().to("cpu", torch.float64) if isinstance(a, torch.Tensor) else a for a in args]


def compare(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Raise AssertionError when `out` is outside the dtype's tolerance of the fp64 `ref`."""
    rel_tol, abs_tol = TOLERANCES[dtype]
    out64, ref64 = out.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    assert out64.shape == ref64.shape, f"{what}: shape {tuple(out64.shape)} != reference {tuple(ref64.shape)}"
    assert torch.isfinite(out64).all(), f"{what}: non-finite values"
    # Relative to the reference's norm, or to an RMS of 1 where the reference is near zero.
    err = (out64 - ref64).norm() / max(ref64.norm().item(), out64.numel() ** 0.5, 1e-30)
    max_abs = (out64 - ref64).abs().max().item() if out64.numel() else 0.0
    assert err <= rel_tol and max_abs <= abs_tol * max(1.0, ref64.abs().max().item()), (
        f"{what}: relative L2 error {err:.3e} (tol {rel_tol:.0e}), max abs {max_abs:.3e} (tol {abs_tol:.0e}) in {dtype}"
    )
