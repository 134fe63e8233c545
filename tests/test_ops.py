"""Every fused op on every backend against the fp64 reference, under the parity rule of
testing.op_cases (at most 2x PyTorch's own error in the same dtype), and the ops' edge cases:
zero-size inputs, noise gradients, scalar arguments. The cuda and triton-cuda parametrizations
carry the `gpu` mark (tests/backends.py)."""

import dataclasses
from unittest import mock

import pytest
import torch

from alae_fast import ops
from alae_fast.ops import _backend
from alae_fast.ops.adain import op as adain_module
from alae_fast.ops.noise import op as noise_module
from testing.op_cases import CASES, check_parity, make_reference

from backends import EVERY_BACKEND, KERNELS

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(2, 4, 8, 8), (3, 5, 6, 10), (1, 1, 2, 2), (2, 3, 1, 1), (2, 3, 3, 5), (1, 7, 4, 4)]


def _shapes_for(case):
    return [s for s in SHAPES if not case.needs_even or (s[2] % 2 == 0 and s[3] % 2 == 0)]


def _make(case, shape, dtype, device, seed=0):
    return case.make(shape, dtype, device, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_parity(name, dtype, backend, device):
    case = CASES[name]
    for seed, shape in enumerate(_shapes_for(case)):
        check_parity(case, _make(case, shape, dtype, device, seed), backend, seed=seed)


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("name", list(CASES))
def test_layouts(name, layout, backend, device):
    case = CASES[name]
    args = _make(case, (2, 4, 6, 8), torch.float32, device, seed=3)
    if layout == "channels_last":
        args = [a.to(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                for a in args]
    else:  # every 4-D input becomes a strided view of a larger tensor
        args = [torch.cat([a, a], dim=3)[..., ::2] if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                for a in args]
        assert not args[0].is_contiguous()
    check_parity(case, args, backend)


_BACKWARD_KERNELS = {"modulated_adain": "adain_bwd", "style_extract": "style_bwd"}


@pytest.mark.parametrize("backend,device", [b for b in EVERY_BACKEND if b.values[0] != "ref"])
@pytest.mark.parametrize("x_nhwc,grad_nhwc", [(True, False), (False, True)], ids=["nhwc-x", "nhwc-grad"])
@pytest.mark.parametrize("name", list(_BACKWARD_KERNELS))
def test_cotangent_in_the_other_layout(name, x_nhwc, grad_nhwc, backend, device, monkeypatch):
    """An upstream gradient laid out unlike x reaches the backward kernel in x's layout (the CUDA
    kernels refuse a mismatch), and the gradients keep the parity rule."""
    case = CASES[name]
    args = _make(case, (2, 5, 4, 6), torch.float32, device, seed=4)
    if x_nhwc:
        args[0] = args[0].to(memory_format=torch.channels_last)
    seen = []
    real_kernel = _backend.kernel

    def spy(backend_name, kernel_name):
        fn = real_kernel(backend_name, kernel_name)
        if kernel_name != _BACKWARD_KERNELS[name]:
            return fn

        def recorded(grad_y, *rest):
            x = rest[1] if kernel_name == "style_bwd" else rest[0]  # style_bwd(grad_y, grad_stats, x, ...)
            seen.append((_backend.is_nhwc(grad_y), _backend.is_nhwc(x)))
            return fn(grad_y, *rest)
        return recorded

    monkeypatch.setattr(_backend, "kernel", spy)
    ref = make_reference(case, args, seed=4)
    fmt = torch.channels_last if grad_nhwc else torch.contiguous_format
    ref = dataclasses.replace(ref, grad_outputs=[g.contiguous(memory_format=fmt) if g.dim() == 4 else g
                                                  for g in ref.grad_outputs])
    check_parity(case, args, backend, reference=ref)
    assert seen and all(g == x for g, x in seen), f"{name}[{backend}]: grad_y/x layouts (NHWC?) {seen}"


@pytest.mark.parametrize("backend,device", EVERY_BACKEND)
@pytest.mark.parametrize("name", ["modulated_adain", "style_extract"])
def test_zero_variance_rows(name, backend, device):
    """Constant rows: IN output is 0 and gradients stay finite (d std = 0 at std = 0)."""
    case = CASES[name]
    args = _make(case, (2, 3, 4, 4), torch.float64, device)
    args[0] = torch.full_like(args[0], 2.0)
    if name == "modulated_adain":
        args[1] = torch.zeros_like(args[1])
    check_parity(case, args, backend)


def _gradcheck(case, args, backend):
    diff = list(case.differentiable)

    def fn(*tensors):
        full = list(args)
        for i, t in zip(diff, tensors):
            full[i] = t
        return case.run(full, backend)

    inputs = tuple(args[i].detach().requires_grad_() for i in diff)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name, backend, device):
    case = CASES[name]
    _gradcheck(case, _make(case, (2, 3, 4, 6), torch.float64, device, seed=5), backend)


# ---------------------------------------------------------------------------------------------
# Edge cases, the same on every backend
# ---------------------------------------------------------------------------------------------
def _with_noise_grad(case):
    """The case with the noise map (argument 1) differentiable too, as a noise-optimising projector has it."""
    return dataclasses.replace(case, differentiable=tuple(sorted({1, *case.differentiable})))


NOISE_OPS = ["modulated_adain", "noise_inject"]


@pytest.mark.parametrize("backend,device", EVERY_BACKEND)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NOISE_OPS)
def test_noise_gradient(name, dtype, backend, device):
    """The noise map gets a real gradient on every backend when it requires one."""
    case = _with_noise_grad(CASES[name])
    check_parity(case, _make(case, (2, 5, 3, 4), dtype, device), backend)


