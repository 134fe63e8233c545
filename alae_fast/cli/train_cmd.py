"""`alae-fast train` and `alae-fast demo`, single process or under torchrun (one process per
GPU; see docs/distributed.md). Only rank 0 prints and writes files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from alae_fast.data import load_builtin, make_stream
from alae_fast.cli.common import add_device_args, pick_device, pick_precision
from alae_fast.train import Trainer, available_configs, format_summary, load_config, train
from alae_fast.train import distributed
from alae_fast.train.checkpoint import list_checkpoints
from alae_fast.train.evaluate import evaluate_encoder

DEMO_MINUTES = 4.0  # cap on start-up + training, leaving time for the final grids and evaluation (< 5 min)


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train ALAE / StyleALAE from a config")
    p.add_argument("--config", required=True, help=f"built-in name ({', '.join(available_configs())}) or .yaml path")
    p.add_argument("--out", help="output directory (default runs/<config name>)")
    p.add_argument("--data", help="dataset source overriding the config (path or builtin:<name>)")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="resume from a checkpoint file or directory (default: <out>/checkpoints; starts "
                        "fresh if it holds none). Under torchrun, a restarted group always resumes")
    p.add_argument("--kimg", type=float, help="total length of the run in thousands of images")
    p.add_argument("--kimg-per-lod", type=float, help="images per level of detail, in kimg")
    p.add_argument("--loader", default="auto", help="data loader: auto, torch, dali, dali-cpu, memory")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much training time")
    add_device_args(p, precision=True)
    p.set_defaults(func=run_train)

    d = sub.add_parser("demo", help="train a small StyleALAE on sklearn's digits and write samples")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--kimg", type=float, help="shorter/longer run: total kimg (levels scale with it)")
    d.add_argument("--max-minutes", type=float, default=DEMO_MINUTES, help="stop training this long after start-up")
    d.add_argument("--threads", type=int, default=1,
                   help="CPU threads (the demo's small convolutions run best on 1)")
    d.add_argument("--no-progress", action="store_true")
    add_device_args(d, precision=True)
    d.set_defaults(func=run_demo)


def _resume_source(args, out: Path):
    """(where, missing_ok). A group restarted by torchrun resumes from its own newest checkpoint;
    otherwise an explicit --resume path must exist and --resume alone may start fresh."""
    own = out / "checkpoints"
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and list_checkpoints(own):
        return own, False
    if args.resume and args.resume != "auto":
        return args.resume, False
    return (own, True) if args.resume else (None, True)


def run_train(args) -> int:
    device = pick_device(args.device)
    env = distributed.init_from_env(device)
    try:
        return _train(args, env)
    finally:
        distributed.shutdown()


def _train(args, env) -> int:
    main = env.rank == 0
    say = print if main else (lambda *a, **k: None)
    cfg = load_config(args.config)
    tc = cfg.train
    if args.data:
        tc.dataset = args.data
    if args.kimg is not None:
        tc.total_kimg = args.kimg
    if args.kimg_per_lod is not None:
        tc.kimg_per_lod = args.kimg_per_lod
    if args.seed is not None:
        tc.seed = args.seed
    out = Path(args.out or Path("runs") / cfg.name)
    device = env.device
    trainer = Trainer(cfg, out, device=device, precision=pick_precision(args.precision, device),
                      loader=args.loader, deterministic=args.deterministic,
                      rank=env.rank, world_size=env.world_size)
    where, missing_ok = _resume_source(args, out)
    path = trainer.resume(where, missing_ok=missing_ok) if where is not None else None
    if path is not None:
        say(f"resumed from {path} at {trainer.images / 1000:.2f} kimg")
    elif where is not None:
        say(f"no checkpoint in {where}: starting from scratch")
    ranks = f" x {env.world_size} ranks" if env.world_size > 1 else ""
    say(f"training {cfg.name} on {device}{ranks} ({trainer.precision}), {trainer.total_images / 1000:.1f} kimg "
        f"-> {out}")
    max_seconds = args.max_minutes * 60 if args.max_minutes is not None else None
    summary = train(trainer, progress=not args.no_progress, resumed=path is not None, max_seconds=max_seconds)
    say(format_summary(summary))
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
    out = Path(args.out)
    images, labels = load_builtin("digits")  # once: the training stream and the evaluation
    stream = make_stream(images, device=device, seed=tc.seed, mirror=tc.mirror,
                         rank=env.rank, world_size=env.world_size)
    trainer = Trainer(cfg, out, device=device, precision=pick_precision(args.precision, device), stream=stream,
                      rank=env.rank, world_size=env.world_size)
    if env.rank != 0:  # rank 0 agrees the time limit, evaluates and writes
        train(trainer, progress=False, max_seconds=max(args.max_minutes * 60 - (time.perf_counter() - started), 1.0))
        return 0
    print(f"demo: StyleALAE {trainer.model.resolution(0)}x{trainer.model.resolution(0)} -> "
          f"{trainer.model.resolution(trainer.model.max_lod)}^2 on sklearn digits, "
          f"{tc.total_kimg:g} kimg on {device} ({trainer.precision})")
    budget = args.max_minutes * 60 - (time.perf_counter() - started)
    summary = train(trainer, progress=not args.no_progress, max_seconds=max(budget, 1.0))
    phase = trainer.phase()
    summary["latent_classification"] = evaluate_encoder(trainer.ema, images, labels, phase.lod, phase.blend,
                                                        device=device)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    acc = summary["latent_classification"]
    print(f"E(x) digit classification on a held-out split: 1-NN {acc['knn_1nn']:.3f}, "
          f"linear SVM {acc['linear_svm']:.3f}")
    print(f"images are in {out.resolve()} (samples.png, reconstructions.png, mixing.png, losses.png; "
          f"progress grids in grids/)")
    return 0
