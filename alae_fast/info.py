"""`python -m alae_fast.info`: which op backends this install can run, and why any cannot."""

from __future__ import annotations

import platform

import torch

from alae_fast.ops import _backend


def report() -> str:
    lines = [
        f"alae_fast {__import__('alae_fast').__version__}  torch {torch.__version__}  python {platform.python_version()}",
        f"CUDA device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}",
        f"default impl: {_backend.get_default_impl()} (ALAE_FAST_IMPL)",
        "backends:",
    ]
    for backend, device in (("ref", "cpu"), ("cpu", "cpu"), ("cuda", "cuda"), ("triton", "cuda"), ("triton", "cpu")):
        reason = _backend.unavailable_reason(backend, device)
        state = "available" if reason is None else f"unavailable: {reason}"
        lines.append(f"  {backend:<7} on {device:<5} {state}")
    try:
        import triton

        lines.append(f"triton {triton.__version__} (TRITON_INTERPRET={int(_backend.TRITON_INTERPRET)})")
    except ImportError:
        pass
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