@pytest.mark.parametrize("backend,device", KERNELS)
@pytest.mark.parametrize("name", NOISE_OPS)
def test_noise_gradcheck(name, backend, device):
    case = _with_noise_grad(CASES[name])
    _gradcheck(case, _make(case, (2, 3, 4, 6), torch.float64, device, seed=5), backend)


ZERO_SHAPES = [(0, 3, 4, 4), (2, 0, 4, 4), (2, 3, 0, 4), (2, 3, 4, 0)]


@pytest.mark.parametrize("backend,device", EVERY_BACKEND)
@pytest.mark.parametrize("shape", ZERO_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(CASES))
def test_zero_size(name, shape, backend, device):
    """Empty batches, channels and images give empty outputs and zero parameter gradients."""
    case = CASES[name]
    if name == "style_extract" and shape[2] * shape[3] == 0:
        pytest.skip("style_extract refuses H·W = 0 (test_style_refuses_empty_rows)")
    check_parity(case, _make(case, shape, torch.float32, device), backend)


@pytest.mark.parametrize("backend,device", EVERY_BACKEND)
def test_style_refuses_empty_rows(backend, device):
    """The style (mean, std) of a row without pixels is undefined: every backend refuses it."""
    for shape in ((2, 3, 0, 4), (0, 3, 4, 0)):
        x, bias = _make(CASES["style_extract"], shape, torch.float32, device)
        with pytest.raises(ValueError, match=r"style_extract: argument 'x' has no pixels \(H = \d, W = \d\)"):
            ops.style_extract(x, bias, impl=backend)


