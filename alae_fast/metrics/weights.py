"""Reading the feature networks' weight files: weights-only loading and one-line errors."""

from __future__ import annotations

from pathlib import Path

import torch


def load_state_dict_file(path, what: str, expected: str) -> dict[str, torch.Tensor]:
    """The tensors of a torch.save'd state_dict (optionally under 'state_dict'), loaded weights-only so
    that nothing in the file runs. `what` names the file in errors ("Inception-v3 weights"), `expected`
    says which file would do ("torchvision's inception_v3 state_dict ...")."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; give {expected}")
    if not path.is_file():
        raise ValueError(f"{what} {path} is a directory; give {expected}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not torch.save'd, or holding objects other than tensors
        raise ValueError(f"{what} {path} is not a readable tensor state_dict ({type(exc).__name__}); "
                         f"give {expected}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} {path} holds a {type(state).__name__}, not a state_dict of tensors; "
                         f"give {expected}")
    return state


def load_into(module: torch.nn.Module, state: dict, prefix: str, what: str, path, expected: str) -> None:
    """Copy state[prefix + key] into each of module's tensors (other keys are ignored); name the first
    missing or misshapen one otherwise. BatchNorm's num_batches_tracked (a training counter that some
    published files lack) is optional."""
    want = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    wrong = [k for k, v in want.items() if prefix + k not in state or state[prefix + k].shape != v.shape]
    if wrong:
        raise ValueError(f"{what} {path}: {len(wrong)} of {len(want)} tensors missing or misshapen "
                         f"(first: {prefix + wrong[0]}); give {expected}")
    module.load_state_dict({k: state[prefix + k] for k in want}, strict=False)
