"""The ALAE training loop (SPEC §5): D/E step, G step and latent AE step per iteration,
progressive growing counted in images, EMA, mixed precision, exact resume.

Multi-GPU: `rank`/`world_size` pick the data shard and the per-rank batch
(global batch // world_size); every file write goes through `is_main`.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from alae_fast.data import make_stream
from alae_fast.models import build_model
from alae_fast.ops import blend_real
from alae_fast.train import checkpoint as ckpt
from alae_fast.train import losses
from alae_fast.train.config import RunConfig
from alae_fast.train.ema import ema_beta, make_ema, update_ema
from alae_fast.train.evaluate import resize
from alae_fast.train.schedule import Phase, Schedule

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHECKPOINT_FORMAT = "alae_fast-train-1"


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic


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
                 stream=None, loader="auto", rank=0, world_size=1, deterministic=False):
        if precision not in PRECISIONS:
            raise ValueError(f"Trainer: precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.cfg, self.tc = cfg, cfg.train
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = torch.device(device)
        self.precision = precision
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        seed_everything(self.tc.seed + rank, deterministic)

        self.model = build_model(cfg.model).to(self.device).train()
        self.ema = make_ema(self.model)
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

    def _optimize(self, loss: torch.Tensor, optimizers) -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.model.latent_size, device=self.device)

    def d_step(self, real: torch.Tensor, phase: Phase) -> dict:
        """E+D: softplus(D(E(fake))) + softplus(-D(E(real))) + gamma/2 * R1 on reals."""
        m, lod, blend = self.model, phase.lod, phase.blend
        with torch.no_grad(), self._autocast():
            fake = m.generate(m.styles(self._z(real.shape[0]), lod), lod, blend)
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
        """F+G with E, D frozen: softplus(-D(E(G(styles(z))))); also tracks w_avg."""
        m, lod, blend = self.model, phase.lod, phase.blend
        with frozen(m.encoder, m.mapping_d):
            with self._autocast():
                ws = m.styles(self._z(batch), lod)
                logits = m.discriminate(m.encode(m.generate(ws, lod, blend), lod, blend))
            loss = losses.g_adversarial(logits)
            self._optimize(loss, [self.opt_fg])
        m.update_w_avg(ws[:, 0])  # layer 0 is always F(z) of the first z
        return {"loss_g": loss.detach()}

    def ae_step(self, batch: int, phase: Phase) -> dict:
        """E, F, G: || E(G(w)) - w ||^2 with w = F(z), no mixing."""
        m, lod, blend = self.model, phase.lod, phase.blend
        with self._autocast():
            w = m.map(self._z(batch))
            w_rec = m.encode(m.generate(w, lod, blend), lod, blend)
        loss = losses.latent_ae(w_rec, w)
        self._optimize(loss, [self.opt_ed, self.opt_fg])
        return {"loss_ae": loss.detach()}

    def step(self) -> dict:
        """One iteration at the current phase; returns detached per-step losses."""
        phase = self.phase()
        if phase.lod != self.lod:
            self._enter_lod(phase)
        local = max(1, phase.batch // self.world_size)
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
            "stream": self.stream.state_dict(),
            "rng": ckpt.rng_state(),
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
        self.stream.load_state_dict(state["stream"])
        ckpt.set_rng_state(state["rng"])

    def save_checkpoint(self, directory=None) -> Path | None:
        if not self.is_main:
            return None
        directory = directory or self.out_dir / "checkpoints"
        return ckpt.save_checkpoint(self.state_dict(), directory, self.images, self.tc.keep_checkpoints)

    def resume(self, where) -> Path:
        """Load the newest readable checkpoint from a file or directory."""
        state, path = ckpt.load_latest(where, map_location=self.device)
        self.load_state_dict(state)
        return path

    @property
    def done(self) -> bool:
        return self.images >= self.total_images

    def time_now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