@pytest.mark.parametrize("backend,device", EVERY_BACKEND)
def test_scalar_arguments(backend, device):
    """alpha, slope and act are checked on every backend: a clear error names the argument."""
    x, noise, weight, bias = _make(CASES["noise_inject"], (2, 3, 4, 4), torch.float32, device)
    for act in ("no", 1, None):
        with pytest.raises(TypeError, match=r"noise_inject: argument 'act' must be True or False, got"):
            ops.noise_inject(x, noise, weight, bias, act=act, impl=backend)
    low, high = torch.randn(2, 3, 2, 2, device=device), torch.randn(2, 3, 4, 4, device=device)
    img, w, b = torch.randn(2, 3, 4, 4, device=device), torch.randn(5, 3, device=device), torch.randn(5, device=device)
    new = torch.randn(2, 5, 2, 2, device=device)
    calls = {"blend_up": lambda a: ops.blend_up(low, high, a, impl=backend),
             "blend_real": lambda a: ops.blend_real(high, a, impl=backend),
             "blend_down": lambda a: ops.blend_down(img, w, b, new, a, impl=backend)}
    for op, call in calls.items():
        for alpha, exc, msg in ((float("nan"), ValueError, "must be finite"), (float("inf"), ValueError, "finite"),
                                (1.5, ValueError, r"must be in \[0, 1\]"), (True, TypeError, "real number"),
                                ("0.5", TypeError, "real number"), (torch.tensor(0.5), TypeError, "real number")):
            with pytest.raises(exc, match=f"{op}: argument 'alpha' .*{msg}"):
                call(alpha)
    for slope, exc, msg in ((float("nan"), ValueError, "must be finite"), (-float("inf"), ValueError, "finite"),
                            (-0.1, ValueError, "must be >= 0"), ("0.2", TypeError, "real number")):
        with pytest.raises(exc, match=f"blend_down: argument 'slope' .*{msg}"):
            ops.blend_down(img, w, b, new, 0.5, slope=slope, impl=backend)
    assert ops.blend_down(img, w, b, new, 0, slope=0, impl=backend).shape == new.shape  # ints and 0 are fine


# ---------------------------------------------------------------------------------------------
# The parity rule still catches real errors
# ---------------------------------------------------------------------------------------------
def _patched(function, module, name, value):
    """`function` (a reference op) run with module.<name> = value: a faulty backend."""
    def faulty(*args, impl):
        with mock.patch.object(module, name, value):
            return function(*args)
    return faulty


def _std_gradient_dropped(x, bias, *, impl):
    y, style = ops.style_extract_ref(x, bias)
    c = x.shape[1]
    return y, torch.cat([style[:, :c], style[:, c:].detach()], 1)


FAULTS = {  # name: (op, faulty public op, dtypes in which the rule must catch it)
    "adain eps 1e-5 for 1e-8": ("modulated_adain", _patched(ops.modulated_adain_ref, adain_module, "EPS", 1e-5),
                                [torch.float32]),
    "noise slope 0.21 for 0.2": ("noise_inject", _patched(CASES["noise_inject"].reference, noise_module, "SLOPE", 0.21),
                                 [torch.float32, torch.bfloat16]),
    "style std gradient dropped": ("style_extract", _std_gradient_dropped, [torch.float32, torch.bfloat16]),
}


@pytest.mark.parametrize("fault,dtype", [(f, d) for f, (_, _, dtypes) in FAULTS.items() for d in dtypes],
                         ids=lambda v: str(v))
def test_parity_rule_catches_injected_errors(fault, dtype):
    name, faulty, _ = FAULTS[fault]
    case = CASES[name]
    args = _make(case, (2, 4, 4, 4), dtype, "cpu")
    check_parity(case, args, "ref")  # the same inputs pass without the fault
    with pytest.raises(AssertionError, match="limit"):
        check_parity(dataclasses.replace(case, public=faulty), args, "ref")


def test_auto_dispatch_and_override(monkeypatch):
    x = torch.randn(2, 3, 4, 4)
    expected = "cpu" if _backend.EXT_LOADED else "ref"
    assert _backend.resolve("auto", x) == expected
    ops.set_default_impl("ref")
    try:
        assert _backend.resolve("auto", x) == "ref"
        assert _backend.resolve("cpu", x) == "cpu" or not _backend.EXT_LOADED
    finally:
        ops.set_default_impl("auto")
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.set_default_impl("fast")
    with pytest.raises(RuntimeError, match="impl='cuda' is unavailable: impl='cuda' needs CUDA tensors"):
        ops.blend_real(x, 0.5, impl="cuda")


