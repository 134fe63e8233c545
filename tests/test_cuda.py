"""The CUDA kernels (impl='cuda') beyond tests/test_ops.py: odd and large shapes, every
packed-row bucket, the split-row path and its single-chunk kernels (forced at small shapes with
ALAE_FAST_CUDA_ROW_CHUNK: a chunk >= H·W gives one chunk per row),
NHWC without copies, ill-conditioned and NaN/inf rows, layouts and misaligned storage, bitwise
determinism, and the kernels' own argument checks. Every test needs a CUDA device and a CUDA build of _C.
tests/test_ops.py runs the shared op tests (parity, gradcheck, edge cases) on 'cuda' too."""

import pytest
import torch

from alae_fast.ops import _backend
from testing.op_cases import CASES, check_parity

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# H·W = 1, 3×5, 7×7 and C = 1 for the ops without 2×2 resampling; even stand-ins for the others.
ODD_SHAPES = [(2, 3, 1, 1), (2, 3, 3, 5), (3, 2, 7, 7), (2, 1, 5, 3)]
EVEN_SHAPES = [(2, 3, 2, 2), (2, 3, 6, 10), (3, 2, 14, 14), (2, 1, 6, 2)]
# Row lengths either side of each packed bucket (1K, 4K) and of the old 16K one, and well into
# the split path.
BUCKET_HW = [(32, 32), (25, 41), (64, 64), (65, 63), (128, 128), (129, 127), (256, 256)]
LARGE = (1, 1, 1024, 1024)


@pytest.fixture(autouse=True)
def _cuda_build():
    assert _backend.EXT_HAS_CUDA, "alae_fast._C was built without CUDA; rebuild it on this GPU machine"


