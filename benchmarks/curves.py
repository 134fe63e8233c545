"""Training curves of a few variants on the demo data, several seeds each: loss means over the
last logged kimg, their seed-to-seed spread, and img/s.

    python -m benchmarks.curves lazy-r1 --seeds 3 --kimg 4 --out benchmarks/results/curves
    python -m benchmarks.curves old-step --old-tree /tmp/old --seeds 3 --kimg 4 --out benchmarks/results/curves

`lazy-r1` runs this tree with r1_interval 1, 4 and 16. `old-step` compares this tree's step with the
one of another checkout (`--old-tree`, e.g. a `git worktree` of the commit before the step unit):
both run the same config in fp32 on the reference ops (ALAE_FAST_IMPL=ref), so only the step code
differs. Each run is `alae-fast train` in a subprocess of its tree; results go to <out>/<name>.json
and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.conftest import device_name

HERE = Path(__file__).resolve().parents[1]
LOSSES = ("loss_d", "r1", "loss_g", "loss_ae")


def run_once(tree: Path, seed: int, kimg: float, data: str, extra: list[str], workdir: Path) -> dict:
    """One `alae-fast train --config demo` run in `tree`; the losses.csv rows and the wall time."""
    out = workdir / f"run-{seed}-{abs(hash((str(tree), tuple(extra)))) % 10**8}"
    cmd = [sys.executable, "-m", "alae_fast.cli", "train", "--config", "demo", "--data", data, "--out", str(out),
           "--seed", str(seed), "--kimg", str(kimg), "--no-progress", *extra]
    env = {**os.environ, "ALAE_FAST_IMPL": "ref", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree)}
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} (in {tree}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    csv_path = next(out.rglob("losses.csv"))
    with open(csv_path) as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    return {"rows": rows, "seconds": time.monotonic() - start}


def summarize(runs: list[dict], last_kimg: float) -> dict:
    """Per loss: the mean over seeds of each run's mean over its last `last_kimg` kimg, and the std over seeds."""
    out = {}
    for loss in LOSSES:
        per_seed = []
        for run in runs:
            end = run["rows"][-1]["kimg"]
            tail = [r[loss] for r in run["rows"] if r["kimg"] > end - last_kimg and loss in r]
            per_seed.append(statistics.fmean(tail))
        out[loss] = {"mean": statistics.fmean(per_seed),
                     "std": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0, "seeds": per_seed}
    # The curve: each logged kimg's loss, averaged over the seeds (the runs log at the same kimg).
    kimgs = [row["kimg"] for row in runs[0]["rows"]]
    out["curve"] = {"kimg": kimgs, **{loss: [statistics.fmean(run["rows"][i][loss] for run in runs)
                                            for i in range(len(kimgs))] for loss in LOSSES}}
    out["minutes_per_run"] = statistics.fmean(r["seconds"] for r in runs) / 60
    out["img_per_s"] = statistics.fmean(
        statistics.fmean(r["img_per_s"] for r in run["rows"] if "img_per_s" in r) for run in runs)
    return out


def render(name: str, result: dict) -> str:
    variants = result["variants"]
    lines = [f"# {name}", "", result["what"], "",
             f"{result['seeds']} seeds, {result['kimg']} kimg of `demo` on {result['data']}, fp32, reference ops, "
             f"{result['device']}, torch {result['torch']}, commit `{result['commit'][:10]}`. "
             f"Loss: mean over seeds of each run's mean over its last {result['last_kimg']} kimg ± std over seeds.", "",
             "| variant | " + " | ".join(LOSSES) + " | img/s | min/run |", "|---|" + "---:|" * (len(LOSSES) + 2)]
    for label, v in variants.items():
        cells = [f"{v[loss]['mean']:.4f} ± {v[loss]['std']:.4f}" for loss in LOSSES]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {v['img_per_s']:.1f} | {v['minutes_per_run']:.2f} |")
    first = next(iter(variants.values()))["curve"]
    stride = max(1, len(first["kimg"]) // 10)
    lines += ["", "Curves (mean over seeds of each logged interval" + (f"; every {stride}th row" if stride > 1 else "")
              + "):", "",
              "| kimg | " + " | ".join(f"{label}: loss_ae / r1" for label in variants) + " |",
              "|---:|" + "---:|" * len(variants)]
    for i in range(0, len(first["kimg"]), stride):
        cells = [f"{v['curve']['loss_ae'][i]:.3f} / {v['curve']['r1'][i]:.3f}" for v in variants.values()]
        lines.append(f"| {first['kimg'][i]:.2f} | " + " | ".join(cells) + " |")
    if "verdict" in result:
        lines += ["", result["verdict"]]
    if result.get("timing_note"):
        lines += ["", result["timing_note"]]
    return "\n".join(lines) + "\n"


def compare(a: dict, b: dict) -> tuple[bool, str]:
    """Whether every loss mean of a and b differs by at most 2 pooled seed standard deviations."""
    worst, parts = 0.0, []
    for loss in LOSSES:
        pooled = ((a[loss]["std"] ** 2 + b[loss]["std"] ** 2) / 2) ** 0.5
        gap = abs(a[loss]["mean"] - b[loss]["mean"]) / max(pooled, 1e-12)
        worst = max(worst, gap)
        parts.append(f"{loss} {gap:.2f}")
    return worst <= 2.0, "gap / pooled seed std: " + ", ".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", choices=["lazy-r1", "old-step"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--kimg", type=float, default=4.0)
    p.add_argument("--last-kimg", type=float, default=1.0)
    p.add_argument("--data", default="builtin:digits")
    p.add_argument("--old-tree", type=Path, help="old-step: the other checkout")
    p.add_argument("--out", type=Path, default=HERE / "benchmarks" / "results" / "curves")
    p.add_argument("--timing-note", default="", help="a line under the table about the img/s column")
    args = p.parse_args(argv)
    if args.study == "old-step" and args.old_tree is None:
        p.error("old-step needs --old-tree")
    if args.study == "lazy-r1":
        variants = {f"r1_interval {k}": (HERE, [] if k == 1 else ["--set", f"train.r1_interval={k}"])
                    for k in (1, 4, 16)}
        what = ("Lazy R1: the penalty every k-th D step, scaled by k. Fewer double backwards per iteration "
                "against the losses it reaches.")
    else:
        variants = {"old step (before train/step.py)": (args.old_tree.resolve(), []), "step unit": (HERE, [])}
        what = "The step unit against the trainer's own step it replaced, same config, seeds and ops."
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    result = {"study": args.study, "what": what, "seeds": args.seeds, "kimg": args.kimg, "last_kimg": args.last_kimg,
              "data": args.data, "device": f"{device_name(torch.device('cpu'))} ({os.cpu_count()} cores, 1 thread per run)",
              "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
              "timing_note": args.timing_note, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (tree, extra) in variants.items():
            runs = [run_once(tree, seed, args.kimg, args.data, extra, Path(tmp)) for seed in range(args.seeds)]
            result["variants"][label] = summarize(runs, args.last_kimg)
            print(f"{label}: {json.dumps({k: v for k, v in result['variants'][label].items() if k in LOSSES})}")
    if args.study == "old-step":
        same, detail = compare(*result["variants"].values())
        result["within_seed_noise"] = same
        result["verdict"] = f"{'Within' if same else 'NOT within'} seed-to-seed noise (≤ 2 pooled std): {detail}."
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.study}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{args.study}.md").write_text(render(args.study, result))
    print(render(args.study, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
