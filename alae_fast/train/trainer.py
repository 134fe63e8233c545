"""The Trainer: data, the progressive-growing schedule, EMA, multi-GPU, checkpoints and the
non-finite guard around one ALAEStep (alae_fast/train/step.py; AAEStep for the AAE) per iteration.
Resume is exact from any checkpoint, level boundaries included.

Multi-GPU (launched by torchrun, see distributed.py): `rank`/`world_size` pick the data
shard and the per-rank batch (global batch / world_size); gradients are averaged over ranks
before every optimizer step; latents and style-mixing draws come from generators shared by
all ranks, each rank taking its slice of the global batch, so N ranks train on the same
samples as one process would. Every file write goes through `is_main`.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from alae_fast.data import make_stream
from alae_fast.io.checkpoint import load_checkpoint, load_latest
from alae_fast.models import build_model
from alae_fast.train import checkpoint as ckpt
from alae_fast.train import distributed as dist
from alae_fast.train.config import RunConfig
from alae_fast.train.ema import ema_beta, make_ema, update_ema
from alae_fast.data.resize import resize
from alae_fast.train.schedule import Phase, Schedule
from alae_fast.train.aae_step import AAEStep
from alae_fast.train.step import PRECISIONS, ALAEStep, StepOptions

CHECKPOINT_FORMAT = "alae_fast-train-2"


class NonFiniteTraining(RuntimeError):
    """Too many consecutive iterations had non-finite losses or gradients."""


def seed_rngs(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    seed_rngs(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic


def check_batch_split(batch_per_lod, world_size: int) -> None:
    """The global batch of every level must split evenly over the ranks."""
    for lod, batch in enumerate(batch_per_lod if isinstance(batch_per_lod, (list, tuple)) else [batch_per_lod]):
        if int(batch) % world_size:
            raise ValueError(f"the global batch {batch} of lod {lod} (batch_per_lod[{lod}]) does not split over "
                             f"world size {world_size}; use a world size that divides every batch_per_lod "
                             f"entry or change batch_per_lod in the config")


class Interval:
    """Running sums of the per-step losses until the next log row (kept in checkpoints, so a resumed
    run logs the same rows as an uninterrupted one)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.finite: dict[str, int] = {}
        self.steps = self.skipped = self.nonfinite = 0

    def add(self, stats: dict) -> None:
        self.steps += 1
        self.skipped += int(stats.get("skipped", 0))
        for key, value in stats.items():
            if key == "skipped":
                continue
            value = float(value)
            if math.isfinite(value):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.finite[key] = self.finite.get(key, 0) + 1
            else:
                self.nonfinite += 1
                self.sums.setdefault(key, 0.0)
                self.finite.setdefault(key, 0)

    def means(self) -> dict:
        """Mean of each loss over its finite values (NaN if none), plus the skipped/non-finite counts."""
        means = {k: self.sums[k] / self.finite[k] if self.finite[k] else float("nan") for k in self.sums}
        return {**means, "skipped": self.skipped, "nonfinite": self.nonfinite}

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "finite": dict(self.finite), "steps": self.steps,
                "skipped": self.skipped, "nonfinite": self.nonfinite}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.finite = dict(state["sums"]), dict(state["finite"])
        self.steps, self.skipped, self.nonfinite = int(state["steps"]), int(state["skipped"]), int(state["nonfinite"])


