"""Autograd pieces shared by the fused ops: the noise gradient and second-order gradients.

The first backward of every fused op is a kernel. Its own backward (needed by R1,
which differentiates dD(E(x))/dx again) is the exact vector-Jacobian product of the
reference's backward, built from differentiable PyTorch calls, as NVlabs' bias_act does
for its gradient of gradient.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def noise_grad(grad_pre: torch.Tensor, noise_weight: torch.Tensor) -> torch.Tensor:
    """d loss / d noise [N, 1, H, W] = Σ_c grad_pre[n, c]·noise_weight[c], from the gradient wrt the
    pre-activation x + noise_weight·noise (which is grad_x). Accumulated in noise_weight's dtype."""
    weighted = grad_pre * noise_weight.view(1, -1, 1, 1)
    return weighted.sum(1, keepdim=True, dtype=noise_weight.dtype).to(grad_pre.dtype)


def reference_double_backward(
    reference: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
    inputs: Sequence[torch.Tensor | None],
    differentiable: Sequence[bool],
    grad_outputs: Sequence[torch.Tensor],
    grad_of_grads: Sequence[torch.Tensor | None],
    extra_args: Sequence = (),
) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Backward of the map (grad_outputs, inputs) -> d<reference outputs, grad_outputs>/d inputs.

    grad_of_grads[i] is the incoming gradient for the first-order gradient of inputs[i] (None
    where that gradient is not an output of the backward). Returns (grads wrt grad_outputs,
    grads wrt inputs), with None for non-differentiable inputs.
    """
    with torch.enable_grad():
        leaves = [
            t.detach().requires_grad_(d) if t is not None else None for t, d in zip(inputs, differentiable)
        ]
        gouts = [g.detach().requires_grad_(True) for g in grad_outputs]
        outs = reference(*leaves, *extra_args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        diff_leaves = [t for t, d in zip(leaves, differentiable) if d]
        first = torch.autograd.grad(outs, diff_leaves, gouts, create_graph=True, allow_unused=True)
        diff_gogs = [gg for gg, d in zip(grad_of_grads, differentiable) if d]
        pairs = [(f, gg) for f, gg in zip(first, diff_gogs) if f is not None and gg is not None and f.requires_grad]
        targets = gouts + diff_leaves
        if pairs:
            second = torch.autograd.grad(
                [f for f, _ in pairs], targets, [gg for _, gg in pairs], allow_unused=True
            )
        else:
            second = [None] * len(targets)
    grads_gout = list(second[: len(gouts)])
    it = iter(second[len(gouts):])
    grads_in = [next(it) if d else None for d in differentiable]
    return grads_gout, grads_in
