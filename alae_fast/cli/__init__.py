"""`alae-fast` command line: train, demo, generate, reconstruct, mix, interpolate, edit, prepare, convert, metrics."""

from __future__ import annotations

import argparse
import importlib
import sys

from alae_fast.cli import infer, train_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alae-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train_cmd.add_parsers(sub)
    infer.add_parsers(sub)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# Subcommands with parsers of their own: `main` hands them the rest of the command line.
DELEGATED = {
    "prepare": ("alae_fast.data.prepare", "prepare a dataset for the fast loaders"),
    "convert": ("alae_fast.convert", "convert official ALAE checkpoints to alae_fast and back"),
    "metrics": ("alae_fast.metrics", "FID, PPL, reconstruction and MNIST accuracy; one JSON line each"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        return int(importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"alae-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2