def _make(case, shape, dtype, seed=0):
    return case.make(shape, dtype, "cuda", torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_odd_shapes(name, dtype):
    case = CASES[name]
    for seed, shape in enumerate(EVEN_SHAPES if case.needs_even else ODD_SHAPES):
        check_parity(case, _make(case, shape, dtype, seed), "cuda", seed=seed)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_megapixel(name, dtype):
    case = CASES[name]
    check_parity(case, _make(case, LARGE, dtype), "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("hw", BUCKET_HW, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("name", ["modulated_adain", "style_extract", "noise_inject"])
def test_row_buckets(name, hw, dtype):
    case = CASES[name]
    check_parity(case, _make(case, (2, 3) + hw, dtype), "cuda")


def test_looped_path_offset_rows():
    """Rows far from zero mean with small spread: the looped path's shifted sums stay accurate."""
    case = CASES["style_extract"]
    args = _make(case, (2, 2, 256, 256), torch.float32)
    args[0] = args[0] * 0.01 + 100.0
    check_parity(case, args, "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "strided", "misaligned"])
@pytest.mark.parametrize("name", list(CASES))
def test_layouts(name, layout, dtype):
    """Vector-width rows in other layouts, and contiguous tensors whose data is not 16-byte aligned
    (the scalar fallback)."""
    case = CASES[name]
    args = _make(case, (2, 4, 32, 32), dtype)

    def relayout(a):
        if not isinstance(a, torch.Tensor) or a.dim() != 4:
            return a
        if layout == "channels_last":
            return a.to(memory_format=torch.channels_last)
        if layout == "strided":
            return torch.cat([a, a], dim=3)[..., ::2]
        flat = torch.empty(a.numel() + 1, dtype=a.dtype, device=a.device)
        view = flat[1:].view(a.shape)
        view.copy_(a)
        return view

    args = [relayout(a) for a in args]
    check_parity(case, args, "cuda")


def _outputs_and_grads(case, args, seed):
    args = [a.detach().clone().requires_grad_(i in case.differentiable) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(args)]
    outs = case.run(args, "cuda")
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(o.shape, generator=gen).to("cuda", o.dtype) for o in outs]
    got = torch.autograd.grad(outs, [args[i] for i in case.differentiable], grads)
    return [o.detach() for o in outs] + list(got)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(64, 8, 16, 16), (256, 4, 4, 4), (4, 2, 256, 256)], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_deterministic(name, shape, dtype):
    """Two runs give identical bits for every output and every gradient (per-channel ones included)."""
    case = CASES[name]
    args = _make(case, shape, dtype)
    first = _outputs_and_grads(case, args, 1)
    second = _outputs_and_grads(case, args, 1)
    for k, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"{name}: result {k} differs between two identical runs"


def _adain_kernel_args():
    return _make(CASES["modulated_adain"], (2, 3, 4, 4), torch.float32)


def test_kernel_rejects_cpu_argument():
    x, noise, wn, b, style = _adain_kernel_args()
    with pytest.raises(RuntimeError, match=r"adain_fwd: argument 'noise' is on cpu, expected cuda"):
        torch.ops.alae_fast_C.adain_fwd(x, noise.cpu(), wn, b, style, 1e-8, 0.2)
    with pytest.raises(RuntimeError, match=r"adain_fwd: argument 'x' must be a CUDA tensor, got cpu"):
        torch.ops.alae_fast_C.adain_fwd(x.cpu(), noise, wn, b, style, 1e-8, 0.2)
    with pytest.raises(RuntimeError, match=r"style_bwd: argument 'stats' is on cpu"):
        y, stats = torch.ops.alae_fast_C.style_fwd(x, b, 1e-5, 0.2)
        torch.ops.alae_fast_C.style_bwd(y, stats, x, b, stats.cpu(), 1e-5, 0.2)


def test_kernel_rejects_bad_dtype_shape_layout():
    x, noise, wn, b, style = _adain_kernel_args()
    with pytest.raises(RuntimeError, match=r"argument 'noise_weight' must have dtype Float, got Half"):
        torch.ops.alae_fast_C.adain_fwd(x, noise, wn.half(), b, style, 1e-8, 0.2)
    with pytest.raises(RuntimeError, match=r"argument 'style' must have shape \[N, 2C\]"):
        torch.ops.alae_fast_C.adain_fwd(x, noise, wn, b, style[:, :3], 1e-8, 0.2)
    with pytest.raises(RuntimeError, match=r"argument 'x' must be contiguous"):
        torch.ops.alae_fast_C.adain_fwd(x.transpose(2, 3), noise, wn, b, style, 1e-8, 0.2)
    with pytest.raises(RuntimeError, match=r"noise_fwd: argument 'bias' must have shape \[C\]"):
        torch.ops.alae_fast_C.noise_fwd(x, noise, wn, b[:2], True, 0.2)
    with pytest.raises(RuntimeError, match=r"blend_real_fwd: argument 'x' needs even H and W"):
        torch.ops.alae_fast_C.blend_real_fwd(x[..., :3].contiguous(), 0.5)
    with pytest.raises(RuntimeError, match=r"blend_up_fwd: argument 'alpha' must be in \[0, 1\]"):
        torch.ops.alae_fast_C.blend_up_fwd(x[..., :2, :2].contiguous(), x, 2.0)
    with pytest.raises(RuntimeError, match=r"style_fwd: argument 'x' has no pixels \(H = 0, W = 4\)"):
        torch.ops.alae_fast_C.style_fwd(x[:, :, :0].contiguous(), b, 1e-5, 0.2)
    img, weight, new = x[:, :, :, :4].contiguous(), torch.randn(2, 3, device="cuda"), x[:, :2, :2, :2].contiguous()
    for slope in (float("nan"), float("inf"), -0.5):
        with pytest.raises(RuntimeError, match=r"blend_down_fwd: argument 'slope' must be finite and >= 0"):
            torch.ops.alae_fast_C.blend_down_fwd(img, weight, b[:2].contiguous(), new, 0.5, slope)


def test_blend_down_refuses_wide_images():
    img = torch.randn(2, 5, 4, 4, device="cuda")
    weight, bias, new = torch.randn(3, 5, device="cuda"), torch.randn(3, device="cuda"), torch.randn(
        2, 3, 2, 2, device="cuda")
    with pytest.raises(RuntimeError, match=r"blend_down_fwd: argument 'img' has K = 5 channels"):
        torch.ops.alae_fast_C.blend_down_fwd(img, weight, bias, new, 0.5, 0.04)


def test_other_device_index():
    """Kernels launch on the device of their inputs, not the current one."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    case = CASES["modulated_adain"]
    args = [a.to("cuda:1") if isinstance(a, torch.Tensor) else a for a in _make(case, (2, 3, 8, 8), torch.float32)]
    with torch.cuda.device(0):
        check_parity(case, args, "cuda")


# ---------------------------------------------------------------------------------------------
# Row statistics (modulated_adain, style_extract): packed rows, split rows, NHWC, conditioning.

ROW_OPS = ["modulated_adain", "style_extract"]
ROW_CHUNK_ENV = "ALAE_FAST_CUDA_ROW_CHUNK"  # read by the CUDA row planner on every call


@pytest.fixture
def split_rows(monkeypatch):
    """Every NCHW row goes through the split kernels in chunks of 256 elements."""
    monkeypatch.setenv(ROW_CHUNK_ENV, "256")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 33, 31), (1, 2, 7, 9), (3, 1, 1, 1)], ids=str)
@pytest.mark.parametrize("name", ROW_OPS)
def test_split_rows(name, shape, dtype, split_rows):
    """The split path at small shapes: several chunks (1024 and 1023 elements, the latter scalar),
    a single chunk shorter than the chunk length, and one-element rows."""
    case = CASES[name]
    check_parity(case, _make(case, shape, dtype), "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(4, 256, 65, 65), (8, 128, 64, 72)], ids=str)
@pytest.mark.parametrize("name", ROW_OPS)
def test_single_chunk_rows(name, shape, dtype):
    """NCHW rows past the packed buckets with enough rows (1024) to fill the GPU unsplit: one
    kernel per direction (moments or sums, then the normalisation or grad_x), odd rows on the
    scalar path and vector-width rows."""
    case = CASES[name]
    check_parity(case, _make(case, shape, dtype), "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ROW_OPS)
def test_split_matches_packed(name, dtype, monkeypatch):
    """Split and packed rows compute the same statistics (up to rounding)."""
    case = CASES[name]
    args = _make(case, (4, 3, 16, 16), dtype)
    packed = case.run(args, "cuda")
    monkeypatch.setenv(ROW_CHUNK_ENV, "128")
    split = case.run(args, "cuda")
    for a, b in zip(packed, split):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 5, 4, 4), (7, 3, 16, 16), (2, 3, 5, 5), (5, 3, 9, 7), (1, 3, 48, 48)],
                         ids=str)
@pytest.mark.parametrize("name", ROW_OPS)
def test_packed_rows(name, shape, dtype):
    """Several rows per block (8 and 32 lanes per row) with a partly empty last block, odd rows
    on the scalar path, and the 256-lane bucket."""
    case = CASES[name]
    check_parity(case, _make(case, shape, dtype), "cuda")


def _channels_last(args):
    return [a.to(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
            for a in args]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2, 40, 8, 8), (2, 4, 33, 31), (1, 8, 128, 128)], ids=str)
@pytest.mark.parametrize("name", ROW_OPS)
def test_nhwc_parity(name, shape, dtype):
    """NHWC rows: a partial 32-channel tile, odd rows, and rows split over several blocks."""
    case = CASES[name]
    check_parity(case, _channels_last(_make(case, shape, dtype)), "cuda")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ROW_OPS)
def test_nhwc_split_rows(name, dtype, split_rows):
    """NHWC rows forced into chunks of 256 elements (576 = 256 + 256 + 64) with a partial 32-channel
    tile, in every dtype: the NHWC tiles of both forward kernels and of both backward kernels."""
    case = CASES[name]
    check_parity(case, _channels_last(_make(case, (2, 35, 24, 24), dtype)), "cuda")


@pytest.mark.parametrize("name", ROW_OPS)
def test_nhwc_no_copy(name):
    """A channels_last x gives a channels_last y and gradient, and nothing is copied on the way."""
    case = CASES[name]
    args = _channels_last(_make(case, (2, 64, 16, 16), torch.float32))
    args = [a.requires_grad_() if i in case.differentiable else a for i, a in enumerate(args)]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        outs = case.run(args, "cuda")
        grads = torch.autograd.grad(outs[0], args[0], torch.randn_like(outs[0]))
    assert outs[0].is_contiguous(memory_format=torch.channels_last) and not outs[0].is_contiguous()
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    copies = [e.name for e in prof.events() if e.name in ("aten::copy_", "aten::clone")]
    assert not copies, f"{name}: NHWC input was copied: {copies}"


@pytest.mark.parametrize("layout", ["split", "single-chunk", "nhwc"])
@pytest.mark.parametrize("name", ROW_OPS)
def test_row_paths_deterministic(name, layout, monkeypatch):
    """The split, single-chunk and NHWC paths give identical bits on two runs (fixed-order merges,
    no atomics)."""
    case = CASES[name]
    args = _make(case, (2, 48, 64, 64), torch.float32)
    if layout in ("split", "single-chunk"):
        monkeypatch.setenv(ROW_CHUNK_ENV, "512" if layout == "split" else "4096")
    else:
        args = _channels_last(args)
    first = _outputs_and_grads(case, args, 1)
    second = _outputs_and_grads(case, args, 1)
    for k, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"{name} ({layout}): result {k} differs between two identical runs"


def _ill_conditioned(case, shape, dtype, ratio, seed=0):
    """Rows with |mean| / std = ratio (ratio = inf: zero variance), positive so that the leaky
    ReLU is linear; adain's noise is zeroed so that it does not change the conditioning."""
    args = _make(case, shape, dtype, seed)
    gen = torch.Generator().manual_seed(seed)
    spread = 0.0 if ratio == float("inf") else 1.0
    offset = 1.0 if ratio == float("inf") else ratio
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * spread + offset).to("cuda", dtype)
    args[0] = x
    if case.name == "modulated_adain":
        args[1] = torch.zeros_like(args[1])
    return args


