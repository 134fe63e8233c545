"""Argument checks, tiling and launch helpers shared by the Triton kernels.

The checks mirror the C++ ones: errors name the op and the argument. Activations may be NCHW or
NHWC (channels_last); kernels take an NHWC flag, and every activation of one launch shares x's layout.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from alae_fast.ops._backend import empty_dense_like, is_nhwc

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _read_autotune() -> bool:
    value = os.environ.get("ALAE_FAST_TRITON_AUTOTUNE", "1")
    if value not in ("0", "1"):
        raise ValueError(f"ALAE_FAST_TRITON_AUTOTUNE must be 0 (one fixed config per launch, as the tests use) "
                         f"or 1 (autotune on GPU, the default), got {value!r}")
    return value == "1" and not INTERPRET


# On GPU, launches autotune their BLOCK and num_warps unless ALAE_FAST_TRITON_AUTOTUNE=0, which
# takes one fixed config per launch: each shape then compiles once, as the tests need.
AUTOTUNE = _read_autotune()

# Row kernels keep a whole row in registers up to ROW_SINGLE_MAX elements, else loop over it.
# The interpreter uses small sizes so that small test rows reach the looped path too.
ROW_SINGLE_MAX = 64 if INTERPRET else 4096
ROW_TILE = 64 if INTERPRET else 2048  # elements of a single-path tile ([ROWS, BLOCK])
ROW_LOOP_BLOCK = 32 if INTERPRET else 2048  # the looped BLOCK when not autotuned
FLAT_BLOCK = 64 if INTERPRET else 1024  # the elementwise BLOCK when not autotuned
# Rows of at least SPLIT_MIN_HW elements are split over several programs when N·C alone gives fewer
# than PROGRAMS_PER_SM programs per SM; chunks are multiples of SPLIT_ALIGN (every autotuned BLOCK
# divides it). Tests lower SPLIT_MIN_HW to reach the split path at interpreter sizes.
SPLIT_MIN_HW = 256 if INTERPRET else 16384
SPLIT_ALIGN = ROW_LOOP_BLOCK if INTERPRET else 4096
PROGRAMS_PER_SM = 4
INTERPRET_SMS = 2  # the SM count assumed under the interpreter
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
def _fmt(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_activation(op: str, name: str, t: torch.Tensor, device: torch.device, ndim: int = 4) -> None:
    """A floating `ndim`-D contiguous tensor on `device` that Triton can run on."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a Tensor, got {type(t).__name__}")
    if t.device != device:
        raise ValueError(f"{op}: argument '{name}' is on {t.device}, expected {device}")
    if t.device.type != "cuda" and not (t.device.type == "cpu" and INTERPRET):
        raise ValueError(f"{op}: argument '{name}' is on {t.device}; Triton kernels need CUDA tensors, "
                         "or CPU tensors under TRITON_INTERPRET=1")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{op}: argument '{name}' must be float16/bfloat16/float32/float64, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: argument '{name}' must be {ndim}-D, got shape {_fmt(t.shape)}")
    if not (t.is_contiguous() or is_nhwc(t)):
        raise ValueError(f"{op}: argument '{name}' must be contiguous (NCHW) or channels_last (NHWC)")
    if t.numel() > 2**31 - 1:
        raise ValueError(f"{op}: argument '{name}' has {t.numel()} elements; at most 2^31-1 are supported")


def check_even(op: str, name: str, t: torch.Tensor) -> None:
    check_activation(op, name, t, t.device)
    if t.shape[2] % 2 or t.shape[3] % 2:
        raise ValueError(f"{op}: argument '{name}' needs even H and W for 2x2 resampling, "
                         f"got {t.shape[2]}x{t.shape[3]}")


