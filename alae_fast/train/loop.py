"""Run a Trainer to the end of its schedule: progress bar, loss log, grids, checkpoints,
summary. All writes happen on the main rank only; under torchrun every rank runs this loop
(checkpoints gather per-rank state, the time limit is rank 0's decision). Logged losses are
rank 0's."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from alae_fast.train.grids import mixing_grid, save_grid
from alae_fast.train.evaluate import resize
from alae_fast.train.logging import LossLog
from alae_fast.train.trainer import STOP_CHECK_EVERY


def _crossed(before: int, after: int, period_kimg: float) -> bool:
    period = max(1, round(period_kimg * 1000))
    return after // period > before // period


@torch.no_grad()
def render_grids(trainer) -> dict:
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
            mix = mixing_grid(ema, trainer.fixed_z[n * n: n * n + k], z[:k], lod, blend)
            grids["mixing"] = (mix, k + 1)
    return grids


def save_grids(trainer, directory, suffix: str = "") -> dict:
    return {name: save_grid(images, Path(directory) / f"{name}{suffix}.png", nrow)
            for name, (images, nrow) in render_grids(trainer).items()}


def train(trainer, *, max_steps: int | None = None, progress: bool = True, tensorboard: bool = True,
          resumed: bool = False, checkpoint_at_end: bool = True, max_seconds: float | None = None) -> dict:
    """Train until the schedule ends, or after `max_steps` more iterations / `max_seconds`
    of wall time, whichever comes first; returns a summary."""
    tc, out, main = trainer.tc, trainer.out_dir, trainer.is_main
    log = LossLog(out, tensorboard, resume_kimg=trainer.images / 1000 if resumed else None) if main else None
    bar = tqdm(total=round(trainer.total_images / 1000, 3), initial=round(trainer.images / 1000, 3),
               unit="kimg", disable=not (progress and main), dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} kimg [{elapsed}<{remaining}{postfix}]")
    sums, count, steps = {}, 0, 0
    start_images, t_start = trainer.images, trainer.time_now()
    t_log, img_log = t_start, trainer.images
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    while not trainer.done and (max_steps is None or steps < max_steps):
        check = deadline is not None and (trainer.world_size == 1 or steps % STOP_CHECK_EVERY == 0)
        if check and trainer.agree(time.perf_counter() > deadline):
            if main:
                tqdm.write(f"stopping at {trainer.images / 1000:.2f} kimg: time limit of {max_seconds:.0f} s reached")
            break
        before = trainer.images
        stats = trainer.step()
        steps += 1
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        phase = trainer.phase()
        bar.update((trainer.images - before) / 1000)
        if main and (_crossed(before, trainer.images, tc.log_kimg) or trainer.done):
            now = trainer.time_now()
            rate = (trainer.images - img_log) / max(now - t_log, 1e-9)
            values = {k: (v / count).item() if torch.is_tensor(v) else v / count for k, v in sums.items()}
            log.log(trainer.images / 1000, {**values, "lod": phase.lod, "blend": phase.blend, "img_per_s": rate})
            bar.set_postfix(img_s=f"{rate:.0f}", lod=phase.lod, blend=f"{phase.blend:.2f}",
                            ae=f"{values.get('loss_ae', 0):.3f}", refresh=False)
            sums, count, t_log, img_log = {}, 0, now, trainer.images
        if main and _crossed(before, trainer.images, tc.grid_kimg):
            save_grids(trainer, out / "grids", f"-{trainer.images:09d}")
        if _crossed(before, trainer.images, tc.snapshot_kimg) and not trainer.done:
            trainer.save_checkpoint()  # every rank: the per-rank state is gathered
    bar.close()
    seconds = trainer.time_now() - t_start
    summary = {"kimg": trainer.images / 1000, "steps": trainer.steps, "lod": trainer.phase().lod,
               "seconds": round(seconds, 2),
               "img_per_s": round((trainer.images - start_images) / max(seconds, 1e-9), 1)}
    path = trainer.save_checkpoint() if checkpoint_at_end else None
    if main:
        if checkpoint_at_end:
            summary["checkpoint"] = str(path)
        summary.update({k: str(v) for k, v in save_grids(trainer, out).items()})
        summary["loss_plot"] = str(log.plot())
        if log.rows:
            summary["final_losses"] = {k: round(v, 4) for k, v in log.rows[-1].items()
                                       if k.startswith("loss") or k == "r1"}
        log.close()
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
