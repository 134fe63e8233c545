"""Run a Trainer to the end of its schedule: log lines and losses.csv, grids, checkpoints, a
summary. All writes happen on the main rank only; under torchrun every rank runs this loop
(checkpoints gather per-rank state; a stop, from the time limit or SIGTERM/SIGINT on any rank,
is agreed by all ranks). Logged losses are rank 0's."""

from __future__ import annotations

import json
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from alae_fast.data.resize import resize
from alae_fast.infer import default_mix_layers, style_mix_ws
from alae_fast.io.images import save_grid
from alae_fast.train import checkpoint as ckpt
from alae_fast.train.logging import GrowthWatch, LossLog, TextLog, format_row

if TYPE_CHECKING:
    from alae_fast.models.alae import ALAEBase
    from alae_fast.train.config import TrainConfig
    from alae_fast.train.schedule import Phase
    from alae_fast.train.trainer import Interval


STOP_CHECK_EVERY = 10  # steps between agreeing on a stop (time limit, signal) across ranks (a collective)


@runtime_checkable
class LoopTrainer(Protocol):
    """What the loop needs of a trainer (alae_fast.train.Trainer is one)."""

    tc: TrainConfig  # grid_size, log/grid/snapshot periods, dataset, FID options
    device: torch.device
    out_dir: Path | None
    is_main: bool
    world_size: int
    ema: ALAEBase  # the EMA model that renders the grids
    fixed_z: torch.Tensor  # [2·grid², latent] grid latents
    fixed_real: torch.Tensor  # [2·grid, C, H, W] grid reals in [-1, 1]
    images: int  # images seen so far
    total_images: int
    steps: int
    done: bool
    interval: Interval  # loss means since the last log line
    bad_in_a_row: int  # iterations in a row whose update the guard skipped
    skipped_total: int
    checkpoint_dir: Path

    def phase(self) -> Phase: ...
    def step(self) -> dict: ...
    def time_now(self) -> float: ...
    def agree_any(self, flag: bool) -> bool: ...
    def save_checkpoint(self, directory: Path | None = None) -> Path | None: ...


def _crossed(before: int, after: int, period_kimg: float) -> bool:
    period = max(1, round(period_kimg * 1000))
    return after // period > before // period


@torch.no_grad()
def render_grids(trainer: LoopTrainer) -> dict:
    """Generations from fixed z, reconstructions of fixed reals and a style-mixing grid
    with the EMA model at the current lod/blend, as {name: (images, nrow)}."""
    ema, phase, n = trainer.ema, trainer.phase(), trainer.tc.grid_size
    lod, blend = phase.lod, phase.blend
    with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
        z = trainer.fixed_z[: n * n]
        fakes = ema.generate(ema.styles(z, lod, mixing_prob=0.0), lod, blend, noise="fixed")
        reals = resize(trainer.fixed_real, ema.resolution(lod))
        recons = ema.generate(ema.encode(reals, lod, blend), lod, blend, noise="fixed")
        # Rows alternate: n reals, then their n reconstructions.
        pairs = torch.stack([reals.view(2, n, *reals.shape[1:]), recons.view(2, n, *reals.shape[1:])], 1)
        grids = {"samples": (fakes, n), "reconstructions": (pairs.flatten(0, 2), n)}
        if ema.num_ws > 1:
            k = min(n, 6)
            # Rows: coarse styles of z[:k]; columns: the fine styles of k other fixed latents.
            rows = ema.styles(z[:k], lod, mixing_prob=0.0)
            cols = ema.styles(trainer.fixed_z[n * n: n * n + k], lod, mixing_prob=0.0)
            mix = style_mix_ws(ema, rows, cols, (default_mix_layers(ema, lod)[1], ema.num_ws), lod, blend)
            grids["mixing"] = (mix, k + 1)
    return grids


class SnapshotMetric:
    """FID of the EMA generator at snapshots (rank 0): the Inception and the real statistics per resolution are
    loaded once; real images come from a stream of their own, so the training data position is untouched, and
    the draws from a generator of their own, so the run's RNGs are too."""

    def __init__(self, trainer):
        from alae_fast.data import make_stream
        from alae_fast.metrics.fid import SnapshotFID

        tc = trainer.tc
        self.trainer = trainer
        with self._own_rng():
            real = make_stream(tc.dataset, device=trainer.device, seed=tc.seed + 7919)
            self.fid = SnapshotFID(tc.fid_inception, real, tc.fid_images, batch=32, device=trainer.device)

    def _own_rng(self):
        device = self.trainer.device
        return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    @torch.no_grad()
    def __call__(self) -> float:
        tr = self.trainer
        ema, phase = tr.ema, tr.phase()
        gen = torch.Generator(tr.step_unit.sampler.draw_device).manual_seed(tr.tc.seed + 104729)

        def generate(n):
            z = torch.randn(n, ema.latent_size, generator=gen, device=gen.device).to(tr.device)
            return ema.generate(ema.styles(z, phase.lod, mixing_prob=0.0), phase.lod, phase.blend, noise="fixed")

        with self._own_rng():
            return self.fid(generate)

    def log(self, path: Path, text) -> float:
        """Compute the FID, append it to `path` (one JSON object per snapshot) and to the text log."""
        fid, kimg = self(), self.trainer.images / 1000
        with open(path, "a") as f:
            f.write(json.dumps({"kimg": kimg, "lod": self.trainer.phase().lod, "fid": fid}) + "\n")
        text(f"kimg {kimg:9.3f}  fid {fid:.3f}")
        return fid


