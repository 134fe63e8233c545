"""Triton kernels (impl='triton') against the fp64 reference, under the parity rule of
testing.op_cases.

Without a GPU these run on CPU tensors under TRITON_INTERPRET=1 (set by conftest.py). The
interpreter costs ~17 ms per program instance, so shapes keep N·C small. It covers all four
dtypes (fp16, bf16, fp32, fp64: triton 3.9's interpreter computes them through numpy/torch;
conftest.py makes its fp32 -> bf16 stores round to nearest as the GPU does); the looped row path
(rows longer than ROW_SINGLE_MAX) runs in fp32 and fp64 only, to keep the file fast. The `gpu`
tests repeat the parity on CUDA over all dtypes and bigger shapes, with fixed launch configs
(tests/conftest.py sets ALAE_FAST_TRITON_AUTOTUNE=0). tests/test_ops.py runs the shared op
tests on the 'triton-cuda' and 'triton-interpreter' backends too.
"""

import dataclasses

import pytest
import torch

from alae_fast import ops
from alae_fast.ops import _backend
from testing.op_cases import CASES, check_parity, compare, make_reference

# CPU tests need triton's interpreter; the `gpu` tests need CUDA (conftest.py skips them otherwise).
interpreter = pytest.mark.skipif(_backend.unavailable_reason("triton", "cpu") is not None,
                                 reason="CPU tensors need triton with TRITON_INTERPRET=1")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# (2,3,3,5) odd spatial, several rows per program; (2,3,1,1) H·W = 1; (1,1,2,2) C = 1.
SHAPES = [(2, 3, 3, 5), (2, 3, 1, 1), (1, 1, 2, 2)]
LOOPED = (1, 2, 10, 12)  # H·W = 120 > ROW_SINGLE_MAX under the interpreter: the two-pass path


def _shapes(case, shapes):
    return [s for s in shapes if not case.needs_even or (s[2] % 2 == 0 and s[3] % 2 == 0)]


def _first_grads(case, args):
    """Gradients of the first output (weighted by ones) wrt every differentiable argument."""
    leaves = [a.detach().requires_grad_(i in case.differentiable) if isinstance(a, torch.Tensor) else a
              for i, a in enumerate(args)]
    out = case.run(leaves, "triton")[0]
    return torch.autograd.grad(out, [leaves[i] for i in case.differentiable], torch.ones_like(out))


def _parity(case, shape, dtype, device, seed=0):
    check_parity(case, case.make(shape, dtype, device, torch.Generator().manual_seed(seed)), "triton", seed=seed)


@interpreter
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_parity_interpreter(name, dtype):
    case = CASES[name]
    shapes = SHAPES + ([LOOPED] if dtype in (torch.float32, torch.float64) else [])
    for seed, shape in enumerate(_shapes(case, shapes)):
        _parity(case, shape, dtype, "cpu", seed)


@interpreter
def test_looped_path_is_reached():
    from alae_fast.ops import _triton

    assert _triton.ROW_SINGLE_MAX < LOOPED[2] * LOOPED[3]


@interpreter
@pytest.mark.parametrize("path", ["single", "looped", "split", "split-nhwc"])
def test_second_order_style(path, request):
    """R1 path: grad of grad through the Triton first backward equals the reference's, on every path
    of the double backward."""
    shape = {"single": (2, 3, 3, 5), "looped": LOOPED}.get(path, SPLIT_SHAPE)
    if path.startswith("split"):
        request.getfixturevalue("split_rows")
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if path.endswith("nhwc"):
        x = x.contiguous(memory_format=CL)
    bias = torch.randn(shape[1], dtype=torch.float64)

    def r1(impl):
        xi, bi = x.clone().requires_grad_(), bias.clone().requires_grad_()
        y, style = ops.style_extract(xi, bi, impl=impl)
        (gx,) = torch.autograd.grad((y * y.detach()).sum() + style.square().sum(), [xi], create_graph=True)
        return torch.autograd.grad(gx.square().sum(), [xi, bi])

    for got, want in zip(r1("triton"), r1("ref")):
        compare(got, want, want, "style_extract second order")  # fp64: held to the fp64 floor


@interpreter
def test_deterministic():
    """Per-channel gradients reduce without atomics: two runs are bitwise equal."""
    for name, shape in (("modulated_adain", LOOPED), ("noise_inject", (2, 3, 3, 5)), ("blend_down", (2, 3, 6, 8))):
        case = CASES[name]
        args = case.make(shape, torch.float32, "cpu", torch.Generator().manual_seed(0))
        for a, b in zip(_first_grads(case, args), _first_grads(case, args)):
            assert torch.equal(a, b), name


