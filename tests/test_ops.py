"""Every fused op on every available backend against the fp64 reference."""

import pytest
import torch

from alae_fast import ops
from alae_fast.ops import _backend
from alae_fast.ops.cases import CASES, compare, to_reference

from backends import backend_devices

PAIRS = backend_devices()
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(2, 4, 8, 8), (3, 5, 6, 10), (1, 1, 2, 2), (2, 3, 1, 1), (2, 3, 3, 5), (1, 7, 4, 4)]


def _shapes_for(case):
    return [s for s in SHAPES if not case.needs_even or (s[2] % 2 == 0 and s[3] % 2 == 0)]


def _check_parity(case, args, backend, dtype, seed=0):
    """Outputs and every gradient of `backend` match the fp64 reference."""
    gen = torch.Generator().manual_seed(seed + 1)
    args = [a.detach().requires_grad_(i in case.differentiable) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(args)]
    ref_args = [a.requires_grad_(i in case.differentiable) if isinstance(a, torch.Tensor) else a
                for i, a in enumerate(to_reference(args))]
    outs = case.run(args, backend)
    refs = case.run_reference(ref_args)
    for k, (o, r) in enumerate(zip(outs, refs)):
        assert o.dtype == args[0].dtype, f"{case.name}: output {k} has dtype {o.dtype}"
        compare(o, r, dtype, f"{case.name}[{backend}] output {k}")
    grads = [torch.randn(r.shape, generator=gen, dtype=torch.float64) for r in refs]
    diff = [args[i] for i in case.differentiable]
    ref_diff = [ref_args[i] for i in case.differentiable]
    got = torch.autograd.grad(outs, diff, [g.to(o.device, o.dtype) for g, o in zip(grads, outs)])
    want = torch.autograd.grad(refs, ref_diff, grads)
    for i, g, w in zip(case.differentiable, got, want):
        assert g.dtype == args[i].dtype, f"{case.name}: grad of arg {i} has dtype {g.dtype}"
        compare(g, w, dtype, f"{case.name}[{backend}] grad of arg {i}")


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_parity(name, dtype, backend, device):
    case = CASES[name]
    for seed, shape in enumerate(_shapes_for(case)):
        gen = torch.Generator().manual_seed(seed)
        _check_parity(case, case.make(shape, dtype, device, gen), backend, dtype, seed)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("name", list(CASES))
def test_layouts(name, layout, backend, device):
    case = CASES[name]
    args = case.make((2, 4, 6, 8), torch.float32, device, torch.Generator().manual_seed(3))
    if layout == "channels_last":
        args = [a.to(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                for a in args]
    else:  # every 4-D input becomes a strided view of a larger tensor
        args = [torch.cat([a, a], dim=3)[..., ::2] if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                for a in args]
        assert not args[0].is_contiguous()
    _check_parity(case, args, backend, torch.float32)


def test_zero_variance_rows():
    """Constant rows: IN output is 0 and gradients stay finite on every backend."""
    for backend, device in PAIRS:
        for name in ("modulated_adain", "style_extract"):
            case = CASES[name]
            args = case.make((2, 3, 4, 4), torch.float64, device, torch.Generator().manual_seed(0))
            args[0] = torch.full_like(args[0], 2.0)
            if name == "modulated_adain":
                args[1] = torch.zeros_like(args[1])
            _check_parity(case, args, backend, torch.float64)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name, backend, device):
    case = CASES[name]
    shape = (2, 3, 4, 6)
    args = case.make(shape, torch.float64, device, torch.Generator().manual_seed(5))
    diff = list(case.differentiable)

    def fn(*tensors):
        full = list(args)
        for i, t in zip(diff, tensors):
            full[i] = t
        return case.run(full, backend)

    inputs = tuple(args[i].detach().requires_grad_() for i in diff)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5)


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
        torch.ops.alae_fast_C.adain_fwd(x, torch.randn(2, 2, 4, 4), torch.randn(3), torch.randn(3), torch.randn(2, 6))
    with pytest.raises(RuntimeError, match="argument 'x' must be contiguous"):
        torch.ops.alae_fast_C.style_fwd(x.transpose(2, 3), torch.randn(3))
    with pytest.raises(RuntimeError, match="argument 'bias' must have dtype Float"):
        torch.ops.alae_fast_C.noise_fwd(x, torch.randn(2, 1, 4, 4), torch.randn(3), torch.randn(3).double(), True)
