"""`alae-fast prepare SRC OUT --resolution R [--levels]`: an image folder as TFRecord shards for the fast loaders."""

from __future__ import annotations

from pathlib import Path

from alae_fast.cli.common import positive_int
from alae_fast.data.prepare import PrepareOptions, prepare


def add_parsers(sub) -> None:
    p = sub.add_parser("prepare", help="prepare a dataset for the fast loaders (resumable)")
    p.add_argument("src", type=Path, help="image folder (any format Pillow reads, nested); only read")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--resolution", type=positive_int, required=True, help="side length, a power of 2")
    p.add_argument("--levels", action="store_true", help="also store R/2, R/4, ... 4")
    p.add_argument("--shard-size", type=int, default=0, help="images per shard (default: about 256 MB of pixels)")
    p.add_argument("--name", default="images", help="file name prefix")
    p.add_argument("--overwrite", action="store_true", help="replace finished output")
    p.set_defaults(func=run_prepare)


def run_prepare(args) -> int:
    out = prepare(PrepareOptions(args.src, args.out, args.resolution, args.levels, args.shard_size, args.name,
                                 args.overwrite))
    print(f"alae-fast prepare: wrote {out}")
    return 0