@interpreter
def test_argument_errors_name_the_argument():
    from alae_fast.ops import _backend

    class tk:  # the Triton launchers, by kernel name
        def __getattr__(self, name):
            return _backend.kernel("triton", name)

    tk = tk()
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(TypeError, match="'bias'"):
        tk.style_fwd(x, torch.zeros(3, dtype=torch.float64), 1e-5, 0.2)
    with pytest.raises(ValueError, match="'x' must be contiguous \\(NCHW\\) or channels_last"):
        tk.style_fwd(x.transpose(2, 3), torch.zeros(3), 1e-5, 0.2)
    with pytest.raises(ValueError, match="'noise'"):
        tk.noise_fwd(x, torch.randn(2, 1, 4, 5), torch.zeros(3), None, False, 0.2)
    with pytest.raises(ValueError, match="even H and W"):
        tk.blend_real_fwd(torch.randn(1, 1, 3, 4), 0.5)
    with pytest.raises(ValueError, match="'alpha'"):
        tk.blend_up_bwd(torch.randn(1, 1, 4, 4), 1.5)
    img, weight, bias, new = torch.randn(1, 3, 4, 4), torch.randn(2, 3), torch.randn(2), torch.randn(1, 2, 2, 2)
    for slope in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="'slope' must be finite and >= 0"):
            tk.blend_down_fwd(img, weight, bias, new, 0.5, slope)
        with pytest.raises(ValueError, match="'slope' must be finite and >= 0"):
            tk.blend_down_bwd(new, img, weight, bias, 0.5, slope)
    with pytest.raises(ValueError, match="'alpha'"):
        tk.blend_real_fwd(torch.randn(1, 1, 4, 4), float("nan"))
    with pytest.raises(ValueError, match=r"style_fwd: argument 'x' has no pixels \(H = 0, W = 4\)"):
        tk.style_fwd(torch.randn(2, 3, 0, 4), torch.zeros(3), 1e-5, 0.2)


