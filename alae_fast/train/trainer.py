"""The ALAE training loop (SPEC §5): D/E step, G step and latent AE step per iteration,
progressive growing counted in images, EMA, mixed precision, exact resume.

Multi-GPU (launched by torchrun, see distributed.py): `rank`/`world_size` pick the data
shard and the per-rank batch (global batch / world_size); gradients are averaged over ranks
before every optimizer step; latents and style-mixing draws come from generators shared by
all ranks, each rank taking its slice of the global batch, so N ranks train on the same
samples as one process would. Every file write goes through `is_main`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import random
import time
from pathlib import Path

import numpy as np
import torch

from alae_fast.data import make_stream
from alae_fast.models import build_model
from alae_fast.ops import blend_real
from alae_fast.train import checkpoint as ckpt
from alae_fast.train import distributed as dist
from alae_fast.train import losses
from alae_fast.train.config import RunConfig
from alae_fast.train.ema import ema_beta, make_ema, update_ema
from alae_fast.train.evaluate import resize
from alae_fast.train.schedule import Phase, Schedule

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHECKPOINT_FORMAT = "alae_fast-train-1"
STOP_CHECK_EVERY = 10  # steps between agreeing on a time limit across ranks (a collective)


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


@contextlib.contextmanager
def frozen(*modules):
    """Parameters of `modules` take no gradient inside the block."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class Trainer:
    def __init__(self, cfg: RunConfig, out_dir=None, *, device="cpu", precision="fp32",
                 stream=None, loader="auto", rank=0, world_size=1, deterministic=False, noise="random"):
        if precision not in PRECISIONS:
            raise ValueError(f"Trainer: precision must be one of {list(PRECISIONS)}, got {precision!r}")
        check_batch_split(cfg.train.batch_per_lod, world_size)
        dist.check_group(world_size)
        self.cfg, self.tc = cfg, cfg.train
        self.noise = noise  # 'random' (training); 'fixed' makes runs comparable across world sizes
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
        # Shared by all ranks: each draws the global batch of z and keeps its slice.
        self.z_gen = torch.Generator(self.device).manual_seed(self.tc.seed + 1)
        self.mix_gen = torch.Generator().manual_seed(self.tc.seed + 2)
        self.stream = stream if stream is not None else make_stream(
            self.tc.dataset, loader=loader, device=self.device, rank=rank, world_size=world_size,
            seed=self.tc.seed, mirror=self.tc.mirror)
        self.full_res = int(self.stream.resolution)
        n = self.stream.num_images
        self.schedule = Schedule(self.model.max_lod + 1, self.tc.images_per_lod(n),
                                 self.tc.batch_per_lod, self.tc.lr_per_lod)
        self.total_images = self.tc.total_images(n)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.images = 0  # images seen over all ranks
        self.steps = 0
        self.lod: int | None = None
        self.opt_ed = self.opt_fg = None
        self._init_fixed_inputs()

    # ---- schedule ---------------------------------------------------------------------------
    def phase(self) -> Phase:
        return self.schedule.at(self.images)

    def _enter_lod(self, phase: Phase) -> None:
        """New level: stream resolution, fresh Adam state at the level's learning rate."""
        self.lod = phase.lod
        res = self.model.resolution(phase.lod)
        ratio = self.full_res // res
        exact = self.full_res % res == 0 and ratio & (ratio - 1) == 0
        self.stream.set_resolution(res if exact else self.full_res)
        adam = dict(lr=phase.lr, betas=tuple(self.tc.adam_betas), eps=self.tc.adam_eps)
        self.opt_ed = torch.optim.Adam(list(self.model.parameters_ed()), **adam)
        self.opt_fg = torch.optim.Adam(list(self.model.parameters_fg()), **adam)

    def _real_batch(self, batch: int, phase: Phase) -> torch.Tensor:
        x = self.stream.next_batch(batch).to(self.device, non_blocking=True)
        res = self.model.resolution(phase.lod)
        if x.shape[-1] != res:  # e.g. 32x32 digits for the 28x28 MLP
            x = resize(x, res)
        if phase.blend < 1.0:
            x = blend_real(x, phase.blend, impl=self.cfg.model.impl)
        return x

    # ---- the three steps ----------------------------------------------------------------------
    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _optimize(self, loss: torch.Tensor, optimizers, extra: torch.Tensor | None = None):
        """Backward, average gradients (and `extra`) over ranks, step; returns averaged `extra`."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.world_size > 1:
            extra = dist.reduce_gradients([p for opt in optimizers for g in opt.param_groups
                                           for p in g["params"]], extra)
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        return extra

    def _z(self, n: int) -> torch.Tensor:
        """This rank's n rows of a global batch of n * world_size latents."""
        z = torch.randn(n * self.world_size, self.model.latent_size, device=self.device, generator=self.z_gen)
        return z[self.rank * n:(self.rank + 1) * n]

    def _styles(self, n: int, lod: int) -> torch.Tensor:
        """F(z) per layer with style mixing as in ALAEBase.styles, but with the mixing decision
        and cutoff drawn from the shared generator, so every rank mixes alike."""
        m = self.model
        p = m.cfg.style_mixing_prob
        z = self._z(n)
        if p <= 0 or m.num_ws < 2 or torch.rand((), generator=self.mix_gen).item() >= p:
            return m.styles(z, lod, mixing_prob=0.0)
        active = min(2 * (lod + 1), m.num_ws)
        cutoff = int(torch.randint(1, active + 1, (), generator=self.mix_gen))
        w, w2 = m.map(torch.cat([z, self._z(n)])).chunk(2)
        layer = torch.arange(m.num_ws, device=w.device)[None, :, None]
        return torch.where(layer < cutoff, w[:, None], w2[:, None])

    def d_step(self, real: torch.Tensor, phase: Phase) -> dict:
        """E+D: softplus(D(E(fake))) + softplus(-D(E(real))) + gamma/2 * R1 on reals."""
        m, lod, blend = self.model, phase.lod, phase.blend
        with torch.no_grad(), self._autocast():
            fake = m.generate(self._styles(real.shape[0], lod), lod, blend, noise=self.noise)
        k = max(1, int(self.tc.r1_interval))
        with_r1 = self.tc.r1_gamma > 0 and self.steps % k == 0
        real = real.detach().requires_grad_(with_r1)
        with self._autocast():
            real_logits = m.discriminate(m.encode(real, lod, blend))
            fake_logits = m.discriminate(m.encode(fake, lod, blend))
        loss = losses.d_adversarial(real_logits, fake_logits)
        stats = {"loss_d": loss.detach()}
        if with_r1:
            r1 = losses.r1_penalty(real_logits, real, self.scaler)
            loss = loss + (self.tc.r1_gamma / 2) * k * r1
            stats["r1"] = r1.detach()
        self._optimize(loss, [self.opt_ed])
        return stats

    def g_step(self, batch: int, phase: Phase) -> dict:
        """F+G with E, D frozen: softplus(-D(E(G(styles(z))))); also tracks w_avg from the
        batch mean of w, averaged over ranks with the gradients (same w_avg on every rank)."""
        m, lod, blend = self.model, phase.lod, phase.blend
        with frozen(m.encoder, m.mapping_d):
            with self._autocast():
                ws = self._styles(batch, lod)
                logits = m.discriminate(m.encode(m.generate(ws, lod, blend, noise=self.noise), lod, blend))
            loss = losses.g_adversarial(logits)
            w_mean = ws[:, 0].detach().float().mean(0)  # layer 0 is always F(z) of the first z
            w_mean = self._optimize(loss, [self.opt_fg], extra=w_mean)
        m.update_w_avg(w_mean[None])
        return {"loss_g": loss.detach()}

    def ae_step(self, batch: int, phase: Phase) -> dict:
        """E, F, G: || E(G(w)) - w ||^2 with w = F(z), no mixing."""
        m, lod, blend = self.model, phase.lod, phase.blend
        with self._autocast():
            w = m.map(self._z(batch))
            w_rec = m.encode(m.generate(w, lod, blend, noise=self.noise), lod, blend)
        loss = losses.latent_ae(w_rec, w)
        self._optimize(loss, [self.opt_ed, self.opt_fg])
        return {"loss_ae": loss.detach()}

    def step(self) -> dict:
        """One iteration at the current phase; returns detached per-step losses."""
        phase = self.phase()
        if phase.lod != self.lod:
            self._enter_lod(phase)
        local = phase.batch // self.world_size  # divisible: checked in __init__
        stats = self.d_step(self._real_batch(local, phase), phase)
        stats.update(self.g_step(local, phase))
        stats.update(self.ae_step(local, phase))
        update_ema(self.ema, self.model, ema_beta(phase.batch, self.tc.ema_half_life_kimg * 1000))
        self.images += phase.batch
        self.steps += 1
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
            "opt_ed": self.opt_ed.state_dict() if self.opt_ed else None,
            "opt_fg": self.opt_fg.state_dict() if self.opt_fg else None,
            "scaler": self.scaler.state_dict(),
            "stream": ranks[0]["stream"],
            "rng": ranks[0]["rng"],
            "ranks": ranks,  # per-rank data position and RNGs (noise differs by rank)
            "shared_rng": {"z": self.z_gen.get_state(), "mix": self.mix_gen.get_state()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not an alae_fast training checkpoint (format {state.get('format')!r})")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.images, self.steps = int(state["images"]), int(state["steps"])
        self.lod = None
        if state["opt_ed"] is not None:
            self._enter_lod(self.phase())
            self.opt_ed.load_state_dict(state["opt_ed"])
            self.opt_fg.load_state_dict(state["opt_fg"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("ranks") or [{"rng": state["rng"], "stream": state["stream"]}]
        if len(ranks) == self.world_size:
            self.stream.load_state_dict(ranks[self.rank]["stream"])
            ckpt.set_rng_state(ranks[self.rank]["rng"])
        else:
            self._load_resharded(ranks)
        if "shared_rng" in state:
            self.z_gen.set_state(state["shared_rng"]["z"])
            self.mix_gen.set_state(state["shared_rng"]["mix"])

    def _load_resharded(self, ranks: list) -> None:
        """Resume on another world size: same epoch, the same share of it done; fresh RNGs."""
        old = ranks[0]["stream"]
        if self.is_main:
            warnings.warn(f"checkpoint written by {len(ranks)} ranks, resuming on {self.world_size}: the data "
                          "position is carried over approximately and the noise RNGs are reseeded", stacklevel=3)
        position = int(old["position"]) * len(ranks) // self.world_size
        self.stream.load_state_dict({**old, "rank": self.rank, "world_size": self.world_size, "position": position})
        seed_rngs(self.tc.seed + self.rank + 1_000_003 * self.steps)

    def save_checkpoint(self, directory=None) -> Path | None:
        """Call on every rank (the state is gathered); only rank 0 writes, and gets the path."""
        state = self.state_dict()
        if not self.is_main:
            return None
        directory = directory or self.out_dir / "checkpoints"
        return ckpt.save_checkpoint(state, directory, self.images, self.tc.keep_checkpoints)

    def resume(self, where, missing_ok: bool = False) -> Path | None:
        """Load the newest readable checkpoint from a file or directory. Rank 0 picks the file and
        every rank loads that one. With missing_ok, an empty directory means a fresh start (None)."""
        choice = None
        if self.is_main:
            try:
                state, path = ckpt.load_latest(where, map_location=self.device)
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
            state = ckpt.load_checkpoint(choice, map_location=self.device)
        self.load_state_dict(state)
        return Path(choice)

    def agree(self, flag: bool) -> bool:
        """Rank 0's flag on every rank (e.g. a time limit), so no rank is left in a collective."""
        return bool(dist.broadcast_object(bool(flag))) if self.world_size > 1 else bool(flag)

    @property
    def done(self) -> bool:
        return self.images >= self.total_images

    def time_now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
