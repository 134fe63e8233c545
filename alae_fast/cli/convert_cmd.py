"""`alae-fast convert IN OUT [--to alae_fast|official]`: official ALAE checkpoints to alae_fast and back.

Prints one JSON line: the file read, the file written, the layout and the model config.
"""

from __future__ import annotations

import json

from alae_fast.convert import convert_file


def add_parsers(sub) -> None:
    p = sub.add_parser("convert", help="convert official ALAE checkpoints to alae_fast and back")
    p.add_argument("input", help="official .pth or alae_fast .pt checkpoint, or a run directory (its newest)")
    p.add_argument("output", help="where to write the converted checkpoint (not the input)")
    p.add_argument("--to", choices=("auto", "alae_fast", "official"), default="auto",
                   help="target layout (default: the other one)")
    p.set_defaults(func=run_convert)


def run_convert(args) -> int:
    info = convert_file(args.input, args.output, args.to)
    print(json.dumps({"output": str(args.output), **info}))
    return 0