def test_use_impl_nests_restores_and_reaches_compiled_code():
    x = torch.randn(2, 3, 4, 4)
    automatic = _backend.resolve("auto", x)
    with ops.use_impl("ref"):
        assert _backend.resolve("auto", x) == "ref"
        with ops.use_impl("auto"):
            assert _backend.resolve("auto", x) == automatic
        assert _backend.resolve("auto", x) == "ref"
        assert _backend.resolve("cpu", x) == "cpu" or not _backend.EXT_LOADED  # explicit impl wins
    with pytest.raises(KeyError), ops.use_impl("ref"):
        raise KeyError("restored on error")
    assert _backend.resolve("auto", x) == automatic
    with pytest.raises(ValueError, match="impl must be one of"), ops.use_impl("fast"):
        pass

    seen = []
    real_resolve = _backend.resolve

    def recording_resolve(impl, tensor, **kwargs):
        seen.append(real_resolve(impl, tensor, **kwargs))
        return seen[-1]

    fn = torch.compile(lambda t: ops.blend_real(t, 0.5), fullgraph=True, backend="eager")
    with mock.patch.object(_backend, "resolve", recording_resolve):
        with ops.use_impl("ref"):
            fn(x)
        fn(x)  # outside the block: the guard on the block's backend retraces
    assert seen == ["ref", automatic]


def test_env_override(monkeypatch):
    monkeypatch.setenv("ALAE_FAST_IMPL", "ref")
    assert _backend._read_env_impl() == "ref"
    monkeypatch.setenv("ALAE_FAST_IMPL", "nope")
    with pytest.raises(ValueError, match="ALAE_FAST_IMPL"):
        _backend._read_env_impl()


def test_compile_fullgraph_no_graph_break():
    """All ops, forward and backward, in one torch.compile(fullgraph=True) graph."""
    gen = torch.Generator().manual_seed(0)
    a = CASES["modulated_adain"].make((2, 4, 8, 8), torch.float32, "cpu", gen)
    a[0].requires_grad_()
    w, b = torch.randn(4, 3), torch.randn(4)

    def step(x, noise, wn, bias, style, img):
        y = ops.modulated_adain(x, noise, wn, bias, style)
        y = ops.noise_inject(y, noise, wn, bias, act=True)
        y, s = ops.style_extract(y, bias)
        y = ops.blend_up(y[:, :, ::2, ::2].contiguous(), y, 0.25)
        y = ops.blend_down(ops.blend_real(img, 0.5), w, b, y[:, :, ::2, ::2].contiguous(), 0.75)
        return y.square().mean() + s.square().mean()

    img = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(*a, img)
    (gx,) = torch.autograd.grad(loss, a[0])
    loss_ref = step(*a, img)
    (gx_ref,) = torch.autograd.grad(loss_ref, a[0])
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(gx, gx_ref)


def test_compile_inductor_fullgraph():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    bias = torch.randn(4)
    fn = torch.compile(lambda x: ops.style_extract(x, bias)[1].sum(), fullgraph=True)
    fn(x).backward()
    assert torch.isfinite(x.grad).all()


BAD = [
    ("x", lambda a: a.__setitem__(0, a[0].long()), TypeError, r"argument 'x' must be float16/bfloat16/float32/float64"),
    ("x", lambda a: a.__setitem__(0, a[0][0]), ValueError, r"argument 'x' must have shape \[N, C, H, W\], got rank 3"),
    ("noise", lambda a: a.__setitem__(1, a[1].expand(-1, 2, -1, -1)), ValueError,
     r"argument 'noise' must have shape \[N, 1, H, W\] = \[2, 1, 4, 4\], got \[2, 2, 4, 4\]"),
    ("bias", lambda a: a.__setitem__(3, a[3][:2]), ValueError, r"argument 'bias' must have shape \[C\] = \[3\], got \[2\]"),
    ("style", lambda a: a.__setitem__(4, a[4][:, :3]), ValueError,
     r"argument 'style' must have shape \[N, 2C\] = \[2, 6\], got \[2, 3\]"),
    ("device", lambda a: a.__setitem__(2, a[2].to("meta")), ValueError, r"argument 'noise_weight' is on meta but x is on cpu"),
]