class Trainer:
    def __init__(self, cfg: RunConfig, out_dir=None, *, device="cpu", precision="fp32",
                 stream=None, loader="auto", rank=0, world_size=1, deterministic=False, noise="random"):
        if precision not in PRECISIONS:
            raise ValueError(f"Trainer: precision must be one of {list(PRECISIONS)}, got {precision!r}")
        check_batch_split(cfg.train.batch_per_lod, world_size)
        dist.check_group(world_size)
        self.cfg, self.tc = cfg, cfg.train
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = torch.device(device)
        self.precision = precision
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        seed_everything(self.tc.seed + rank, deterministic)

        self.model = build_model(cfg.model).to(self.device).train()
        if world_size > 1:
            dist.broadcast_module(self.model)  # every rank starts from rank 0's weights
        self.ema = make_ema(self.model)
        # noise 'random' trains as usual; 'fixed' makes runs comparable across world sizes.
        options = StepOptions(precision=precision, r1_gamma=self.tc.r1_gamma, r1_interval=self.tc.r1_interval,
                              adam_betas=tuple(self.tc.adam_betas), adam_eps=self.tc.adam_eps, noise=noise)
        step_class = AAEStep if cfg.model.kind == "aae" else ALAEStep
        self.step_unit = step_class(self.model, options, device=self.device, seed=self.tc.seed, rank=rank,
                                  world_size=world_size, reduce=dist.reduce_gradients if world_size > 1 else None)
        self.stream = stream if stream is not None else make_stream(
            self.tc.dataset, loader=loader, device=self.device, rank=rank, world_size=world_size,
            seed=self.tc.seed, mirror=self.tc.mirror, report_dir=self.out_dir)
        self.full_res = int(self.stream.resolution)
        n = self.stream.num_images
        self.schedule = Schedule(self.model.max_lod + 1, self.tc.images_per_lod(n),
                                 self.tc.batch_per_lod, self.tc.lr_per_lod)
        self.total_images = self.tc.total_images(n)
        self._check_data()
        self.images = 0  # images seen over all ranks
        self.steps = 0
        self.bad_in_a_row = 0  # consecutive iterations with a skipped update
        self.skipped_total = 0
        self.interval = Interval()
        self._init_fixed_inputs()

    def _check_data(self) -> None:
        """The data must have the model's channels and reach the resolution of the last level this run trains."""
        name, source = self.cfg.name, self.tc.dataset
        if self.stream.channels != self.model.channels:
            raise ValueError(f"dataset {source} has {self.stream.channels} channel(s) but config {name!r} has "
                             f"model.channels = {self.model.channels}; use a matching config or --data")
        top = self.schedule.lod(self.total_images - 1)
        needed = self.model.resolution(top)
        if self.full_res < needed:
            raise ValueError(f"dataset {source} is {self.full_res}x{self.full_res} but config {name!r} trains up to "
                             f"{needed}x{needed} (lod {top}); use --data at that resolution (alae-fast prepare "
                             "writes every level) or a shorter run (--kimg)")

    # ---- schedule ---------------------------------------------------------------------------
    def phase(self) -> Phase:
        return self.schedule.at(self.images)

    @property
    def lod(self) -> int | None:
        """The level the optimizers belong to (None before the first step)."""
        return self.step_unit.lod

    def _set_stream_resolution(self, lod: int) -> None:
        res = self.model.resolution(lod)
        ratio = self.full_res // res
        exact = self.full_res % res == 0 and ratio & (ratio - 1) == 0
        self.stream.set_resolution(res if exact else self.full_res)

    def _enter_lod(self, phase: Phase) -> None:
        """New level: stream resolution, fresh Adam state at the level's learning rate."""
        self._set_stream_resolution(phase.lod)
        self.step_unit.begin_lod(phase.lod, phase.lr)

    def _real_batch(self, batch: int, phase: Phase) -> torch.Tensor:
        x = self.stream.next_batch(batch).to(self.device, non_blocking=True)
        res = self.model.resolution(phase.lod)
        if x.shape[-1] != res:  # e.g. 32x32 digits for the 28x28 MLP
            x = resize(x, res)
        return self.model.fade_reals(x, phase.lod, phase.blend)

    def step(self) -> dict:
        """One iteration at the current phase; returns detached per-step losses and `skipped`.
        Raises NonFiniteTraining after `max_bad_steps` consecutive iterations with a skipped update."""
        phase = self.phase()
        if phase.lod != self.lod:
            self._enter_lod(phase)
        local = phase.batch // self.world_size  # divisible: checked in __init__
        stats = self.step_unit(self._real_batch(local, phase), phase.lod, phase.blend)
        update_ema(self.ema, self.model, ema_beta(phase.batch, self.tc.ema_half_life_kimg * 1000))
        self.images += phase.batch
        self.steps += 1
        self.interval.add(stats)
        self.skipped_total += stats["skipped"]
        self.bad_in_a_row = self.bad_in_a_row + 1 if stats["skipped"] else 0
        if self.bad_in_a_row >= self.tc.max_bad_steps:
            losses_now = ", ".join(f"{k}={float(v):.4g}" for k, v in stats.items() if k != "skipped")
            raise NonFiniteTraining(
                f"{self.bad_in_a_row} consecutive iterations had non-finite losses or gradients (last: {losses_now}) "
                f"at {self.images / 1000:.2f} kimg; stopped without writing a checkpoint, so the last good one is "
                f"intact. Lower the learning rate, or train in bf16 rather than fp16 (max_bad_steps sets the limit)")
        return stats

    # ---- fixed inputs for grids ------------------------------------------------------------
    def _init_fixed_inputs(self) -> None:
        """Fixed z (own generator) and fixed reals (the stream position is restored after)."""
        n = self.tc.grid_size
        gen = torch.Generator().manual_seed(self.tc.seed + 2024)
        self.fixed_z = torch.randn(2 * n * n, self.model.latent_size, generator=gen).to(self.device)
        position = self.stream.state_dict()
        self.stream.set_resolution(self.full_res)
        self.fixed_real = self.stream.next_batch(2 * n).to(self.device)
        self.stream.load_state_dict(position)

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The checkpoint. A collective under torchrun: call it on every rank."""
        own = {"rng": ckpt.rng_state(), "stream": self.stream.state_dict()}
        ranks = dist.gather_objects(own) if self.world_size > 1 else [own]
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "precision": self.precision,
            "images": self.images,
            "steps": self.steps,
            "lod": self.phase().lod,
            "blend": self.phase().blend,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "step": self.step_unit.state_dict(),
            "guard": {"bad_in_a_row": self.bad_in_a_row, "skipped_total": self.skipped_total},
            "interval": self.interval.state_dict(),
            "ranks": ranks,  # per-rank data position and RNGs (noise differs by rank)
        }

    def check_compatible(self, state: dict, where) -> None:
        """A checkpoint must come from the same model config; say which keys differ."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{where}: not an alae_fast training checkpoint of this version "
                             f"(format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
        ours = self.cfg.to_dict()["model"]
        theirs = (state.get("config") or {}).get("model") or {}
        diff = [f"model.{k}={theirs.get(k)!r} there, {ours[k]!r} here" for k in ours
                if theirs.get(k) != ours[k]]
        if diff:
            raise ValueError(f"{where} was trained with another model config ({'; '.join(diff)}); resume it with "
                             f"its own config ({(state.get('config') or {}).get('name')!r}) or start a new run")

    def load_state_dict(self, state: dict, where="checkpoint") -> None:
        self.check_compatible(state, where)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.images, self.steps = int(state["images"]), int(state["steps"])
        self.step_unit.load_state_dict(state["step"])
        if self.lod is not None:
            self._set_stream_resolution(self.lod)
        self.bad_in_a_row = int(state["guard"]["bad_in_a_row"])
        self.skipped_total = int(state["guard"]["skipped_total"])
        self.interval.load_state_dict(state["interval"])
        ranks = state["ranks"]
        if len(ranks) == self.world_size:
            self.stream.load_state_dict(ranks[self.rank]["stream"])
            ckpt.set_rng_state(ranks[self.rank]["rng"])
        else:
            self._load_resharded(ranks)

    def _load_resharded(self, ranks: list) -> None:
        """Resume on another world size: same epoch, the same share of it done; fresh RNGs."""
        old = ranks[0]["stream"]
        if self.is_main:
            warnings.warn(f"checkpoint written by {len(ranks)} ranks, resuming on {self.world_size}: the data "
                          "position is carried over approximately and the noise RNGs are reseeded", stacklevel=3)
        position = int(old["position"]) * len(ranks) // self.world_size
        self.stream.load_state_dict({**old, "rank": self.rank, "world_size": self.world_size, "position": position})
        seed_rngs(self.tc.seed + self.rank + 1_000_003 * self.steps)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def save_checkpoint(self, directory=None) -> Path | None:
        """Call on every rank (the state is gathered); only rank 0 writes, and gets the path."""
        state = self.state_dict()
        if not self.is_main:
            return None
        return ckpt.save_checkpoint(state, directory or self.checkpoint_dir, self.images, self.tc.keep_checkpoints)

    def resume(self, where, missing_ok: bool = False) -> Path | None:
        """Load the newest readable checkpoint from a file or directory. Rank 0 picks the file and
        every rank loads that one; in the run's own checkpoint directory, files newer than the one
        loaded (unreadable ones) are moved to superseded/. With missing_ok, an empty directory means
        a fresh start (None)."""
        choice = None
        if self.is_main:
            try:
                state, path = load_latest(where, map_location=self.device)
                choice = str(path)
            except FileNotFoundError as exc:
                choice = None if missing_ok else exc
            except Exception as exc:  # every rank must learn of it, or the others wait forever
                choice = RuntimeError(str(exc))
        choice = dist.broadcast_object(choice)
        if isinstance(choice, Exception):
            raise choice
        if choice is None:
            return None
        if not self.is_main:
            if not Path(choice).is_file():
                raise FileNotFoundError(f"rank {self.rank} cannot see checkpoint {choice} chosen by rank 0; "
                                        "multi-node runs need --out on a filesystem shared by all nodes")
            state = load_checkpoint(choice, map_location=self.device)
        self.load_state_dict(state, where=choice)
        if self.is_main and self.out_dir is not None and Path(choice).parent.resolve() == self.checkpoint_dir.resolve():
            for moved in ckpt.set_aside_newer(self.checkpoint_dir, self.images):
                warnings.warn(f"moved {moved.name}, newer than the resumed checkpoint, to "
                              f"{self.checkpoint_dir / ckpt.SUPERSEDED}", stacklevel=2)
        return Path(choice)

    def agree_any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank (a collective under torchrun)."""
        return dist.any_rank(flag, self.device) if self.world_size > 1 else bool(flag)

    @property
    def done(self) -> bool:
        return self.images >= self.total_images

    def time_now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
