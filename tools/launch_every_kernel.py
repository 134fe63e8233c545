"""Launch every fused-op kernel at odd shapes: the target of compute-sanitizer in tools/gpu_verify.sh.

    compute-sanitizer --tool memcheck python3 tools/launch_every_kernel.py [--backends cuda,triton]
    compute-sanitizer --tool racecheck python3 tools/launch_every_kernel.py --small --dtypes fp32

Each op runs forward and backward (style_extract and blend_down also their double backward, the R1
path) in every dtype at shapes that reach every path of the
kernels: H·W = 1, odd rows, rows either side of the CUDA packed-row buckets (64, 256, 1K, 4K
elements, with a partly filled last block) and into the split path, vector-width rows, and
storage that is not 16-byte aligned (the scalar path); noise_inject also without bias and
activation. The row-statistics ops (adain, style) also run NHWC (channels_last) and with every
row split into 256-element chunks (ALAE_FAST_CUDA_ROW_CHUNK) on two of those shapes. Every launch is followed by a
synchronisation, so an error names the op, backend, dtype and shape that raised it. Triton runs
one fixed config per shape (ALAE_FAST_TRITON_AUTOTUNE=0). `--device cpu --backends cpu` runs
the same sweep on the C++ CPU kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("ALAE_FAST_TRITON_AUTOTUNE", "0")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from alae_fast import ops  # noqa: E402
from testing.op_cases import CASES  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
# [N, C, H, W]: H·W = 1, 35, 63 and 255 (15 and 9 rows: partial packed blocks), 1023, 4095 (just under
# the packed buckets), 16383 and 16637 (split rows).
ROW_SHAPES = [(2, 3, 1, 1), (2, 3, 5, 7), (3, 5, 7, 9), (3, 3, 15, 17), (1, 2, 31, 33), (1, 2, 63, 65),
              (1, 2, 127, 129), (1, 2, 131, 127), (2, 4, 8, 16)]
ROW_OPS = ("modulated_adain", "style_extract")
ROW_VARIANT_SHAPES = [(1, 2, 31, 33), (2, 40, 8, 16)]  # NHWC and split-row launches of ROW_OPS
SECOND_ORDER_OPS = ("style_extract", "blend_down")  # their double backward (R1) runs as kernels too
EVEN_SHAPES = [(2, 3, 2, 2), (2, 3, 6, 10), (1, 3, 34, 66), (2, 4, 16, 32)]
SMALL_SHAPES = [(2, 3, 5, 7), (2, 3, 6, 10)]


def _noise_plain(x, noise, weight, bias, *, impl):
    return ops.noise_inject(x, noise, weight, None, act=False, impl=impl)


def _cases():
    yield from CASES.values()
    yield dataclasses.replace(CASES["noise_inject"], name="noise_inject(no bias, no act)", public=_noise_plain,
                              differentiable=(0, 2))


def _misaligned(t):
    """A contiguous copy of `t` whose data starts one element past an allocation (not 16-byte aligned)."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


def launch(case, shape, dtype, backend, device, misaligned: bool, variant: str = "") -> None:
    args = case.make(shape, dtype, device, torch.Generator().manual_seed(0))
    if misaligned:
        args = [_misaligned(a) if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args]
    if variant == "nhwc":
        args = [a.to(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                for a in args]
    args = [a.requires_grad_(i in case.differentiable) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(args)]
    inputs = [args[i] for i in case.differentiable]
    outs = case.run(args, backend)
    second = case.name in SECOND_ORDER_OPS
    grads = torch.autograd.grad(outs, inputs, [torch.ones_like(o) for o in outs], create_graph=second)
    if second:
        grads += torch.autograd.grad(sum(g.square().sum() for g in grads), inputs, allow_unused=True)
        grads = tuple(g for g in grads if g is not None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    bad = [k for k, t in enumerate((*outs, *grads)) if not torch.isfinite(t).all()]
    if bad:
        raise RuntimeError(f"non-finite results {bad}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="cuda,triton",
                        help="comma list of cuda, triton, cpu (default cuda,triton)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help=f"comma list of {', '.join(DTYPES)} (default all)")
    parser.add_argument("--small", action="store_true", help="one small shape per op (for racecheck)")
    args = parser.parse_args()
    unknown = set(args.dtypes.split(",")) - set(DTYPES)
    if unknown:
        parser.error(f"--dtypes: unknown {sorted(unknown)}; choose from {', '.join(DTYPES)}")
    dtypes = [DTYPES[d] for d in args.dtypes.split(",")]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("launch_every_kernel: no CUDA device is visible to torch", file=sys.stderr)
        return 2
    launches = 0
    for backend in args.backends.split(","):
        for case in _cases():
            shapes = SMALL_SHAPES if args.small else (EVEN_SHAPES if case.needs_even else ROW_SHAPES)
            shapes = [s for s in shapes if not case.needs_even or (s[2] % 2 == 0 and s[3] % 2 == 0)]
            # (shape, misaligned, variant): every shape, and the last one also on misaligned storage
            runs = [(shape, False, "") for shape in shapes] + [(shapes[-1], True, "")]
            if case.name in ROW_OPS and not args.small:
                runs += [(shape, False, variant) for variant in ("nhwc", "split") for shape in ROW_VARIANT_SHAPES]
            for dtype in dtypes:
                for shape, misaligned, variant in runs:
                    where = (f"{case.name}[{backend}, {dtype}, {list(shape)}{', misaligned' if misaligned else ''}"
                             f"{', ' + variant if variant else ''}]")
                    if variant == "split":
                        os.environ["ALAE_FAST_CUDA_ROW_CHUNK"] = "256"
                    try:
                        launch(case, shape, dtype, backend, device, misaligned, variant)
                    except Exception as exc:
                        print(f"launch_every_kernel: {where} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                        return 1
                    finally:
                        os.environ.pop("ALAE_FAST_CUDA_ROW_CHUNK", None)
                    launches += 1
    print(f"launch_every_kernel: {launches} forward+backward launches on {args.backends} ({device}), the double "
          f"backward too for {', '.join(SECOND_ORDER_OPS)}, "
          f"{len(dtypes)} dtype(s), all synchronised without error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
