"""Compile every Triton kernel of alae_fast for sm_90 without a GPU (front end, LLVM, ptxas; no launch).

CI runs it so that a kernel that only the GPU compiler would reject cannot land unseen.
Usage: python tools/triton_compile_check.py   (exit code 1 if any variant fails)
"""

import itertools
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)  # compile for real, not for the interpreter

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from alae_fast.ops import _triton_rows as rows  # noqa: E402
from alae_fast.ops.blend import triton as blend  # noqa: E402
from alae_fast.ops.noise import triton as noise  # noqa: E402
from alae_fast.ops.style import triton as style  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_variant(fn, pointer_types: dict, constants: dict, label: str) -> bool:
    signature = {n: "constexpr" if n in constants else pointer_types.get(n, "i32") for n in fn.arg_names}
    constexprs = {(fn.arg_names.index(k),): v for k, v in constants.items()}
    try:
        kernel = triton.compile(ASTSource(fn, signature, constexprs), target=TARGET, options={"num_warps": 4})
    except Exception as exc:  # report every failing variant, then fail
        print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[-800:]}")
        return False
    print(f"ok   {label} ({len(kernel.asm['cubin'])} bytes of sm_90 code)")
    return True


def row_variants(act, par, c, single, split, tag):
    """The shared instance-norm row kernels: style_extract in acc, modulated_adain in fp32 and in
    fp64 (its arithmetic where fp64 is full rate, see _triton.exact_acc)."""
    accs = [(False, c["ACC"]), (True, c["ACC"]), (True, tl.float64)]
    for modulated, acc in dict.fromkeys(accs):
        flags = dict(c, ACC=acc, MODULATED=modulated)
        parts = {"parts_ptr": "*fp64" if acc == tl.float64 else "*fp32"}
        pointers = {**act("grad_y_ptr", "x_ptr", "noise_ptr", "y_ptr", "grad_x_ptr"), **parts,
                    **par("wn_ptr", "b_ptr", "style_ptr", "stats_ptr", "row_in_ptr", "grad_style_ptr", "part_wn_ptr",
                          "part_b_ptr")}
        label = f"{'adain' if modulated else 'style'} {tag} acc={'fp64' if acc == tl.float64 else 'fp32'}"
        loop = {k: v for k, v in flags.items() if k != "EPS"}
        if not single:
            yield rows._moments_kernel, pointers, loop, f"moments {label}"
            yield rows._bwd_sums_kernel, pointers, loop, f"bwd_sums {label}"
        yield rows._fwd_kernel, pointers, dict(flags, SINGLE=single, SPLIT_BLOCK=8), f"fwd {label}"
        yield rows._bwd_kernel, pointers, dict(flags, SPLIT_BLOCK=8), f"bwd {label}"
    bwd2 = {**act("grad_y_ptr", "x_ptr", "gg_x_ptr", "g_grad_y_ptr", "g_x_ptr"),
            **par("b_ptr", "gg_b_ptr", "stats_ptr", "grad_stats_ptr", "parts_ptr", "g_stats_ptr", "part_b_ptr")}
    flags = {k: v for k, v in c.items() if k != "EPS"}
    flags.update(HAS_GGX=True, HAS_GGB=single)
    if not single:
        yield style._style_bwd2_sums_kernel, bwd2, flags, f"style_bwd2_sums {tag}"
    yield style._style_bwd2_kernel, bwd2, dict(flags, EPS=c["EPS"], SPLIT_BLOCK=8), f"style_bwd2 {tag}"


def variants():
    for xt, acc, at in (("fp16", tl.float32, "fp32"), ("bf16", tl.float32, "fp32"),
                        ("fp32", tl.float32, "fp32"), ("fp64", tl.float64, "fp64")):
        def act(*names):
            return {n: "*" + xt for n in names}

        def par(*names):
            return {n: "*" + at for n in names}

        # (SINGLE, BLOCK, SPLIT): SPLIT 1 is what Triton specialises a launch with one program per row
        # to; None leaves it a runtime argument (rows split over programs).
        for (single, block, split), nhwc in itertools.product(((True, 64, 1), (False, 2048, 1), (False, 2048, None)),
                                                              (False, True) if xt in ("bf16", "fp32") else (False,)):
            c = dict(EPS=1e-5, SLOPE=0.2, ACC=acc, NHWC=nhwc, BLOCK=block, ROWS=4 if single else 1)
            if split is not None:
                c["SPLIT"] = split
            tag = f"{xt} single={single} split={split or 'n'} nhwc={nhwc}"
            yield from row_variants(act, par, c, single, split, tag)
        for has_bias, activation in ((True, True), (False, False)):
            flags = dict(SLOPE=0.2, ACC=acc, HAS_BIAS=has_bias, ACT=activation, NHWC=has_bias, BLOCK=1024)
            yield noise._noise_fwd_kernel, {**act("x_ptr", "noise_ptr", "y_ptr"), **par("wn_ptr", "b_ptr")}, flags, \
                f"noise_fwd {xt} bias={has_bias} act={activation} nhwc={has_bias}"
            yield noise._noise_bwd_kernel, {**act("grad_y_ptr", "x_ptr", "noise_ptr", "grad_x_ptr"),
                                            **par("wn_ptr", "b_ptr", "part_wn_ptr", "part_b_ptr")}, \
                dict(flags, ROWS=1), f"noise_bwd {xt} bias={has_bias} act={activation} nhwc={has_bias}"
        scalars = {n: "fp32" for n in ("alpha_hi", "alpha_lo", "slope_hi", "slope_lo")}
        for nhwc in (False, True):
            flat = dict(ACC=acc, NHWC=nhwc, BLOCK=1024)
            tiles = dict(ACC=acc, NHWC=nhwc, K_BLOCK=4, C_BLOCK=16, P_BLOCK=128)
            yield blend._blend_up_fwd_kernel, {**act("low_ptr", "high_ptr", "y_ptr"), **scalars}, flat, \
                f"blend_up_fwd {xt} nhwc={nhwc}"
            yield blend._blend_up_bwd_kernel, {**act("grad_y_ptr", "grad_low_ptr", "grad_high_ptr"), **scalars}, \
                flat, f"blend_up_bwd {xt} nhwc={nhwc}"
            yield blend._blend_real_fwd_kernel, {**act("x_ptr", "y_ptr"), **scalars}, flat, \
                f"blend_real_fwd {xt} nhwc={nhwc}"
            yield blend._blend_down_fwd_kernel, {**act("img_ptr", "new_ptr", "y_ptr"), **par("w_ptr", "b_ptr"),
                                                 **scalars}, tiles, f"blend_down_fwd {xt} nhwc={nhwc}"
            yield blend._blend_down_bwd_kernel, {**act("grad_y_ptr", "img_ptr", "grad_img_ptr", "grad_new_ptr"),
                                                 **par("w_ptr", "b_ptr", "part_w_ptr", "part_b_ptr"), **scalars}, \
                tiles, f"blend_down_bwd {xt} nhwc={nhwc}"


def main() -> int:
    results = [compile_variant(*v) for v in variants()]
    print(f"triton {triton.__version__}: {sum(results)}/{len(results)} kernel variants compiled for sm_90")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
