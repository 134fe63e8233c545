"""`alae-fast generate | reconstruct | mix | interpolate`: PNGs from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from alae_fast.cli.common import add_device_args, load_trained, pick_device
from alae_fast.train.evaluate import resize
from alae_fast.train.grids import mixing_grid, save_grid


def add_parsers(sub) -> None:
    for name, func, help_text in (
        ("generate", run_generate, "random samples"),
        ("reconstruct", run_reconstruct, "real images (odd rows) and their reconstructions G(E(x))"),
        ("mix", run_mix, "style-mixing grid"),
        ("interpolate", run_interpolate, "latent interpolation between random samples"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("checkpoint", help="checkpoint file, or a run/checkpoint directory (newest is used)")
        p.add_argument("--out", default=f"{name}.png", help="output PNG")
        p.add_argument("--n", type=int, default=8, help="images per row")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--psi", type=float, default=None, help="truncation psi (1 = none; default: model's)")
        p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA copy")
        add_device_args(p)
        if name == "reconstruct":
            p.add_argument("--data", help="image source (default: the training dataset)")
        if name == "interpolate":
            p.add_argument("--steps", type=int, default=8)
        p.set_defaults(func=func)


def _setup(args):
    where = Path(args.checkpoint)
    if where.is_dir() and (where / "checkpoints").is_dir():
        where = where / "checkpoints"
    device = pick_device(args.device)
    model, lod, blend, state = load_trained(where, device, use_ema=not args.raw)
    torch.manual_seed(args.seed)
    return model, lod, blend, state, device


def _styles(model, z, lod, psi):
    ws = model.styles(z, lod, mixing_prob=0.0)
    return ws if psi == 1.0 else model.truncate(ws, psi)


def _done(path) -> int:
    print(f"wrote {path}")
    return 0


@torch.no_grad()
def run_generate(args) -> int:
    model, lod, blend, _, device = _setup(args)
    z = torch.randn(args.n * args.n, model.latent_size, device=device)
    x = model.generate(_styles(model, z, lod, args.psi), lod, blend)
    return _done(save_grid(x, args.out, args.n))


@torch.no_grad()
def run_reconstruct(args) -> int:
    from alae_fast.data import make_stream

    model, lod, blend, state, device = _setup(args)
    source = args.data or state["config"]["train"]["dataset"]
    stream = make_stream(source, device=device, seed=args.seed)
    real = resize(stream.next_batch(args.n * 2), model.resolution(lod))
    rec = model.generate(model.encode(real, lod, blend), lod, blend)
    rows = torch.stack([real.view(2, args.n, *real.shape[1:]), rec.view(2, args.n, *real.shape[1:])], 1)
    return _done(save_grid(rows.flatten(0, 2), args.out, args.n))


@torch.no_grad()
def run_mix(args) -> int:
    model, lod, blend, _, device = _setup(args)
    if model.num_ws < 2:
        raise ValueError(f"{args.checkpoint}: this model has one style layer; nothing to mix")
    z = torch.randn(2 * args.n, model.latent_size, device=device)
    return _done(save_grid(mixing_grid(model, z[: args.n], z[args.n:], lod, blend), args.out, args.n + 1))


@torch.no_grad()
def run_interpolate(args) -> int:
    model, lod, blend, _, device = _setup(args)
    z = torch.randn(2 * args.n, model.latent_size, device=device)
    w = _styles(model, z, lod, args.psi)
    t = torch.linspace(0, 1, args.steps, device=device).view(1, -1, 1, 1)
    path = w[: args.n, None].lerp(w[args.n:, None], t)  # [n, steps, num_ws, l]
    x = model.generate(path.flatten(0, 1), lod, blend, noise="const")
    return _done(save_grid(x, args.out, args.steps))