def check_tensor(op: str, name: str, t, device: torch.device, dtype: torch.dtype, shape, spec: str) -> None:
    """A contiguous tensor of exactly `shape` and `dtype` on `device`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a Tensor, got {type(t).__name__}")
    if t.device != device:
        raise ValueError(f"{op}: argument '{name}' is on {t.device}, expected {device}")
    if t.dtype != dtype:
        raise TypeError(f"{op}: argument '{name}' must have dtype {dtype}, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: argument '{name}' must have shape {spec} = {_fmt(shape)}, got {_fmt(t.shape)}")
    if not (t.is_contiguous() or is_nhwc(t)):
        raise ValueError(f"{op}: argument '{name}' must be contiguous")


def in_layout(t: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """`t` in NHWC (channels_last) or NCHW; a copy only when it is in the other one."""
    return t.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


def match_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`t` in the layout of `like`."""
    return in_layout(t, is_nhwc(like))


def empty_act(like: torch.Tensor, nhwc: bool | None = None, shape=None) -> torch.Tensor:
    """An output activation shaped like `like` (or `shape`), in its layout or the one `nhwc` names."""
    if nhwc is None:
        return empty_dense_like(like, shape)
    return torch.empty(like.shape if shape is None else shape, dtype=like.dtype, device=like.device,
                       memory_format=torch.channels_last if nhwc else torch.contiguous_format)


def check_alpha(op: str, alpha) -> None:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{op}: argument 'alpha' must be in [0, 1], got {alpha}")


def check_slope(op: str, slope) -> None:
    if not 0.0 <= float(slope) < float("inf"):  # NaN fails too
        raise ValueError(f"{op}: argument 'slope' must be finite and >= 0, got {slope}")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics, per-channel parameters and styles: fp64 for fp64 activations, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_acc(dtype: torch.dtype):
    """The accumulation dtype as a Triton constexpr."""
    return tl.float64 if dtype == torch.float64 else tl.float32


# Compute capabilities whose fp64 units run at half the fp32 rate (P100, V100, A100, H100/H200,
# B100/B200); elsewhere fp64 runs at 1/32 to 1/64 of it.
FULL_RATE_FP64 = frozenset({(6, 0), (7, 0), (8, 0), (9, 0), (10, 0)})


def fast_fp64(device: torch.device) -> bool:
    """Whether fp64 arithmetic is cheap on `device` (the interpreter's CPU counts as such)."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) in FULL_RATE_FP64


def exact_acc(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """fp64 where fp64 is cheap, else acc_dtype(dtype): for row arithmetic whose fp32 rounding of the
    input itself (x + wn·noise + b on rows that vary by a few ulps) is already too coarse."""
    return torch.float64 if fast_fp64(device) else acc_dtype(dtype)


def split_scalar(value: float) -> tuple[float, float]:
    """(hi, lo) with hi = fp32(value) and hi + lo ≈ value to ~2^-48.

    Triton passes Python floats as fp32; kernels rebuild hi + lo in the accumulation dtype,
    so fp16/bf16/fp32 math stays in fp32 and fp64 inputs still see a near-exact scalar.
    """
    hi = float(torch.tensor(value, dtype=torch.float32))
    return hi, float(torch.tensor(value - hi, dtype=torch.float32))


# ---------------------------------------------------------------------------------------------
# Device-side helpers
# ---------------------------------------------------------------------------------------------
@triton.jit
def scalar(hi, lo, ACC: tl.constexpr):
    """A split host scalar (see split_scalar) in the accumulation dtype."""
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def const(value: tl.constexpr, ACC: tl.constexpr):
    """A Python constant materialised exactly in ACC (a bare float would be rounded to fp32)."""
    return tl.full([], value, ACC)


@triton.jit
def narrow(v, dtype: tl.constexpr):
    """v in `dtype`, 16-bit types through fp32 (the interpreter has no direct fp64 -> bf16)."""
    if dtype.primitive_bitwidth < 32:
        v = v.to(tl.float32)
    return v.to(dtype)


@triton.jit
def leaky(v, slope):
    return tl.where(v > 0, v, v * slope)


@triton.jit
def leaky_grad(pre, slope):
    """d leaky / d pre; `slope` at pre == 0, as torch's leaky_relu."""
    return tl.where(pre > 0, 1.0, slope)


