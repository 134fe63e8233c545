"""`alae-fast generate | reconstruct | mix | interpolate | edit`: PNG/GIF files from a checkpoint.

CHECKPOINT is a training checkpoint file, a run or checkpoint directory (the newest is used), or
a converted official checkpoint. Images come from the level the checkpoint was trained to.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from alae_fast import infer
from alae_fast.cli.common import add_device_args, float_list, int_list, pick_device, positive_int

# Style layers by resolution, as in StyleGAN: coarse 4²-8², middle 16²-32², fine 64² and up.
NAMED_LAYERS = {"coarse": (0, 4), "middle": (4, 8), "fine": (8, None)}


def layer_spec(text: str):
    """argparse type: 'coarse' | 'middle' | 'fine', or a range a-b of style layers (both ends included)."""
    if text in NAMED_LAYERS:
        return text
    layers = int_list(text)
    if layers != list(range(layers[0], layers[-1] + 1)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected one range a-b or coarse, middle, fine")
    return layers[0], layers[-1] + 1


def _common(out: str, nrow: bool = False, psi: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("checkpoint", help="checkpoint file, run/checkpoint directory, or converted official checkpoint")
    p.add_argument("--out", default=out, help=f"output PNG (default {out})")
    if psi:
        p.add_argument("--trunc", "--psi", dest="psi", type=float, default=None,
                       help="truncation psi; 1 = none (default: the model's)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    if nrow:
        p.add_argument("--nrow", type=positive_int, default=None, help="grid columns (default: about square)")
    add_device_args(p)
    return p


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", parents=[_common("generate.png", nrow=True)], help="samples for given seeds")
    p.add_argument("--seeds", type=int_list, default=int_list("0-15"), help="e.g. 0-15 or 1,5,9 (default 0-15)")
    p.add_argument("--batch", type=positive_int, default=16, help="images per forward pass")
    p.add_argument("--out-dir", help="write one PNG per seed (seedNNNN.png) here instead of a grid")
    p.set_defaults(func=run_generate)

    p = sub.add_parser("reconstruct", parents=[_common("reconstruct.png", nrow=True, psi=False)],
                       help="grid of input | reconstruction G(E(x)) pairs")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of images (center-cropped, resized, converted to the model's channels)")
    src.add_argument("--data", help="dataset source, path or builtin:<name> (default: the training dataset)")
    p.add_argument("--num", type=positive_int, default=None,
                   help="images to use (default: all of --images, 8 of --data)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of --data")
    p.add_argument("--batch", type=positive_int, default=16, help="images per forward pass")
    p.set_defaults(func=run_reconstruct)

    p = sub.add_parser("mix", parents=[_common("mix.png")], help="style-mixing grid")
    p.add_argument("--row-seeds", type=int_list, default=int_list("0-3"), help="seeds of the rows (default 0-3)")
    p.add_argument("--col-seeds", type=int_list, default=int_list("4-7"), help="seeds of the columns (default 4-7)")
    p.add_argument("--layers", type=layer_spec, default=None,
                   help="style layers taken from the column image: a-b, coarse, middle or fine (default: coarse half)")
    p.set_defaults(func=run_mix)

    p = sub.add_parser("interpolate", parents=[_common("interpolate.png", nrow=True)],
                       help="straight lines in W through seeds: grid (a row per segment) and GIF")
    p.add_argument("--seeds", type=int_list, default=int_list("0,1"), help="A,B[,C...] (default 0,1)")
    p.add_argument("--steps", type=positive_int, default=8, help="frames per segment, both ends included")
    p.add_argument("--gif", help="also write an animated GIF of the whole path")
    p.add_argument("--fps", type=float, default=15)
    p.set_defaults(func=run_interpolate)

    p = sub.add_parser("edit", parents=[_common("edit.png")],
                       help="move along a direction in W: a row per seed, a column per strength")
    p.add_argument("--direction", required=True, help=".npy or .pt file holding an [ℓ] vector")
    p.add_argument("--seeds", type=int_list, default=int_list("0-3"), help="default 0-3")
    p.add_argument("--strengths", type=float_list, default=[-3.0, 0.0, 3.0], help="default -3,0,3; write a list that starts negative as --strengths=-3,0,3")
    p.add_argument("--layers", type=layer_spec, default=None, help="edit only these style layers (default: all)")
    p.set_defaults(func=run_edit)


def _load(args) -> infer.Trained:
    return infer.load_trained(args.checkpoint, args.weights, pick_device(args.device))


def _level(args, trained: infer.Trained) -> dict:
    """Keyword arguments of the infer functions: the checkpoint's level and the truncation."""
    psi = trained.model.cfg.truncation_psi if args.psi is None else args.psi
    return {"psi": psi, "lod": trained.lod, "blend": trained.blend}


