"""Helpers shared by the subcommands: one error style, device/precision choice, list-valued arguments."""

from __future__ import annotations

import argparse
from contextlib import contextmanager

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible to torch")
    return device


def pick_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def add_device_args(parser, precision: bool = False) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    if precision:
        parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                            help="auto: bf16 on a GPU that supports it, else fp32")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: '0-3,7,9-10' -> [0, 1, 2, 3, 7, 9, 10]; ranges a-b include both ends."""
    values = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected non-negative integers and ranges like 0-15,20,31") from None
        if hi < lo:
            raise argparse.ArgumentTypeError(f"{text!r}: range {part.strip()!r} ends before it starts")
        values.extend(range(lo, hi + 1))
    return values


def float_list(text: str) -> list[float]:
    """argparse type: '-3,0,2.5' -> [-3.0, 0.0, 2.5]."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers like -3,0,3") from None


class UsageError(Exception):
    """A mistake in the command line; its message is one line that names the argument."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (usage is left to --help), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def first_line(exc: BaseException) -> str:
    """exc's message cut to its first line, never repeating torch's advice to load a file unsafely."""
    text = str(exc).strip()
    if "weights_only" in text or "Weights only" in text:
        return "not a weights-only torch file (it is not a torch file, or it pickles objects other than tensors)"
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextmanager
def blame(argument: str, hint: str = ""):
    """Report an OSError/ValueError/RuntimeError raised while using `argument` as a UsageError naming it."""
    try:
        yield
    except (OSError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{argument}: {first_line(exc)}" + (f"; {hint}" if hint else "")) from None