@triton.jit
def row_base(rows, C, HW, NHWC: tl.constexpr):
    """Offset of pixel 0 of rows [R] (row = n·C + c) in an [N, C, H, W] activation."""
    if NHWC:
        return (rows // C) * C * HW + rows % C
    return rows * HW


@triton.jit
def pixel(idx, C, NHWC: tl.constexpr):
    """Offset of pixel `idx` from a row's pixel 0."""
    if NHWC:
        return idx * C
    return idx


@triton.jit
def row_chunk(SPLIT, CHUNK, HW, ROWS: tl.constexpr):
    """(rows [ROWS], chunk index, first pixel, end pixel) of this program: program p covers
    chunk p % SPLIT of the rows of tile p // SPLIT."""
    pid = tl.program_id(0)
    part = pid % SPLIT
    lo = part * CHUNK
    return (pid // SPLIT) * ROWS + tl.arange(0, ROWS), part, lo, tl.minimum(lo + CHUNK, HW)


@triton.jit
def first_chunk(rows, row_ok, part):
    """Mask [R] of the rows whose per-row outputs this program writes: chunk 0's."""
    return row_ok & (rows * 0 + part == 0)


@triton.jit
def settle_mean(mean, m2, total, count):
    """The row mean: Welford's where the row is finite (its M2 is), else Σ t / count, which is NaN
    or ±inf exactly where the plain mean is (Welford turns a lone inf into NaN)."""
    return tl.where(m2 - m2 == 0, mean, total / tl.maximum(count, 1.0))


@triton.jit
def combine_moments(mean_ptr, m2_ptr, count_ptr, sum_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK: tl.constexpr):
    """Chan merge, in a fixed tree order, of the SPLIT chunk moments of each of rows [R]: (mean, M2)."""
    idx = rows[:, None] * SPLIT + tl.arange(0, SPLIT_BLOCK)[None, :]  # [R, SPLIT_BLOCK]
    ok = row_ok[:, None] & (tl.arange(0, SPLIT_BLOCK)[None, :] < SPLIT)
    count = tl.load(count_ptr + idx, mask=ok, other=0)
    mean, m2, n = tl.reduce((tl.load(mean_ptr + idx, mask=ok, other=0), tl.load(m2_ptr + idx, mask=ok, other=0),
                             count), 1, welford_combine)
    return settle_mean(mean, m2, tl.sum(tl.load(sum_ptr + idx, mask=ok, other=0), 1), n), m2


@triton.jit
def store_partials(parts_ptr, rows, row_ok, part, NC, SPLIT, a, b, c, d, e, COUNT: tl.constexpr):
    """The first COUNT (3 to 5) of the chunk partials a..e [R] of rows [R], at chunk `part` of parts
    [COUNT, N*C, SPLIT]."""
    slot = parts_ptr + rows * SPLIT + part
    stride = NC * SPLIT
    tl.store(slot, a, mask=row_ok)
    tl.store(slot + stride, b, mask=row_ok)
    tl.store(slot + 2 * stride, c, mask=row_ok)
    if COUNT > 3:
        tl.store(slot + 3 * stride, d, mask=row_ok)
    if COUNT > 4:
        tl.store(slot + 4 * stride, e, mask=row_ok)


@triton.jit
def combine_sums(part_ptr, rows, row_ok, SPLIT, SPLIT_BLOCK: tl.constexpr):
    """Σ over the SPLIT chunk partials of each of rows [R], in a fixed order."""
    idx = rows[:, None] * SPLIT + tl.arange(0, SPLIT_BLOCK)[None, :]  # [R, SPLIT_BLOCK]
    ok = row_ok[:, None] & (tl.arange(0, SPLIT_BLOCK)[None, :] < SPLIT)
    return tl.sum(tl.load(part_ptr + idx, mask=ok, other=0), 1)


@triton.jit
def row_moments(t, mask, HW):
    """A tile holding whole rows: (mean [ROWS], t - mean with masked lanes 0 [ROWS, BLOCK], variance [ROWS]).

    The mean is Σ t / HW refined by the mean of t minus it (so |mean|/std ≫ 1 loses nothing to
    the first sum); a non-finite first mean is kept, as the plain mean's NaN or ±inf."""
    rough = tl.sum(tl.where(mask, t, 0.0), 1) / HW
    mean = rough + tl.sum(tl.where(mask, t - rough[:, None], 0.0), 1) / HW
    mean = tl.where(rough - rough == 0, mean, rough)
    centered = tl.where(mask, t - mean[:, None], 0.0)
    return mean, centered, tl.sum(centered * centered, 1) / HW


@triton.jit
def centred_grad_terms(sum_g, sum_gc, sum_c, HW):
    """(mean g, mean c, mean g·(c − mean c)) [R] from Σ g, Σ g·c, Σ c with c = t − mean.

    Centring c once more by its own mean (≈ 0, not exactly: the stored mean is rounded) makes
    grad_x sum to 0 over the row up to rounding, as torch's autograd does, however large |mean|/std."""
    mean_c = sum_c / HW
    return sum_g / HW, mean_c, (sum_gc - mean_c * sum_g) / HW


@triton.jit
def kink_terms(g, centered, d, d0, mask):
    """Per-element terms [R, B] of E = Σ (d − d0)·g, M = Σ (d0 − d), Q = Σ (d − d0)·c for d = leaky'(pre)
    and a per-row d0 [R, 1] (1 or the slope, the value most of the row takes). As Σ dt = 0 for
    dt = A·(g − mean_g − k·c) with c summing to 0, Σ_row d·dt = A·(E + mean_g·M − k·Q): the bias
    gradient without cancellation, exactly 0 when d is d0 on the whole row."""
    d1 = tl.where(mask, d - d0, 0.0)
    return d1 * g, -d1, d1 * centered


@triton.jit
def kink_base(mean, slope):
    """d0 of kink_terms [R, 1] from the rows' means [R, 1]: the slope for a negative mean, else 1."""
    return tl.where(mean < 0, slope, 1.0)


@triton.jit
def welford_update(t, mask, lane_mean, lane_m2, lane_n):
    """One masked Welford step per lane of a [ROWS, BLOCK] tile; merge lanes with welford_combine."""
    lane_n += tl.where(mask, 1.0, 0.0)
    delta = t - lane_mean
    lane_mean += tl.where(mask, delta / tl.maximum(lane_n, 1.0), 0.0)
    lane_m2 += tl.where(mask, delta * (t - lane_mean), 0.0)
    return lane_mean, lane_m2, lane_n


@triton.jit
def welford_combine(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Chan's pairwise merge of (mean, sum of squared deviations, count); empty sides are ignored."""
    n = n_a + n_b
    w_b = tl.where(n > 0, n_b / tl.maximum(n, 1.0), 0.0)
    delta = mean_b - mean_a
    return mean_a + delta * w_b, m2_a + m2_b + delta * delta * n_a * w_b, n


# ---------------------------------------------------------------------------------------------
# Launch helpers: autotuned on GPU (see AUTOTUNE), else one fixed config
# ---------------------------------------------------------------------------------------------
def _prev_pow2(v: int) -> int:
    return 1 << (v.bit_length() - 1)


def _warps_for(elements: int) -> int:
    """num_warps of an untuned single-path tile: about 16 elements per thread, 1 to 8 warps."""
    return max(1, min(8, elements // 512))


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRET_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def row_split(rows: int, hw: int, device: torch.device) -> tuple[int, int]:
    """(SPLIT, CHUNK): each row of `hw` elements runs as SPLIT programs of CHUNK elements (the last
    may be shorter). 1 and hw unless the rows are long and too few to fill the GPU."""
    if hw < SPLIT_MIN_HW or rows == 0:
        return 1, hw
    split = min(triton.cdiv(PROGRAMS_PER_SM * _sm_count(device), rows), triton.cdiv(hw, SPLIT_ALIGN))
    if split <= 1:
        return 1, hw
    chunk = triton.cdiv(triton.cdiv(hw, split), SPLIT_ALIGN) * SPLIT_ALIGN
    return triton.cdiv(hw, chunk), chunk


def chunk_partials(rows: int, split: int, like: torch.Tensor, count: int, dtype: torch.dtype) -> torch.Tensor:
    """[count, N*C, SPLIT] per-chunk partials in `dtype` (every slot is written before it is read);
    unsplit rows read none, so they get `like` itself as a placeholder."""
    if split == 1:
        return like
    return torch.empty((count, rows, split), dtype=dtype, device=like.device)


class RowKernel:
    """A kernel over [N*C, HW] rows with tiles [ROWS, BLOCK], taking (..., NC, HW, SPLIT, CHUNK).

    Single path (HW ≤ ROW_SINGLE_MAX, no split): BLOCK = next_pow2(HW), ROWS rows per program, the
    row lives in registers; num_warps is autotuned, else _warps_for(the tile). Looped path: one
    row, or one CHUNK of a row split SPLIT ways (see row_split), per program; BLOCK and num_warps
    autotuned, else ROW_LOOP_BLOCK and 8 warps. Tuning is keyed on HW and SPLIT (and the argument
    dtypes). `has_single` is False for kernels that always loop (no SINGLE constexpr).
    """

    def __init__(self, fn, has_single: bool = True):
        self.fn, self.has_single = fn, has_single
        if not AUTOTUNE:
            return
        self.single = triton.autotune(
            [triton.Config({}, num_warps=w) for w in (1, 2, 4, 8)], key=["HW", "BLOCK", "ROWS"])(fn)
        self.looped = triton.autotune(
            [triton.Config({"BLOCK": b}, num_warps=w) for b in (1024, 2048, 4096) for w in (4, 8, 16)],
            key=["HW", "SPLIT"])(fn)

    def __call__(self, rows: int, hw: int, *args, split: int = 1, chunk: int | None = None, **flags) -> None:
        if split == 1 and triton.next_power_of_2(hw) <= ROW_SINGLE_MAX:
            block = triton.next_power_of_2(hw)
            # Several short rows per program, keeping enough programs to fill the GPU.
            per = max(1, ROW_TILE // block)
            if not INTERPRET:
                per = min(per, _prev_pow2(max(1, rows // 1024)))
            per = min(per, triton.next_power_of_2(rows))
            if self.has_single:
                flags["SINGLE"] = True
            grid = (triton.cdiv(rows, per),)
            if AUTOTUNE:
                self.single[grid](*args, rows, hw, 1, hw, BLOCK=block, ROWS=per, **flags)
            else:
                self.fn[grid](*args, rows, hw, 1, hw, BLOCK=block, ROWS=per, num_warps=_warps_for(block * per),
                              **flags)
            return
        if self.has_single:
            flags["SINGLE"] = False
        chunk = hw if chunk is None else chunk
        if AUTOTUNE:
            self.looped[(rows * split,)](*args, rows, hw, split, chunk, ROWS=1, **flags)
        else:
            self.fn[(rows * split,)](*args, rows, hw, split, chunk, BLOCK=ROW_LOOP_BLOCK, ROWS=1, num_warps=8,
                                     **flags)


class FlatKernel:
    """A kernel over `numel` independent items in 1-D blocks of BLOCK; BLOCK and num_warps autotuned,
    else FLAT_BLOCK and 4 warps."""

    def __init__(self, fn):
        self.fn = fn
        if AUTOTUNE:
            self.tuned = triton.autotune(
                [triton.Config({"BLOCK": b}, num_warps=w) for b in (512, 1024, 2048) for w in (4, 8)],
                key=["numel"])(fn)

    def __call__(self, numel: int, *args, **flags) -> None:
        if AUTOTUNE:
            self.tuned[lambda meta: (triton.cdiv(numel, meta["BLOCK"]),)](*args, numel, **flags)
        else:
            self.fn[(triton.cdiv(numel, FLAT_BLOCK),)](*args, numel, BLOCK=FLAT_BLOCK, num_warps=4, **flags)
