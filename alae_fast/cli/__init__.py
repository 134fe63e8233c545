"""`alae-fast` command line: train, demo, generate, reconstruct, mix, interpolate, edit, prepare, convert, metrics.

Every subcommand registers its parser with add_parsers(sub) and runs as args.func(args). A user's mistake
ends in one line, `alae-fast <command>: error: ...`, naming the argument, with exit status 2.
"""

from __future__ import annotations

import sys

from alae_fast.cli import convert_cmd, infer_cmd, metrics_cmd, prepare_cmd, train_cmd
from alae_fast.cli.common import OneLineParser, UsageError, first_line

COMMANDS = (train_cmd, infer_cmd, prepare_cmd, convert_cmd, metrics_cmd)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="alae-fast", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for command in COMMANDS:
        command.add_parsers(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    name = " ".join(filter(None, (args.command, getattr(args, "metric", None))))
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"alae-fast {name}: error: {exc}", file=sys.stderr)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"alae-fast {name}: error: {first_line(exc)}", file=sys.stderr)
    return 2