def _layers(spec, model) -> tuple[int, int] | None:
    """(start, stop) of a layer_spec on this model; None stays None (the function's default)."""
    if spec is None:
        return None
    start, stop = NAMED_LAYERS[spec] if isinstance(spec, str) else spec
    stop = model.num_ws if stop is None else min(stop, model.num_ws)
    if not 0 <= start < stop:
        name = spec if isinstance(spec, str) else f"{spec[0]}-{spec[1] - 1}"
        raise ValueError(f"--layers {name}: this model has style layers 0-{model.num_ws - 1}")
    return start, stop


def _square(n: int) -> int:
    """Grid columns for about as many rows as columns."""
    return math.ceil(math.sqrt(n))


def _wrote(path) -> int:
    print(f"wrote {path}")
    return 0


def run_generate(args) -> int:
    trained = _load(args)
    x = infer.generate(trained.model, args.seeds, batch=args.batch, **_level(args, trained))
    if not args.out_dir:
        return _wrote(infer.save_grid(x, args.out, args.nrow or _square(len(x))))
    for seed, image in zip(args.seeds, x):
        infer.save_grid(image[None], Path(args.out_dir) / f"seed{seed:04d}.png", 1, min_side=1, pad=0)
    return _wrote(f"{len(x)} images to {args.out_dir}")


def _real_images(args, trained: infer.Trained) -> torch.Tensor:
    model = trained.model
    if args.images:
        images = infer.load_images(args.images, model.resolution(trained.lod), model.channels)
        return images[:args.num]
    source = args.data or trained.config.get("train", {}).get("dataset")
    if source is None:
        raise ValueError(f"--images or --data is required: {trained.path} records no training dataset")
    from alae_fast.data import make_stream

    stream = make_stream(source, device=next(model.parameters()).device, seed=args.seed)
    try:
        return stream.next_batch(args.num or 8)
    finally:
        stream.close()


def run_reconstruct(args) -> int:
    trained = _load(args)
    pairs = infer.reconstruct(trained.model, _real_images(args, trained), trained.lod, trained.blend,
                              batch=args.batch)
    return _wrote(infer.save_grid(pairs.flatten(0, 1), args.out, 2 * (args.nrow or _square(len(pairs)))))


def run_mix(args) -> int:
    trained = _load(args)
    model = trained.model
    if model.num_ws < 2:
        raise ValueError(f"{trained.path}: this model has one style layer; nothing to mix")
    grid = infer.style_mix(model, args.row_seeds, args.col_seeds, _layers(args.layers, model),
                           **_level(args, trained))
    return _wrote(infer.save_grid(grid, args.out, len(args.col_seeds) + 1))


def run_interpolate(args) -> int:
    if len(args.seeds) < 2:
        raise ValueError(f"--seeds needs at least two seeds to interpolate between, got {args.seeds}")
    if args.steps < 2:
        raise ValueError(f"--steps must be >= 2, got {args.steps}")
    trained = _load(args)
    segments = [infer.interpolate(trained.model, a, b, args.steps, **_level(args, trained))
                for a, b in zip(args.seeds, args.seeds[1:])]
    out = infer.save_grid(torch.cat(segments), args.out, args.nrow or args.steps)
    if args.gif:  # each later segment starts where the previous one ended
        frames = torch.cat([segments[0]] + [s[1:] for s in segments[1:]])
        _wrote(infer.save_gif(frames, args.gif, fps=args.fps))
    return _wrote(out)


def load_direction(path, latent_size: int) -> torch.Tensor:
    """An [ℓ] vector from a .npy or .pt file ([1, ℓ] is accepted too)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--direction {path} does not exist")
    try:
        if path.suffix == ".npy":
            direction = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            direction = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"--direction {path}: not a .npy array or torch tensor file ({exc})") from None
    if not isinstance(direction, torch.Tensor) or direction.numel() != latent_size:
        shape = list(direction.shape) if isinstance(direction, torch.Tensor) else type(direction).__name__
        raise ValueError(f"--direction {path}: expected a vector of {latent_size} values (the latent size), "
                         f"got {shape}")
    return direction.float().reshape(latent_size)


def run_edit(args) -> int:
    trained = _load(args)
    model = trained.model
    direction = load_direction(args.direction, model.latent_size)
    layers = _layers(args.layers, model)
    level = _level(args, trained)
    ws = infer.seeds_to_ws(model, args.seeds, level.pop("psi"), trained.lod)
    rows = [infer.edit(model, w, direction, args.strengths, layers, **level) for w in ws]
    return _wrote(infer.save_grid(torch.cat(rows), args.out, len(args.strengths)))