@interpreter
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_compile_fullgraph(channels_last):
    """torch.compile sees the op as opaque (custom op + fake impl): no graph break, same values; the
    fake outputs are laid out as the kernels' (NHWC in, NHWC out)."""
    case = CASES["modulated_adain"]
    args = case.make((2, 3, 3, 5), torch.float32, "cpu", torch.Generator().manual_seed(0))
    if channels_last:
        args = [a.to(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                for a in args]
    x = args[0].requires_grad_()

    def f(x, *rest):
        return ops.modulated_adain(x, *rest, impl="triton").square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(x, *args[1:])
    (gx,) = torch.autograd.grad(loss, [x])
    (want_gx,) = torch.autograd.grad(f(x, *args[1:]), [x])
    torch.testing.assert_close(loss, f(x, *args[1:]))
    torch.testing.assert_close(gx, want_gx)
    assert gx.stride() == want_gx.stride() == x.stride()


# ---------------------------------------------------------------------------------------------
# Split rows, NHWC, ill-conditioned rows
# ---------------------------------------------------------------------------------------------
ROW_OPS = ["modulated_adain", "style_extract", "noise_inject"]
CL = torch.channels_last
SPLIT_SHAPE = (1, 2, 6, 12)  # with split_rows: 3 chunks per row (32, 32, 8 pixels)


def _channels_last(args):
    return [a.to(memory_format=CL) if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args]


@pytest.fixture
def split_rows(monkeypatch):
    """Rows of SPLIT_SHAPE's length split over several programs under the interpreter."""
    from alae_fast.ops import _triton

    monkeypatch.setattr(_triton, "SPLIT_MIN_HW", 64)
    rows, hw = SPLIT_SHAPE[0] * SPLIT_SHAPE[1], SPLIT_SHAPE[2] * SPLIT_SHAPE[3]
    split, chunk = _triton.row_split(rows, hw, torch.device("cpu"))
    assert split == 3 and hw % chunk, (split, chunk)  # the last chunk is shorter
    return split


@interpreter
@pytest.mark.parametrize("name", ROW_OPS)
def test_split_rows(name, split_rows):
    """Chunk moments + fixed-order merge (forward), chunk sums + grad_x (backward), in both layouts;
    two runs are bitwise equal."""
    case = CASES[name]
    args = case.make(SPLIT_SHAPE, torch.float32, "cpu", torch.Generator().manual_seed(0))
    check_parity(case, args, "triton")
    check_parity(case, _channels_last(args), "triton", seed=1)
    if name == "modulated_adain":  # the chunk merges run in a fixed order
        args = case.make(SPLIT_SHAPE, torch.float64, "cpu", torch.Generator().manual_seed(2))
        for a, b in zip(_first_grads(case, args), _first_grads(case, args)):
            assert torch.equal(a, b), name


@interpreter
@pytest.mark.parametrize("shape", [(2, 3, 3, 5), LOOPED, SPLIT_SHAPE], ids=["single", "looped", "split"])
def test_adain_fp32_variant(shape, split_rows, monkeypatch):
    """The fp32 arithmetic that devices without full-rate fp64 run, on every path and both layouts;
    the default (fp64) variant gives other bits."""
    from alae_fast.ops import _triton

    case = CASES["modulated_adain"]
    args = case.make(shape, torch.float32, "cpu", torch.Generator().manual_seed(0))
    exact = case.run(args, "triton")[0]
    monkeypatch.setattr(_triton, "fast_fp64", lambda device: False)
    check_parity(case, args, "triton")
    check_parity(case, _channels_last(args), "triton", seed=1)
    assert not torch.equal(exact, case.run(args, "triton")[0])


@pytest.mark.parametrize("capability,fast", [((9, 0), True), ((8, 0), True), ((8, 9), False), ((12, 0), False)])
def test_fast_fp64_by_capability(capability, fast, monkeypatch):
    pytest.importorskip("triton")
    from alae_fast.ops import _triton

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert _triton.fast_fp64(torch.device("cuda", 0)) is fast
    assert _triton.exact_acc(torch.bfloat16, torch.device("cuda", 0)) == (torch.float64 if fast else torch.float32)
    assert _triton.exact_acc(torch.float32, torch.device("cpu")) == torch.float64


def _copies(step) -> list[str]:
    """The aten ops that copy a tensor (clone, _to_copy) among those step() runs."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return [e.key for e in prof.key_averages() if e.key in ("aten::clone", "aten::_to_copy")]


def _nhwc_step(case, args, grad_outputs):
    leaves = [a.detach().requires_grad_(i in case.differentiable) if isinstance(a, torch.Tensor) else a
              for i, a in enumerate(args)]

    def step():
        outs = case.run(leaves, "triton")
        grads = torch.autograd.grad(outs, [leaves[i] for i in case.differentiable], grad_outputs)
        step.outs, step.grads = outs, grads

    return step


@interpreter
@pytest.mark.parametrize("name", list(CASES))
def test_nhwc_in_place(name):
    """channels_last in, channels_last out, no copy of any activation (forward and backward), values
    as the reference's."""
    case = CASES[name]
    args = _channels_last(case.make((2, 3, 4, 6), torch.float32, "cpu", torch.Generator().manual_seed(0)))
    ref = make_reference(case, args)
    ref = dataclasses.replace(ref, grad_outputs=_channels_last(ref.grad_outputs))
    step = _nhwc_step(case, args, ref.grad_outputs)
    assert _copies(step) == [], name
    assert step.outs[0].is_contiguous(memory_format=CL) and not step.outs[0].is_contiguous()
    for i, g in zip(case.differentiable, step.grads):
        if args[i].dim() == 4:
            assert g.stride() == args[i].stride(), f"{name}: grad of arg {i} is not in its input's layout"
    check_parity(case, args, "triton", reference=ref)
    assert _copies(lambda: args[0].contiguous()) == ["aten::clone"]  # the detector sees an NCHW copy


@interpreter
@pytest.mark.parametrize("condition", ["offset", "constant"])
@pytest.mark.parametrize("name", ["modulated_adain", "style_extract"])
def test_ill_conditioned_rows(name, condition, split_rows):
    """Rows with |mean|/std = 1e6, or constant rows, on the single, looped and split paths: as
    accurate as the same-dtype torch composition (the parity rule)."""
    case = CASES[name]
    for seed, shape in enumerate([(2, 3, 3, 5), SPLIT_SHAPE]):
        dtype = torch.float32
        args = case.make(shape, dtype, "cpu", torch.Generator().manual_seed(seed))
        x = args[0].double()
        x = x + 1e6 if condition == "offset" else torch.full_like(x, 3.0)
        args[0] = x.to(dtype)
        if name == "modulated_adain":
            args[1] = args[1] * 1e-3 if condition == "offset" else torch.zeros_like(args[1])
        check_parity(case, args, "triton", seed=seed)


@interpreter
@pytest.mark.parametrize("name", ROW_OPS)
def test_nan_row_propagates(name, split_rows):
    """A NaN in one row makes that row's output NaN, as in the reference; other rows stay finite."""
    case = CASES[name]
    for shape in ((2, 3, 3, 5), SPLIT_SHAPE):
        args = case.make(shape, torch.float32, "cpu", torch.Generator().manual_seed(0))
        args[0][0, 1, 0, 0] = float("nan")
        got = case.run(args, "triton")[0]
        want = case.run_reference(args)[0]
        assert torch.equal(got.isnan(), want.isnan()), f"{name} {shape}"
        assert got[0, 1].isnan().any() and not got[0, 0].isnan().any()


# ---------------------------------------------------------------------------------------------
# CUDA: all dtypes, shapes that reach the single and looped paths
# ---------------------------------------------------------------------------------------------
GPU_SHAPES = [(2, 3, 3, 5), (2, 3, 1, 1), (1, 1, 2, 2), (8, 64, 4, 4), (4, 8, 32, 32), (2, 4, 128, 96),
              (1, 2, 256, 256)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_parity_cuda(name, dtype):
    case = CASES[name]
    for seed, shape in enumerate(_shapes(case, GPU_SHAPES)):
        _parity(case, shape, dtype, "cuda", seed)


@pytest.mark.gpu
def test_deterministic_cuda():
    for name in CASES:
        case = CASES[name]
        args = case.make((4, 8, 128, 128), torch.float32, "cuda", torch.Generator().manual_seed(0))
        for a, b in zip(_first_grads(case, args), _first_grads(case, args)):
            assert torch.equal(a, b), name