def save_grids(trainer: LoopTrainer, directory, suffix: str = "") -> dict:
    return {name: save_grid(images, Path(directory) / f"{name}{suffix}.png", nrow)
            for name, (images, nrow) in render_grids(trainer).items()}


class StopSignals:
    """SIGTERM (what SLURM and torchrun send before ending a job) and SIGINT set `received` instead of
    killing the run, so it can write a final checkpoint; a second SIGINT interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _memory_gb(device: torch.device) -> float:
    """Peak memory since the last call: CUDA allocations on a GPU, the process's peak RSS on a CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def train(trainer: LoopTrainer, *, max_steps: int | None = None, progress: bool = True, tensorboard: bool = True,
          resumed: bool = False, checkpoint_at_end: bool = True, max_seconds: float | None = None,
          text: TextLog | None = None) -> dict:
    """Train until the schedule ends, after `max_steps` more iterations or `max_seconds` of wall time,
    or on SIGTERM/SIGINT, whichever comes first; returns a summary (summary["stopped"] says why it
    stopped early). Log lines go to `text` (default: the console and <run>/log.txt). Raises
    trainer.NonFiniteTraining, with no checkpoint written, when the guard gives up."""
    tc, out, main = trainer.tc, trainer.out_dir, trainer.is_main
    log = None
    if main:
        text = text or TextLog(out)
        leftovers = ckpt.remove_temp_files(trainer.checkpoint_dir)
        if leftovers:
            text(f"removed {len(leftovers)} temp file(s) of interrupted checkpoint writes in {trainer.checkpoint_dir}")
        log = LossLog(out, tensorboard, resume_kimg=trainer.images / 1000 if resumed else None)
    growth = GrowthWatch()
    metric = SnapshotMetric(trainer) if main and tc.fid_inception else None
    bar = tqdm(total=round(trainer.total_images / 1000, 3), initial=round(trainer.images / 1000, 3),
               unit="kimg", disable=not (progress and main and sys.stderr.isatty()), dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} kimg [{elapsed}<{remaining}{postfix}]")
    steps, stopped, snapshot_due = 0, None, False
    start_images, t_start = trainer.images, trainer.time_now()
    t_log, img_log = t_start, trainer.images
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    with StopSignals() as signals:
        try:
            while not trainer.done and (max_steps is None or steps < max_steps):
                if trainer.world_size == 1 or steps % STOP_CHECK_EVERY == 0:
                    late = deadline is not None and time.perf_counter() > deadline
                    if trainer.agree_any(late or signals.received is not None):
                        stopped = signals.received or ("time limit" if late else "another rank stopped")
                        break
                before = trainer.images
                trainer.step()
                steps += 1
                bar.update(min(trainer.images, trainer.total_images) / 1000 - bar.n)
                log_now = _crossed(before, trainer.images, tc.log_kimg) or trainer.done
                if main and log_now:
                    now = trainer.time_now()
                    phase = trainer.phase()
                    row = log.log(trainer.images / 1000, {
                        "lod": phase.lod, "blend": phase.blend, **trainer.interval.means(),
                        "img_per_s": (trainer.images - img_log) / max(now - t_log, 1e-9),
                        "mem_gb": _memory_gb(trainer.device)})
                    text(format_row(row))
                    for note in growth.check(row):
                        text(note)
                    bar.set_postfix(img_s=f"{row['img_per_s']:.0f}", lod=phase.lod, refresh=False)
                    t_log, img_log = now, trainer.images
                if log_now:
                    trainer.interval.reset()
                if main and _crossed(before, trainer.images, tc.grid_kimg):
                    save_grids(trainer, out / "grids", f"-{trainer.images:09d}")
                # A snapshot waits for an iteration whose updates all went through (every rank sees the same
                # skips: gradients are averaged first).
                snapshot_due = snapshot_due or _crossed(before, trainer.images, tc.snapshot_kimg)
                if snapshot_due and not trainer.done and trainer.bad_in_a_row == 0:
                    trainer.save_checkpoint()  # every rank: the per-rank state is gathered
                    snapshot_due = False
                    if metric is not None:
                        metric.log(out / "metrics.jsonl", text)
        finally:
            bar.close()
            if log is not None:
                log.close()
    seconds = trainer.time_now() - t_start
    summary = {"kimg": trainer.images / 1000, "steps": trainer.steps, "lod": trainer.phase().lod,
               "seconds": round(seconds, 2),
               "img_per_s": round((trainer.images - start_images) / max(seconds, 1e-9), 1),
               "skipped_updates": trainer.skipped_total}
    if stopped:
        summary["stopped"] = stopped
    path = trainer.save_checkpoint() if checkpoint_at_end else None
    if main:
        if stopped:
            text(f"stopped at {trainer.images / 1000:.2f} kimg ({stopped})"
                 + (f"; resume with --resume from {path}" if path else ""))
        if checkpoint_at_end:
            summary["checkpoint"] = str(path)
        summary.update({k: str(v) for k, v in save_grids(trainer, out).items()})
        summary["loss_plot"] = str(log.plot())
        if log.rows:
            summary["final_losses"] = {k: round(v, 4) for k, v in log.rows[-1].items()
                                       if k.startswith("loss") or k == "r1"}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"trained {summary['kimg']:.2f} kimg in {summary['seconds']:.0f} s "
             f"({summary['img_per_s']:.0f} img/s), final lod {summary['lod']}"]
    if "final_losses" in summary:
        lines.append("final losses: " + ", ".join(f"{k}={v}" for k, v in summary["final_losses"].items()))
    for key in ("samples", "reconstructions", "mixing", "loss_plot", "checkpoint"):
        if key in summary:
            lines.append(f"{key:>15}: {summary[key]}")
    return "\n".join(lines)