@pytest.mark.parametrize("arg,mutate,exc,msg", BAD, ids=[b[0] + str(i) for i, b in enumerate(BAD)])
@pytest.mark.parametrize("impl", ["ref", "auto"])
def test_bad_input_names_argument(arg, mutate, exc, msg, impl):
    args = CASES["modulated_adain"].make((2, 3, 4, 4), torch.float32, "cpu", torch.Generator().manual_seed(0))
    mutate(args)
    with pytest.raises(exc, match=msg):
        ops.modulated_adain(*args, impl=impl)


def test_bad_input_other_ops():
    x = torch.randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match="argument 'x' needs even H and W"):
        ops.blend_real(x, 0.5)
    with pytest.raises(ValueError, match="argument 'alpha' must be in"):
        ops.blend_real(torch.randn(1, 1, 2, 2), 1.5)
    with pytest.raises(ValueError, match=r"argument 'low' must have shape \[N, C, H/2, W/2\]"):
        ops.blend_up(torch.randn(2, 3, 3, 3), torch.randn(2, 3, 4, 4), 0.5)
    with pytest.raises(TypeError, match="argument 'low' has dtype torch.float64 but 'high'"):
        ops.blend_up(torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 3, 4, 4), 0.5)
    with pytest.raises(ValueError, match=r"argument 'weight' must have shape \[C, K\] = \[4, 3\]"):
        ops.blend_down(torch.randn(2, 3, 4, 4), torch.randn(4, 2), torch.randn(4), torch.randn(2, 4, 2, 2), 0.5)
    with pytest.raises(ValueError, match=r"argument 'bias' must have shape \[C\] = \[3\]"):
        ops.style_extract(x, torch.randn(4))
    with pytest.raises(ValueError, match=r"argument 'noise_weight' must have shape \[C\] = \[3\]"):
        ops.noise_inject(x, torch.randn(2, 1, 5, 5), torch.randn(1))


@pytest.mark.skipif(not _backend.EXT_LOADED, reason="needs alae_fast._C")
def test_kernel_checks_name_argument():
    """The C++ kernels check their contract too, for callers that bypass the Python wrapper."""
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(RuntimeError, match=r"argument 'noise' must have shape \[N, 1, H, W\] = \[2, 1, 4, 4\]"):
        torch.ops.alae_fast_C.adain_fwd(x, torch.randn(2, 2, 4, 4), torch.randn(3), torch.randn(3), torch.randn(2, 6), 1e-8, 0.2)
    with pytest.raises(RuntimeError, match="argument 'x' must be contiguous"):
        torch.ops.alae_fast_C.style_fwd(x.transpose(2, 3), torch.randn(3), 1e-5, 0.2)
    with pytest.raises(RuntimeError, match="argument 'bias' must have dtype Float"):
        torch.ops.alae_fast_C.noise_fwd(x, torch.randn(2, 1, 4, 4), torch.randn(3), torch.randn(3).double(), True, 0.2)
    with pytest.raises(RuntimeError, match=r"style_bwd: argument 'x' has no pixels \(H = 0, W = 4\)"):
        empty = torch.randn(2, 3, 0, 4)
        torch.ops.alae_fast_C.style_bwd(empty, torch.randn(2, 6), empty, torch.randn(3), torch.randn(2, 6), 1e-5, 0.2)
    img, weight, bias, new = torch.randn(1, 3, 4, 4), torch.randn(2, 3), torch.randn(2), torch.randn(1, 2, 2, 2)
    for slope in (float("nan"), float("inf"), -0.5):
        with pytest.raises(RuntimeError, match=r"blend_down_bwd: argument 'slope' must be finite and >= 0"):
            torch.ops.alae_fast_C.blend_down_bwd(new, img, weight, bias, 0.5, slope)
