#!/usr/bin/env python3
"""Registers, spills, shared memory and blocks per SM of every CUDA kernel, from ptxas.

Compiles each csrc/**/cuda.cu for one architecture (compile only, against the installed torch's
headers, as tools/nvcc_check.sh does), reads ptxas's -v report and the block size each kernel
declares with __launch_bounds__ (.maxntid in the PTX), and computes how many blocks of that size
fit on one SM. Writes benchmarks/results/ptxas/<arch>.{txt,json}. Exits 1 when a kernel spills
or when a bounded kernel fits only one block per SM.

    python3 tools/ptxas_report.py [--arch sm_90] [--files csrc/adain/cuda.cu ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks" / "results" / "ptxas"

# Per-SM limits of the architectures we compile for (CUDA programming guide, compute capability table).
LIMITS = {
    "sm_80": {"regs": 65536, "smem": 164 * 1024, "threads": 2048, "blocks": 32},
    "sm_90": {"regs": 65536, "smem": 228 * 1024, "threads": 2048, "blocks": 32},
}
REG_UNIT = 256  # registers are allocated per warp in units of 256
SMEM_RESERVED = 1024  # per block, reserved by the runtime
UNBOUNDED_THREADS = 512  # kernels without __launch_bounds__ launch at most this many threads here

FLAGS = ["-c", "-std=c++20", "--expt-relaxed-constexpr", "-O3", "-DALAE_FAST_WITH_CUDA",
         "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
         "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "-DTORCH_EXTENSION_NAME=_C",
         "-D_GLIBCXX_USE_CXX11_ABI=1", "-Xptxas=-v", "-Icsrc"]


def include_flags() -> list[str]:
    from torch.utils.cpp_extension import include_paths
    return ["-I" + p for p in include_paths() + [sysconfig.get_paths()["include"]]]


def demangle(names: list[str]) -> dict[str, str]:
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def short_name(demangled: str) -> str:
    """'void ns::(anonymous namespace)::k<float, 4>(args)' -> 'k<float, 4>'."""
    name = demangled.removeprefix("void ")
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # drop the argument list: the first '(' at template depth 0
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not name.startswith("(anonymous", i):
            cut = i
            break
    name = name[:cut]
    for prefix in ("alae_fast::(anonymous namespace)::", "alae_fast::"):
        name = name.replace(prefix, "")
    return name.replace("at::OpMathType<c10::BFloat16>::type", "float").replace("c10::", "")


def parse_ptxas(text: str) -> dict[str, dict]:
    kernels: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if m := re.search(r"Compiling entry function '(\S+)'", line):
            current = kernels.setdefault(m.group(1), {"spill_stores": 0, "spill_loads": 0, "stack": 0, "smem": 0})
        elif m := re.search(r"Function properties for (\S+)", line):
            current = kernels.setdefault(m.group(1), {"spill_stores": 0, "spill_loads": 0, "stack": 0, "smem": 0})
        elif current is not None and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                                                     r"(\d+) bytes spill loads", line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["regs"] = int(m.group(1))
            if s := re.search(r"(\d+) bytes smem", line):
                current["smem"] = int(s.group(1))
    return {k: v for k, v in kernels.items() if "regs" in v}


def parse_maxntid(ptx: str) -> dict[str, int]:
    """Entry name -> threads per block from `.maxntid x, y, z`."""
    bounds = {}
    for m in re.finditer(r"\.entry\s+([\w$]+)\s*\((.*?)\)\s*((?:\.\w+[^{]*?)*)\{", ptx, re.S):
        if t := re.search(r"\.maxntid\s+(\d+),\s*(\d+),\s*(\d+)", m.group(3)):
            bounds[m.group(1)] = int(t.group(1)) * int(t.group(2)) * int(t.group(3))
    return bounds


def blocks_per_sm(regs: int, smem: int, threads: int, arch: str) -> tuple[int, str]:
    lim = LIMITS[arch]
    warps = (threads + 31) // 32
    regs_per_warp = (regs * 32 + REG_UNIT - 1) // REG_UNIT * REG_UNIT
    by = {"regs": lim["regs"] // (regs_per_warp * warps), "threads": lim["threads"] // threads,
          "blocks": lim["blocks"]}
    if smem:
        by["smem"] = lim["smem"] // (smem + SMEM_RESERVED)
    limiter = min(by, key=by.get)
    return by[limiter], limiter


def compile_one(nvcc: str, src: Path, arch: str, includes: list[str], keep: Path) -> tuple[str, str]:
    cmd = [nvcc, *FLAGS, *includes, f"-gencode=arch=compute_{arch[3:]},code={arch}", "--keep",
           f"--keep-dir={keep}", str(src), "-o", str(keep / (src.parent.name + ".o"))]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ptxas_report: {src} failed to compile:\n{proc.stderr[-4000:]}")
    ptx = "".join(p.read_text() for p in keep.glob("*.ptx"))
    for p in keep.glob("*"):
        p.unlink()
    return proc.stderr + proc.stdout, ptx


def to_json(arch: str, rows: list[dict]) -> str:
    """One kernel per line."""
    body = ",\n".join("  " + json.dumps(r) for r in rows)
    return f'{{"arch": "{arch}", "kernels": [\n{body}\n]}}\n'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90", choices=sorted(LIMITS))
    ap.add_argument("--files", nargs="*", help="default: every csrc/**/cuda.cu")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args()
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc") or "/usr/local/cuda-13.0/bin/nvcc"
    files = [Path(f) for f in args.files] if args.files else sorted(ROOT.glob("csrc/*/cuda.cu"))
    includes = include_flags()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in files:
            log, ptx = compile_one(nvcc, ROOT / src, args.arch, includes, Path(tmp))
            kernels, bounds = parse_ptxas(log), parse_maxntid(ptx)
            names = demangle(list(kernels))
            for mangled, k in kernels.items():
                threads = bounds.get(mangled)
                blocks, limiter = blocks_per_sm(k["regs"], k["smem"], threads or UNBOUNDED_THREADS, args.arch)
                rows.append({"file": str(Path(src).relative_to(ROOT) if Path(src).is_absolute() else src),
                             "kernel": short_name(names[mangled]), "regs": k["regs"],
                             "spill_stores": k["spill_stores"], "spill_loads": k["spill_loads"],
                             "stack": k["stack"], "smem": k["smem"], "threads": threads,
                             "blocks_per_sm": blocks, "limiter": limiter})
    rows.sort(key=lambda r: (r["file"], r["kernel"]))
    spills = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    single = [r for r in rows if r["threads"] and r["blocks_per_sm"] <= 1]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.arch}.json").write_text(to_json(args.arch, rows))
    width = max(len(r["kernel"]) for r in rows)
    lines = [f"ptxas -v, {args.arch}, -O3: {len(rows)} kernels, {len(spills)} spilling, "
             f"{len(single)} at 1 block/SM (threads '-': no __launch_bounds__, counted at {UNBOUNDED_THREADS})",
             f"{'kernel':<{width}}  regs  spill(st/ld)  stack  smem  threads  blocks/SM (limit)"]
    for r in rows:
        lines.append(f"{r['kernel']:<{width}}  {r['regs']:>4}  {r['spill_stores']:>5}/{r['spill_loads']:<6}  "
                     f"{r['stack']:>5}  {r['smem']:>4}  {r['threads'] or '-':>7}  "
                     f"{r['blocks_per_sm']:>3} ({r['limiter']})")
    (args.out / f"{args.arch}.txt").write_text("\n".join(lines) + "\n")
    print(lines[0])
    for r in spills:
        print(f"spill: {r['kernel']} ({r['spill_stores']} B stored, {r['spill_loads']} B loaded)")
    for r in single:
        print(f"1 block/SM: {r['kernel']} ({r['regs']} regs x {r['threads']} threads, {r['smem']} B smem)")
    return 1 if spills or single else 0


if __name__ == "__main__":
    sys.exit(main())