@pytest.mark.parametrize("ratio", [1e4, 1e6, float("inf")], ids=str)
@pytest.mark.parametrize("path", ["packed-8", "packed-256", "split", "single-chunk", "nhwc"])
@pytest.mark.parametrize("name", ROW_OPS)
def test_ill_conditioned_rows(name, path, ratio, monkeypatch):
    """Rows far from zero mean, and constant rows, in fp32: within the parity rule of the fp64
    reference on every path (shifted/Chan moments, centred backward)."""
    case = CASES[name]
    shape = {"packed-8": (4, 3, 8, 8), "packed-256": (2, 3, 64, 64), "split": (2, 3, 64, 64),
             "single-chunk": (2, 3, 64, 64), "nhwc": (2, 33, 32, 32)}[path]
    args = _ill_conditioned(case, shape, torch.float32, ratio)
    if path in ("split", "single-chunk"):
        monkeypatch.setenv(ROW_CHUNK_ENV, "384" if path == "split" else "4096")
    if path == "nhwc":
        args = _channels_last(args)
    check_parity(case, args, "cuda")


@pytest.mark.parametrize("path", ["packed", "split", "single-chunk", "nhwc"])
@pytest.mark.parametrize("name", ROW_OPS)
def test_nan_inf_rows(name, path, monkeypatch):
    """A NaN or an inf in a row gives the reference's NaN/inf pattern for that row (a NaN
    variance propagates), and leaves the other rows finite and correct."""
    case = CASES[name]
    args = _make(case, (2, 3, 16, 16), torch.float32)
    x = args[0].clone()
    x[0, 0, 3, 5] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[1, 2, 7, 7] = float("-inf")
    args[0] = x
    if path in ("split", "single-chunk"):
        monkeypatch.setenv(ROW_CHUNK_ENV, "128" if path == "split" else "1024")
    if path == "nhwc":
        args = _channels_last(args)
    got = case.run(args, "cuda")
    ref = case.run_reference(args)
    for k, (g, r) in enumerate(zip(got, ref)):
        assert torch.equal(torch.isnan(g), torch.isnan(r)), f"{name} ({path}): output {k} NaN pattern differs"
        assert torch.equal(torch.isinf(g), torch.isinf(r)), f"{name} ({path}): output {k} inf pattern differs"
        finite = torch.isfinite(r)
        torch.testing.assert_close(g[finite].float(), r[finite].float(), rtol=1e-5, atol=1e-5)
