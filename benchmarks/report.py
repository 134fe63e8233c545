"""Render the suite's JSON files as Markdown tables and PNG plots.

    python -m benchmarks.report FILE.json [FILE.json ...] [--out benchmarks/results/<device>/] [--readme README.md]
                                [--dispatch-table alae_fast/ops/dispatch_table.json]

FILEs are pytest-benchmark JSONs of this suite (ops and/or model) and, optionally, the env JSON
of tools/gpu_env.py, whose measured copy bandwidth then is the "% copy BW" ceiling of every op
row. Writes report.md, the plots and a copy of each FILE into --out (default: a folder named
after the device), and prints the Markdown. Every number comes from the files. --dispatch-table
also writes (or updates, keeping other GPUs) the table that impl='auto' reads on CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import shutil
from collections import defaultdict
from pathlib import Path

from benchmarks import shapes

BASELINES = ("ref", "compile")
BACKEND_ORDER = ("ref", "compile", "cpu", "cuda", "triton")
FUSED_VARIANT = "bf16-fused-"
MODEL_BASELINES = ("bf16-eager-ref", "bf16-compile-ref")
SLOWER = 0.98  # a speedup under this is listed as slower (smaller gaps are within timing noise)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_folder(info: dict) -> str:
    name = slug(info.get("device") or "unknown")
    return name if info.get("device_type") == "cuda" else f"cpu-{name}"


def load(paths) -> tuple[dict, dict | None, list[dict]]:
    """(machine info, env JSON or None, benchmark entries) of the files; the env's copy bandwidth,
    when there is one, becomes every op entry's ceiling."""
    info, env, entries = {}, None, []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if data.get("kind") == "env":
            env = data
            continue
        found = dict(data.get("machine_info", {}).get("alae_fast", {}))
        found.setdefault("commit", data.get("commit_info", {}).get("id"))
        info = info or found
        entries += [b["extra_info"] for b in data["benchmarks"] if b.get("extra_info", {}).get("kind")]
    if env:
        for k in ("device", "device_type", "torch", "cuda", "triton", "commit"):
            info.setdefault(k, env.get(k))
        if env.get("copy_GBps"):
            for e in entries:
                if e["kind"] == "op":
                    e["copy_GBps"], e["pct_copy_bw"] = env["copy_GBps"], 100 * e["GBps"] / env["copy_GBps"]
    return info, env, entries


def _key(e: dict) -> tuple:
    return e["op"], tuple(e["shape"]), e["dtype"], e["mode"]


def speedups(ops: list[dict]) -> None:
    """Fill speedup_vs_ref / speedup_vs_compile from the baselines in the same JSON."""
    base = {(_key(e), e["backend"]): e["median_s"] for e in ops if e["backend"] in BASELINES}
    for e in ops:
        for b in BASELINES:
            t = base.get((_key(e), b))
            e[f"speedup_vs_{b}"] = t / e["median_s"] if t else None


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def ceilings(env: dict | None) -> str:
    """The measured ceilings and the machine of tools/gpu_env.py, one line."""
    if not env or not env.get("copy_GBps"):
        return ""
    smi = env.get("nvidia_smi") or {}
    l2 = env.get("l2_bytes")
    return (f"measured ceilings: copy {env['copy_GBps']:.0f} GB/s (read + write, {env['copy']['copy_bytes'] / 2**30:.0f} "
            f"GiB moved), dense {env['matmul']['matmul_dtype']} matmul {env['matmul']['matmul_n']}³ "
            f"{env['matmul_TFLOPs']:.0f} TFLOP/s; {env.get('sm_count')} SMs, L2 {_fmt(l2 and l2 / 2**20, '.0f')} MiB, "
            f"driver {smi.get('driver_version')}, SM clock {smi.get('clocks.sm')} (max {smi.get('clocks.max.sm')}) "
            f"when measured")


