"""One ALAE training iteration: the D/E step with R1, the G/F step and the latent-autoencoder step.

The Trainer, the model benchmark and the cost counter all run this one unit. It owns the
optimizers (fresh Adam state per level of detail), the loss scaler, the latent draws and the
non-finite guard; the caller owns data, schedule, EMA and checkpoints.

Per iteration, with x real and every generate() drawing its own z:
  D/E  softplus(D(E(G(w̃)))) + softplus(−D(E(x))) + γ/2·k·‖∇ₓD(E(x))‖² (R1 every k-th D step)
  G/F  softplus(−D(E(G(w̃))))  with E and D frozen
  AE   ‖E(G(w)) − w‖²          w = F(z), no style mixing
w̃ is style-mixed. w_avg follows the original rule: it moves on every generate() call (three times
per iteration) towards the batch mean of F(z).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from alae_fast.train import losses

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepOptions:
    precision: str = "fp32"        # fp32 | bf16 | fp16 (loss-scaled)
    r1_gamma: float = 10.0
    r1_interval: int = 1           # lazy R1: the penalty on every k-th D step, scaled by k
    adam_betas: tuple = (0.0, 0.99)
    adam_eps: float = 1e-8
    noise: str = "random"          # the generator's noise mode while training
    fused_adam: bool | None = None  # None: fused Adam on CUDA, the foreach one elsewhere
    guard: bool = True             # skip updates whose loss or gradients are not finite
    compile: bool = False          # torch.compile(fullgraph=True) the generation, G and AE steps, per lod
    compile_backend: str = "inductor"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"StepOptions: precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if int(self.r1_interval) < 1:
            raise ValueError(f"StepOptions: r1_interval must be >= 1, got {self.r1_interval}")


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


class LatentSampler:
    """z and style-mixing draws from generators shared by all ranks: each rank draws the global batch
    and keeps its slice, so N ranks train on the latents one process would."""

    def __init__(self, latent_size: int, device: torch.device, seed: int, rank: int = 0, world_size: int = 1):
        self.latent_size, self.rank, self.world_size = latent_size, rank, world_size
        self.device = torch.device(device)
        # CUDA draws on the GPU; anything else (CPU, and meta for the cost counter) draws on the CPU.
        self.draw_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.z_gen = torch.Generator(self.draw_device).manual_seed(seed + 1)
        self.mix_gen = torch.Generator().manual_seed(seed + 2)

    def z(self, n: int) -> torch.Tensor:
        """This rank's n rows of a global batch of n·world_size latents."""
        z = torch.randn(n * self.world_size, self.latent_size, device=self.draw_device, generator=self.z_gen)
        return z[self.rank * n:(self.rank + 1) * n].to(self.device)

    def draw(self, model, n: int, lod: int, mixing: bool = True):
        """(z, z2, cutoff) for model.mixed_styles: style-mixed with the model's probability when `mixing`
        (z2 and cutoff are None without mixing)."""
        cutoff = model.mixing_cutoff(lod, None if mixing else 0.0, generator=self.mix_gen)
        z = self.z(n)
        return z, None if cutoff is None else self.z(n), cutoff

    def state_dict(self) -> dict:
        return {"z": self.z_gen.get_state(), "mix": self.mix_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.z_gen.set_state(state["z"])
        self.mix_gen.set_state(state["mix"])


class ALAEStep:
    """The three optimizer steps of one ALAE iteration on `model` (StyleALAE or MLP ALAE).

    `reduce(params, extra) -> extra`, when given, averages the gradients of `params` and the tensor
    `extra` over ranks before every optimizer step (see distributed.reduce_gradients).
    """

    def __init__(self, model, options: StepOptions, *, device, seed: int = 0, rank: int = 0, world_size: int = 1,
                 reduce=None):
        self.model, self.options = model, options
        self.device = torch.device(device)
        self.reduce = reduce
        self.sampler = LatentSampler(model.latent_size, self.device, seed, rank, world_size)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=options.precision == "fp16")
        self.lod: int | None = None  # the level the optimizers belong to
        self.opt_ed = self.opt_fg = None
        self.d_steps = 0
        self._compiled: dict = {}  # per lod: the compiled forwards
        self._checked: set = set()

    # ---- optimizers ---------------------------------------------------------------------------------
    def begin_lod(self, lod: int, lr: float) -> None:
        """A new level of detail: fresh Adam state for E+D and F+G at learning rate `lr`."""
        o = self.options
        fused = o.fused_adam if o.fused_adam is not None else self.device.type == "cuda"
        adam = dict(lr=lr, betas=tuple(o.adam_betas), eps=o.adam_eps, fused=fused or None)
        self.opt_ed = torch.optim.Adam(list(self.model.parameters_ed()), **adam)
        self.opt_fg = torch.optim.Adam(list(self.model.parameters_fg()), **adam)
        self.lod = lod
        if o.compile:  # new shapes: start from a clean cache rather than pile up recompiles
            torch._dynamo.reset()
            self._compiled, self._checked = {}, set()

    def autocast(self):
        dtype = PRECISIONS[self.options.precision]
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _apply(self, loss: torch.Tensor, optimizers, w_mean: torch.Tensor) -> bool:
        """Backward, average over ranks, step unless the loss or a gradient is not finite; then move w_avg.
        Returns False when the update was skipped."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
        # One vector reduced with the gradients: [loss is not finite, batch mean of w ...].
        extra = torch.cat([(~torch.isfinite(loss.detach())).float().reshape(1), w_mean.detach().float()])
        if self.reduce is not None:
            extra = self.reduce(params, extra)
        applied = True
        if self.scaler.is_enabled():  # fp16: the scaler skips steps with inf/NaN gradients and backs off
            scale = self.scaler.get_scale()
            for opt in optimizers:
                self.scaler.step(opt)
            self.scaler.update()
            applied = self.scaler.get_scale() >= scale and extra[0].item() == 0
        elif self.options.guard and not _finite(extra, params):
            applied = False
        else:
            for opt in optimizers:
                opt.step()
        self.model.update_w_avg(extra[1:][None])
        return applied

    # ---- the three steps ----------------------------------------------------------------------------
    # Each forward is a function of tensors and (lod, blend), so the same code runs eager or compiled.
    def _fake_images(self, z, z2, cutoff, lod, blend):
        m = self.model
        with torch.no_grad(), self.autocast():
            ws = m.mixed_styles(z, z2, cutoff)
            return m.generate(ws, lod, blend, noise=self.options.noise), ws[:, 0].mean(0)

    def _g_loss(self, z, z2, cutoff, lod, blend):
        m = self.model
        with self.autocast():
            ws = m.mixed_styles(z, z2, cutoff)
            logits = m.discriminate(m.encode(m.generate(ws, lod, blend, noise=self.options.noise), lod, blend))
        return losses.g_adversarial(logits), ws[:, 0].mean(0)

    def _ae_loss(self, z, lod, blend):
        m = self.model
        with self.autocast():
            ws = m.mixed_styles(z, None, None)
            w_rec = m.encode(m.generate(ws, lod, blend, noise=self.options.noise), lod, blend)
        return losses.latent_ae(w_rec, ws[:, 0]), ws[:, 0].mean(0)

    def _run(self, name: str, z, z2, cutoff, lod, blend):
        """The forward `name` ('fake', 'g' or 'ae'), compiled when the options ask and the level is stable."""
        eager = {"fake": self._fake_images, "g": self._g_loss, "ae": lambda z, z2, c, lod, blend: self._ae_loss(
            z, lod, blend)}[name]
        if not self.options.compile or blend < 1.0:
            return eager(z, z2, cutoff, lod, blend)
        # Compiled graphs take the mixing draw as tensors (always two latents) so that one graph serves
        # every draw; a transition's changing blend would recompile every step, so transitions run eager.
        z2 = z if z2 is None else z2
        cutoff = torch.tensor(self.model.num_ws if cutoff is None else cutoff, device=z.device)
        fn = self._compiled.get(name)
        if fn is None:
            fn = self._compiled[name] = torch.compile(eager, fullgraph=True, dynamic=False,
                                                      backend=self.options.compile_backend)
        frames = _compiled_frames()
        out = fn(z, z2, cutoff, lod, blend)
        if name not in self._checked:
            if _compiled_frames() <= frames:
                raise RuntimeError(f"ALAEStep: compile was asked for but the {name!r} step ran eagerly")
            self._checked.add(name)
        return out

    def d_step(self, real: torch.Tensor, lod: int, blend: float) -> dict:
        m, o = self.model, self.options
        fake, w_mean = self._run("fake", *self.sampler.draw(m, real.shape[0], lod), lod, blend)
        k = int(o.r1_interval)
        with_r1 = o.r1_gamma > 0 and self.d_steps % k == 0
        self.d_steps += 1
        real = real.detach().requires_grad_(with_r1)
        with self.autocast():
            real_logits = m.discriminate(m.encode(real, lod, blend))
            fake_logits = m.discriminate(m.encode(fake, lod, blend))
        loss = losses.d_adversarial(real_logits, fake_logits)
        stats = {"loss_d": loss.detach()}
        if with_r1:
            r1 = losses.r1_penalty(real_logits, real, self.scaler)
            loss = loss + (o.r1_gamma / 2) * k * r1
            stats["r1"] = r1.detach()
        stats["skipped"] = int(not self._apply(loss, [self.opt_ed], w_mean))
        return stats

    def g_step(self, batch: int, lod: int, blend: float) -> dict:
        m = self.model
        with frozen(m.encoder, m.mapping_d):
            loss, w_mean = self._run("g", *self.sampler.draw(m, batch, lod), lod, blend)
            skipped = not self._apply(loss, [self.opt_fg], w_mean)
        return {"loss_g": loss.detach(), "skipped": int(skipped)}

    def ae_step(self, batch: int, lod: int, blend: float) -> dict:
        loss, w_mean = self._run("ae", *self.sampler.draw(self.model, batch, lod, mixing=False), lod, blend)
        skipped = not self._apply(loss, [self.opt_ed, self.opt_fg], w_mean)
        return {"loss_ae": loss.detach(), "skipped": int(skipped)}

    def __call__(self, real: torch.Tensor, lod: int, blend: float) -> dict:
        """One iteration on this rank's real batch; detached losses and `skipped`, the number of the
        three updates the guard skipped (0..3)."""
        if self.lod != lod:
            raise RuntimeError(f"ALAEStep: optimizers belong to lod {self.lod}; call begin_lod({lod}, lr) first")
        batch = real.shape[0]
        stats = self.d_step(real, lod, blend)
        skipped = stats.pop("skipped")
        for part in (self.g_step(batch, lod, blend), self.ae_step(batch, lod, blend)):
            skipped += part.pop("skipped")
            stats.update(part)
        stats["skipped"] = skipped
        return stats

    # ---- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"lod": self.lod, "d_steps": self.d_steps, "sampler": self.sampler.state_dict(),
                "opt_ed": self.opt_ed.state_dict() if self.opt_ed else None,
                "opt_fg": self.opt_fg.state_dict() if self.opt_fg else None,
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restores the optimizers of the level they were saved at (their learning rate included)."""
        self.d_steps = int(state["d_steps"])
        self.sampler.load_state_dict(state["sampler"])
        self.lod, self.opt_ed, self.opt_fg = None, None, None
        if state["lod"] is not None:
            self.begin_lod(int(state["lod"]), lr=0.0)  # the saved param_groups carry the real lr
            self.opt_ed.load_state_dict(state["opt_ed"])
            self.opt_fg.load_state_dict(state["opt_fg"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])


def _compiled_frames() -> int:
    """How many frames dynamo has compiled so far (to prove a compiled path ran)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _finite(extra: torch.Tensor, params) -> bool:
    """The reduced loss flag is 0 and every gradient is finite (one host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack(torch._foreach_norm(grads)) if grads else extra.new_zeros(1)
    return bool((extra[0] == 0) & torch.isfinite(norms).all())
