"""One Adversarial Autoencoder iteration (Makhzani et al.): a reconstruction phase, then a
regularisation phase that pushes the aggregated posterior q(z) = E_x[q(z|x)] towards the prior N(0, I).

Per batch of reals x:
  reconstruction  ‖G(E(x)) − x‖²                              E and G
  discriminator   softplus(−D(z)) + softplus(D(E(x)))  z ~ N(0, I)   D
  generator       softplus(−D(E(x)))                          E, with D frozen
Same interface as ALAEStep (begin_lod, __call__, state_dict), so the Trainer runs either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alae_fast.train import losses
from alae_fast.train.step import ALAEStep, frozen


class AAEStep(ALAEStep):
    """The three optimizer steps of one AAE iteration on an AAE model; the loss scaler, prior draws, the
    non-finite guard and multi-rank averaging work as in ALAEStep (R1 and `compile` do not apply)."""

    def begin_lod(self, lod: int, lr: float) -> None:
        """Fresh Adam state at `lr` for E+G (reconstruction), D, and E (as the generator of codes)."""
        o = self.options
        fused = o.fused_adam if o.fused_adam is not None else self.device.type == "cuda"
        adam = dict(lr=lr, betas=tuple(o.adam_betas), eps=o.adam_eps, fused=fused or None)
        m = self.model
        self.opt_ae = torch.optim.Adam(list(m.parameters_ae()), **adam)
        self.opt_d = torch.optim.Adam(list(m.mapping_d.parameters()), **adam)
        self.opt_e = torch.optim.Adam(list(m.encoder.parameters()), **adam)
        self.lod = lod

    def __call__(self, real: torch.Tensor, lod: int, blend: float) -> dict:
        """One iteration on this rank's real batch [N, C, S, S]; detached losses and `skipped` (0..3)."""
        if self.lod != lod:
            raise RuntimeError(f"AAEStep: optimizers belong to lod {self.lod}; call begin_lod({lod}, lr) first")
        m = self.model
        real = real.detach()
        with self.autocast():
            loss_ae = F.mse_loss(m.generate(m.encode(real)).float(), real.float())
        skipped = not self._apply(loss_ae, [self.opt_ae], self._no_w())

        prior = self.sampler.z(real.shape[0])  # [N, ℓ]
        with self.autocast():
            with torch.no_grad():
                codes = m.encode(real)
            loss_d = losses.d_adversarial(m.discriminate(prior), m.discriminate(codes))
        skipped += not self._apply(loss_d, [self.opt_d], prior.mean(0))

        with frozen(m.mapping_d), self.autocast():
            loss_g = losses.g_adversarial(m.discriminate(m.encode(real)))
        skipped += not self._apply(loss_g, [self.opt_e], self._no_w())
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "loss_ae": loss_ae.detach(),
                "skipped": int(skipped)}

    def _no_w(self) -> torch.Tensor:
        """w_avg follows the generator's inputs, the prior draws; steps that draw none leave it in place."""
        return self.model.w_avg

    def state_dict(self) -> dict:
        optimizers = ("opt_ae", "opt_d", "opt_e")
        return {"lod": self.lod, "sampler": self.sampler.state_dict(), "scaler": self.scaler.state_dict(),
                **{name: getattr(self, name).state_dict() if self.lod is not None else None for name in optimizers}}

    def load_state_dict(self, state: dict) -> None:
        """Restores the optimizers of the level they were saved at (their learning rate included)."""
        self.sampler.load_state_dict(state["sampler"])
        self.lod = None
        if state["lod"] is not None:
            self.begin_lod(int(state["lod"]), lr=0.0)  # the saved param_groups carry the real lr
            for name in ("opt_ae", "opt_d", "opt_e"):
                getattr(self, name).load_state_dict(state[name])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