def header(info: dict, env: dict | None, ops: list[dict], models: list[dict]) -> str:
    copy = next((e["copy_GBps"] for e in ops if e.get("copy_GBps")), None)
    shape_list = sorted({(e["op"], "x".join(map(str, e["shape"])), ", ".join(e.get("where", []))) for e in ops})
    lines = [
        f"- device: **{info.get('device')}** ({info.get('device_type')}, {info.get('cpu_threads')} CPU threads)",
        f"- commit: `{info.get('commit')}`",
        f"- torch {info.get('torch')}, CUDA {info.get('cuda')}, triton {info.get('triton')}",
        *([f"- {ceilings(env)}"] if ceilings(env) else []),
        f"- copy bandwidth (read + write{', tools/gpu_env.py' if env else ', same run'}): {_fmt(copy, '.1f')} GB/s",
        f"- dtypes: {', '.join(sorted({e['dtype'] for e in ops})) or '–'}; "
        f"model variants: {', '.join(sorted({e['variant'] for e in models})) or '–'}",
        "- op shapes [N, C, H, W] (per-GPU batch of the official 8-GPU schedule):",
        *[f"  - {op} {s}: {where or 'smoke'}" for op, s, where in shape_list],
    ]
    return "\n".join(lines)


def op_table(ops: list[dict]) -> str:
    rows = ["| op | shape | dtype | mode | backend | median µs | GB/s | % copy BW | peak MiB | × eager | × compile |",
            "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    order = sorted(ops, key=lambda e: (*_key(e), BACKEND_ORDER.index(e["backend"])))
    for e in order:
        peak = None if e.get("peak_mem_bytes") is None else e["peak_mem_bytes"] / 2**20
        rows.append(f"| {e['op']} | {'x'.join(map(str, e['shape']))} | {e['dtype']} | {e['mode']} | {e['backend']} | "
                    f"{e['median_s'] * 1e6:.1f} | {e['GBps']:.3g} | {_fmt(e.get('pct_copy_bw'), '.3g')} | "
                    f"{_fmt(peak, '.1f')} | {_fmt(e['speedup_vs_ref'], '.2f')} | {_fmt(e['speedup_vs_compile'], '.2f')} |")
    return "\n".join(rows)


def model_tables(models: list[dict]) -> str:
    train = [e for e in models if e["kind"] == "train"]
    infer = [e for e in models if e["kind"] == "infer"]
    out = []
    if train:
        out += ["| variant | config | lod | res | batch | img/s | peak GiB | compile |", "|---|---|---:|---:|---:|---:|---:|---|"]
        for e in sorted(train, key=lambda e: (e["variant"], e["config"], e["lod"])):
            peak = None if e.get("peak_mem_bytes") is None else e["peak_mem_bytes"] / 2**30
            out.append(f"| {e['variant']} | {e['config']} | {e['lod']} | {e['resolution']} | {e['batch']} | "
                       f"{e['img_per_s']:.1f} | {_fmt(peak, '.2f')} | {e.get('compile', '')} |")
    if infer:
        out += ["", "| inference | variant | config | res | batch | img/s | peak GiB |", "|---|---|---|---:|---:|---:|---:|"]
        for e in sorted(infer, key=lambda e: (e["what"], e["variant"], e["config"], e["lod"])):
            peak = None if e.get("peak_mem_bytes") is None else e["peak_mem_bytes"] / 2**30
            out.append(f"| {e['what']} | {e['variant']} | {e['config']} | {e['resolution']} | {e['batch']} | "
                       f"{e['img_per_s']:.1f} | {_fmt(peak, '.2f')} |")
    return "\n".join(out)


def slower(ops: list[dict], models: list[dict]) -> str:
    """Fused cases more than 2% slower than the eager reference or torch.compile of it, one line each."""
    lines = []
    for e in sorted(ops, key=lambda e: (*_key(e), e["backend"])):
        if e["backend"] in BASELINES:
            continue
        behind = [f"{b} {1 / e[f'speedup_vs_{b}']:.2f}x faster" for b in BASELINES
                  if e[f"speedup_vs_{b}"] is not None and e[f"speedup_vs_{b}"] < SLOWER]
        if behind:
            lines.append(f"- {e['op']} {'x'.join(map(str, e['shape']))} {e['dtype']} {e['mode']} "
                         f"{e['backend']}: {', '.join(behind)}")
    train = {(e["variant"], e["config"], e["lod"]): e["img_per_s"] for e in models if e["kind"] == "train"}
    for (variant, cfg, lod), ips in sorted(train.items()):
        if not variant.startswith(FUSED_VARIANT):
            continue
        behind = [f"{b} {train[(b, cfg, lod)] / ips:.2f}x faster" for b in MODEL_BASELINES
                  if train.get((b, cfg, lod), 0) * SLOWER > ips]
        if behind:
            lines.append(f"- training {variant} {cfg} lod {lod}: {', '.join(behind)}")
    return "\n".join(lines)


def projection(models: list[dict]) -> str:
    """ESTIMATE of the full ffhq schedule's wall time from the measured per-lod img/s.

    ffhq lods whose network and batch equal celeba-hq256's (shapes.same_network) use those
    measurements. 8 GPUs assume perfect data-parallel scaling (no communication cost)."""
    ffhq = shapes.CONFIGS["ffhq"]
    rate = defaultdict(dict)
    for e in models:
        if e["kind"] == "train":
            rate[e["variant"]][(e["config"], e["lod"])] = e["img_per_s"]
    rows = ["| variant | 1 GPU (days) | 8 GPUs (days) |", "|---|---:|---:|"]
    for variant, r in sorted(rate.items()):
        seconds = 0.0
        for lod in range(ffhq.layer_count):
            ips = r.get(("ffhq", lod))
            if ips is None and shapes.same_network("ffhq", "celeba-hq256", lod):
                ips = r.get(("celeba-hq256", lod))
            if ips is None:
                break
            seconds += ffhq.epochs_at(lod) * ffhq.train_images / ips
        else:
            rows.append(f"| {variant} | {seconds / 86400:.2f} | {seconds / 8 / 86400:.2f} |")
            continue
        rows.append(f"| {variant} | incomplete: no lod {lod} | – |")
    return "\n".join(rows) if len(rows) > 2 else ""


def _save(fig, title: str, path) -> str:
    """Title, lay out, write and close a figure; its file name."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plots(ops: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    op_names = sorted({e["op"] for e in ops})
    for mode in sorted({e["mode"] for e in ops}):
        for dtype in sorted({e["dtype"] for e in ops}):
            sel = [e for e in ops if e["mode"] == mode and e["dtype"] == dtype and e["backend"] != "ref"
                   and e["speedup_vs_ref"] is not None]
            if not sel:
                continue
            fig, axes = plt.subplots(len(op_names), 1, figsize=(10, 2.6 * len(op_names)), squeeze=False)
            for ax, op in zip(axes[:, 0], op_names):
                rows = [e for e in sel if e["op"] == op]
                labels = sorted({"x".join(map(str, e["shape"])) for e in rows}, key=lambda s: [int(v) for v in s.split("x")])
                backends = [b for b in BACKEND_ORDER if any(e["backend"] == b for e in rows)]
                width = 0.8 / max(len(backends), 1)
                for k, b in enumerate(backends):
                    val = {"x".join(map(str, e["shape"])): e["speedup_vs_ref"] for e in rows if e["backend"] == b}
                    ax.bar([i + k * width for i in range(len(labels))], [val.get(s, 0) for s in labels], width, label=b)
                ax.axhline(1.0, color="k", lw=0.8)
                ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, fontsize=7)
                ax.set_title(op, fontsize=9)
                ax.set_ylabel("× eager ref")
                ax.legend(fontsize=7)
            names.append(_save(fig, f"speedup vs eager reference, {mode}, {dtype}",
                               out / f"speedup_{slug(mode)}_{dtype}.png"))
        sel = [e for e in ops if e["mode"] == mode and e.get("pct_copy_bw") is not None]
        if not sel:
            continue
        fig, axes = plt.subplots(1, len(op_names), figsize=(3.2 * len(op_names), 3.2), squeeze=False, sharey=True)
        for ax, op in zip(axes[0], op_names):
            series = defaultdict(list)
            for e in sel:
                if e["op"] == op:
                    series[(e["backend"], e["dtype"])].append((e["bytes"], e["pct_copy_bw"]))
            for (b, dt), pts in sorted(series.items()):
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"{b} {dt}")
            ax.set_xscale("log")
            ax.set_title(op, fontsize=9)
            ax.set_xlabel("minimal bytes moved")
        axes[0, 0].set_ylabel("% of copy bandwidth")
        axes[0, -1].legend(fontsize=6)
        names.append(_save(fig, f"achieved bandwidth, {mode}", out / f"bandwidth_{slug(mode)}.png"))
    return names


def render(paths, out: Path | None) -> tuple[str, Path]:
    info, env, entries = load(paths)
    ops = [e for e in entries if e["kind"] == "op"]
    models = [e for e in entries if e["kind"] in ("train", "infer")]
    speedups(ops)
    out = out or Path(__file__).parent / "results" / device_folder(info)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# Benchmarks on {info.get('device')}", "", header(info, env, ops, models)]
    if ops:
        parts += ["", "## Fused ops (parity checked against fp64 before timing)", "", op_table(ops)]
    if models:
        parts += ["", "## Model throughput", "", model_tables(models)]
        proj = projection(models)
        if proj:
            parts += ["", "## ffhq full schedule, ESTIMATE from measured per-lod img/s", "",
                      projection.__doc__.split("\n\n")[1].strip(), "", proj]
    behind = slower(ops, models)
    if behind:
        parts += ["", "## Fused kernels still slower than eager or torch.compile (by more than 2%)", "", behind]
    figures = plots(ops, out) if ops else []
    parts += ["", *[f"![{f}]({f})" for f in figures]]
    text = "\n".join(parts) + "\n"
    (out / "report.md").write_text(text)
    for path in map(Path, paths):
        if path.resolve() != (out / path.name).resolve():
            shutil.copyfile(path, out / path.name)
    return text, out


README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def readme_summary(paths, out: Path) -> str:
    """fwd+bwd of each op at its largest benchmarked shape: the fastest fused backend against
    the eager reference and torch.compile of it, one row per dtype; then training img/s."""
    info, env, entries = load(paths)
    ops = [e for e in entries if e["kind"] == "op" and e["mode"] == "fwd+bwd"]
    speedups(ops)
    rows = ["| op | shape | dtype | fused backend | median µs | % copy BW | × eager | × compile |",
            "|---|---|---|---|---:|---:|---:|---:|"]
    for op in sorted({e["op"] for e in ops}):
        cases = [e for e in ops if e["op"] == op]
        shape = max((tuple(e["shape"]) for e in cases), key=lambda s: (s[2] * s[3], s))
        for dtype in sorted({e["dtype"] for e in cases}):
            fused = [e for e in cases if tuple(e["shape"]) == shape and e["dtype"] == dtype
                     and e["backend"] not in BASELINES]
            if not fused:
                continue
            e = min(fused, key=lambda e: e["median_s"])
            rows.append(f"| {op} | {'x'.join(map(str, shape))} | {dtype} | {e['backend']} | "
                        f"{e['median_s'] * 1e6:.0f} | {_fmt(e.get('pct_copy_bw'), '.3g')} | "
                        f"{_fmt(e['speedup_vs_ref'], '.2f')} | {_fmt(e['speedup_vs_compile'], '.2f')} |")
    train = [e for e in entries if e["kind"] == "train"]
    if train:
        rows += ["", "| training step | config | lod | batch | img/s | ms/iter | peak GiB |", "|---|---|---:|---:|---:|---:|---:|"]
        for e in sorted(train, key=lambda e: (e["config"], e["lod"], -e["img_per_s"])):
            peak = None if e.get("peak_mem_bytes") is None else e["peak_mem_bytes"] / 2**30
            rows.append(f"| {e['variant']} | {e['config']} | {e['lod']} | {e['batch']} | {e['img_per_s']:.1f} | "
                        f"{e['median_s'] * 1e3:.1f} | {_fmt(peak, '.2f')} |")
    root = Path(__file__).resolve().parent.parent
    where = out.resolve().relative_to(root) if out.resolve().is_relative_to(root) else out
    head = (f"Latest run: **{info.get('device')}** ({info.get('device_type')}, {info.get('cpu_threads')} threads), "
            f"torch {info.get('torch')}, triton {info.get('triton')}, commit `{str(info.get('commit'))[:10]}`; "
            f"forward+backward, parity-checked; full tables and plots in [{where}]({where}/report.md).")
    if ceilings(env):
        head += f" The {ceilings(env)}."
    return "\n".join([README_BEGIN, head, "", *rows, README_END])


def update_readme(readme: Path, summary: str) -> None:
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{readme}: no {README_BEGIN} ... {README_END} section to replace")
    before, rest = text.split(README_BEGIN, 1)
    readme.write_text(before + summary + rest.split(README_END, 1)[1])


DISPATCH_BACKENDS = ("cuda", "triton")


def dispatch_buckets(ops: list[dict]) -> dict[str, list[dict]]:
    """Per op, ascending numel buckets -> the faster of cuda and triton.

    At each benchmarked numel the winner has the smaller summed median over the (shape, dtype, mode)
    cases both backends ran; a bucket ends halfway (geometrically) to the next measured numel and
    the last one is unbounded. Adjacent buckets with one winner merge."""
    times = defaultdict(dict)  # (op, numel, shape, dtype, mode) -> {backend: median_s}
    for e in ops:
        if e["backend"] in DISPATCH_BACKENDS:
            times[(e["op"], math.prod(e["shape"]), tuple(e["shape"]), e["dtype"], e["mode"])][e["backend"]] = \
                e["median_s"]
    totals = defaultdict(lambda: dict.fromkeys(DISPATCH_BACKENDS, 0.0))  # (op, numel) -> summed times
    for (op, numel, *_), by_backend in times.items():
        if len(by_backend) == len(DISPATCH_BACKENDS):
            for b, t in by_backend.items():
                totals[(op, numel)][b] += t
    table = {}
    for op in sorted({op for op, _ in totals}):
        sizes = sorted(n for o, n in totals if o == op)
        buckets = []
        for i, numel in enumerate(sizes):
            t = totals[(op, numel)]
            winner = min(DISPATCH_BACKENDS, key=lambda b: (t[b], DISPATCH_BACKENDS.index(b)))
            bound = math.isqrt(numel * sizes[i + 1]) if i + 1 < len(sizes) else None
            if buckets and buckets[-1]["backend"] == winner:
                buckets[-1]["max_numel"] = bound
            else:
                buckets.append({"max_numel": bound, "backend": winner})
        table[op] = buckets
    return table


def write_dispatch_table(paths, table_path: Path) -> dict:
    """Put the cuda-vs-triton buckets of the benchmark files' GPU into the table at `table_path`
    (created if missing; other GPUs' entries are kept). Returns the device's entry."""
    info, _, entries = load(paths)
    if info.get("device_type") != "cuda":
        raise SystemExit(f"--dispatch-table needs a CUDA benchmark run; these files are from {info.get('device')!r} "
                         f"({info.get('device_type')})")
    ops = [e for e in entries if e["kind"] == "op"]
    buckets = dispatch_buckets(ops)
    if not buckets:
        raise SystemExit("--dispatch-table: no op case was benchmarked on both cuda and triton")
    table = json.loads(table_path.read_text()) if table_path.exists() else {"format": 1, "devices": {}}
    entry = {"provenance": {"commit": info.get("commit"), "torch": info.get("torch"), "triton": info.get("triton"),
                            "cuda": info.get("cuda"), "date": datetime.date.today().isoformat(),
                            "from": sorted(Path(p).name for p in paths)},
             "ops": buckets}
    table["devices"][info["device"]] = entry
    table_path.write_text(json.dumps(table, indent=2) + "\n")
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="pytest --benchmark-json outputs, and the env JSON of tools/gpu_env.py")
    parser.add_argument("--out", type=Path, default=None, help="folder (default benchmarks/results/<device>/)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also replace the README's benchmark summary (between the bench markers)")
    parser.add_argument("--dispatch-table", type=Path, default=None,
                        help="also write this GPU's cuda-vs-triton choice per op and size into this table "
                             "(alae_fast/ops/dispatch_table.json is the one impl='auto' reads)")
    args = parser.parse_args()
    text, out = render(args.json, args.out)
    print(text)
    print(f"written to {out}/")
    if args.readme:
        update_readme(args.readme, readme_summary(args.json, out.resolve()))
        print(f"updated the benchmark summary in {args.readme}")
    if args.dispatch_table:
        write_dispatch_table(args.json, args.dispatch_table)
        print(f"wrote the dispatch table of {args.dispatch_table}")


if __name__ == "__main__":
    main()
