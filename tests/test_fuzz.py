"""Hypothesis fuzz of every fused op against the references (testing.op_cases).

Each example draws a shape (H·W from 1 to 256², odd sizes, N·C up to 4096 under a cap on the
element count), a dtype, a layout (contiguous or channels_last) and a conditioning of the first
activation: plain, rows offset so that |mean|/std reaches 1e6, constant rows, rows varying by a
few ulps, or NaN/±inf injected. Finite inputs must meet the parity rule (check_parity), inputs with
NaN or inf the non-finite rule (check_nonfinite). The examples are fixed (derandomize=True, no
example database), so CI runs the same cases every time.

The cpu backend runs EXAMPLES["cpu"] examples per op; Triton runs under TRITON_INTERPRET=1 on small
shapes (H·W <= 16², N·C <= 64), where each program instance costs milliseconds.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testing.op_cases import CASES, check_nonfinite, check_parity

from backends import CPU, TRITON_INTERPRETER

EXAMPLES = {"cpu": 500, "triton": 40}
MAX_SIDE = {"cpu": 256, "triton": 16}
MAX_ROWS = {"cpu": 4096, "triton": 64}  # N·C
MAX_ELEMENTS = 1 << 16  # N·C·H·W
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
CONDITIONS = ["plain", "offset", "constant", "near_constant", "nonfinite"]
# Largest row mean of the "offset" rows, as a power of ten: fp16 overflows at 65504.
MAX_MEAN_DECADES = {torch.float16: 4, torch.bfloat16: 6, torch.float32: 6, torch.float64: 6}

PROFILE = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def _spec(draw, name, backend):
    """(shape, dtype, channels_last, condition, decades, seed) of one example."""
    max_side = MAX_SIDE[backend]
    side = st.one_of(st.integers(1, 8), st.integers(1, 32), st.integers(1, max_side))  # most draws small
    h, w = draw(side), draw(side)
    if CASES[name].needs_even:
        h, w = min(h + h % 2, max_side), min(w + w % 2, max_side)
    rows = draw(st.integers(1, max(1, min(MAX_ROWS[backend], MAX_ELEMENTS // (h * w)))))
    n = draw(st.integers(1, min(rows, 64)))
    shape = (n, max(1, rows // n), h, w)
    return (shape, draw(st.sampled_from(DTYPES)), draw(st.booleans()), draw(st.sampled_from(CONDITIONS)),
            draw(st.integers(0, 6)), draw(st.integers(0, 2**31 - 1)))


def _condition(name, args, condition, decades, gen):
    """Makes the first activation ill-conditioned per (n, c) row, in place of args; for modulated_adain
    the noise is scaled with the rows' spread so that the activated rows keep it."""
    x = args[0]
    dtype, (n, c) = x.dtype, x.shape[:2]
    if condition == "plain":
        return args
    if condition == "nonfinite":
        flat = x.detach().clone().reshape(-1)
        count = min(flat.numel(), 1 + int(torch.randint(3, (), generator=gen)))
        where = torch.randperm(flat.numel(), generator=gen)[:count]
        values = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
        flat[where] = values[torch.randint(3, (count,), generator=gen)]
        return [flat.view(x.shape)] + args[1:]
    # Row means of random sign and magnitude 10^[0, MAX_MEAN_DECADES], spread mean / 10^decades.
    magnitude = 10.0 ** (torch.rand((n, c, 1, 1), generator=gen, dtype=torch.float64) * MAX_MEAN_DECADES[dtype])
    mean = magnitude * torch.where(torch.rand((n, c, 1, 1), generator=gen) < 0.5, -1.0, 1.0).double()
    spread = {"offset": magnitude / 10.0**decades, "constant": 0.0 * magnitude,
              "near_constant": magnitude * 2.0**-22}[condition]
    z = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    args = [(mean + spread * z).to(dtype)] + args[1:]
    if name == "modulated_adain":
        args[1] = (args[1].double() * spread.amin()).to(dtype)
    return args


def _check(name, backend, spec):
    shape, dtype, channels_last, condition, decades, seed = spec
    case = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    args = _condition(name, case.make(shape, dtype, "cpu", gen), condition, decades, gen)
    if channels_last:
        args = [a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4
                else a for a in args]
    label = f"{name}[{backend}, {dtype}, {list(shape)}, {condition}, 1e{decades}, cl={channels_last}, seed={seed}]"
    finite = all(torch.isfinite(a).all() for a in args if isinstance(a, torch.Tensor))
    if finite:
        check_parity(case, args, backend, seed=seed, label=label)
    else:
        check_nonfinite(case, args, backend, seed=seed, label=label)


@pytest.mark.parametrize("backend,device", [CPU, TRITON_INTERPRETER])
@pytest.mark.parametrize("name", list(CASES))
def test_fuzz(name, backend, device):
    @settings(PROFILE, max_examples=EXAMPLES[backend])
    @given(spec=_spec(name, backend))
    def run(spec):
        _check(name, backend, spec)

    run()
