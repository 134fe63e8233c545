"""`alae-fast metrics {fid,ppl,recon,classify} CHECKPOINT ...`: each prints one line of JSON.

Feature networks load from files (no downloads): --inception takes an Inception-v3 state_dict in
torchvision's layout (pytorch-fid's pt_inception-2015-12-05-6726825d.pth), --vgg torchvision's VGG16
state_dict, --lpips-lin LPIPS's v0.1 vgg.pth heads (default: those of the installed lpips package).
A mistake in the arguments ends in one line that names the argument, with exit status 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from alae_fast.cli.common import OneLineParser, UsageError, add_device_args, blame, first_line, pick_device, positive_int
from alae_fast.data import make_stream
from alae_fast.infer import load_trained
from alae_fast.metrics.classify import labelled_data, latent_accuracy
from alae_fast.metrics.fid import fid_model_vs_data
from alae_fast.metrics.inception import load_inception
from alae_fast.metrics.perceptual import HEADS_EXPECTED, LPIPSVGG, load_lpips_heads, load_vgg_trunk
from alae_fast.metrics.ppl import ppl_w
from alae_fast.metrics.recon import image_batches, reconstruction_error

CHECKPOINT_HINT = "give a checkpoint file or run directory of 'alae-fast train', or a file of 'alae-fast convert'"
DATA_HINT = "give an image folder, a prepared TFRecord directory or builtin:<name>"


def add_parsers(sub) -> None:
    p = sub.add_parser("metrics", help="FID, PPL, reconstruction and latent classification; one JSON line each",
                       description=__doc__.split("\n\n")[0])
    p.set_defaults(func=run_metrics)
    sub = p.add_subparsers(dest="metric", required=True, parser_class=OneLineParser)
    common = OneLineParser(add_help=False)
    common.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="checkpoint file, run or checkpoint directory, converted official file")
    common.add_argument("--weights", choices=("ema", "model"), default="ema")
    common.add_argument("--lod", type=int, default=None, help="level (default: the one the checkpoint was trained to)")
    common.add_argument("--batch", type=positive_int, default=32, help="images per forward pass")
    common.add_argument("--seed", type=int, default=0)
    add_device_args(common)
    fid = sub.add_parser("fid", parents=[common], help="FID against a dataset")
    fid.add_argument("--inception", required=True, help="Inception-v3 weights file (torchvision layout)")
    fid.add_argument("--torchvision-inception", action="store_true",
                     help="the weights are torchvision's ImageNet ones, not the TF FID Inception")
    fid.add_argument("--data", required=True, help="dataset (path or builtin:<name>)")
    fid.add_argument("--num", type=positive_int, default=50_000, help="images per side")
    fid.add_argument("--psi", type=float, default=None, help="truncation (default: none)")
    ppl = sub.add_parser("ppl", parents=[common], help="perceptual path length in W (LPIPS VGG16)")
    ppl.add_argument("--vgg", required=True, help="torchvision VGG16 weights file")
    ppl.add_argument("--lpips-lin", default=None,
                     help="LPIPS v0.1 heads (vgg.pth; default: the installed lpips package's)")
    ppl.add_argument("--num", type=positive_int, default=100_000)
    ppl.add_argument("--crop", action="store_true", help="StyleGAN's face crop")
    rec = sub.add_parser("recon", parents=[common], help="reconstruction MSE/PSNR over a dataset")
    rec.add_argument("--data", required=True, help="dataset (path or builtin:<name>)")
    rec.add_argument("--num", type=positive_int, default=10_000)
    cls = sub.add_parser("classify", parents=[common], help="1-NN / linear-SVM accuracy of E(x)")
    cls.add_argument("--data", default="builtin:digits",
                     help="builtin:<name> or .npz (images, labels); the classifiers are fitted on E(x) of these")
    cls.add_argument("--test-data", default=None,
                     help="score on E(x) of this labelled set (e.g. builtin:mnist28-test for the paper's MNIST "
                          "protocol with --data builtin:mnist28-train); default: a held-out quarter of --data")
    cls.add_argument("--num", type=positive_int, default=None, help="use the first NUM images of each set")


def checkpoint_and_level(args, device):
    """The Trained checkpoint of args.checkpoint at the level of --lod (checked against the model)."""
    path = Path(args.checkpoint)
    if not path.exists():
        raise UsageError(f"CHECKPOINT: {path} does not exist; {CHECKPOINT_HINT}")
    with warnings.catch_warnings(record=True) as skipped:  # unreadable newer checkpoints in a directory
        warnings.simplefilter("always")
        try:
            trained = load_trained(path, args.weights, device)
        except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
            raise UsageError(f"CHECKPOINT: {path} is not a usable alae_fast checkpoint ({first_line(exc)}); "
                             f"{CHECKPOINT_HINT}") from None
    if skipped:
        print(f"alae-fast metrics: warning: {len(skipped)} unreadable checkpoint(s) skipped; using {trained.path}",
              file=sys.stderr)
    lod = trained.lod if args.lod is None else args.lod
    if not 0 <= lod <= trained.model.max_lod:
        raise UsageError(f"--lod {lod}: this checkpoint's levels are 0..{trained.model.max_lod}")
    return trained, lod


def run(args) -> dict:
    with blame("--device"):
        device = pick_device(args.device)
    if args.metric == "fid":
        with blame("--inception"):
            net = load_inception(args.inception, fid_variant=not args.torchvision_inception).to(device)
    if args.metric == "ppl":
        with blame("--lpips-lin"):
            heads = load_lpips_heads(args.lpips_lin)
        with blame("--lpips-lin", f"give {HEADS_EXPECTED}"):
            dist = LPIPSVGG(heads)
        with blame("--vgg"):
            dist = load_vgg_trunk(dist, args.vgg).to(device)
    trained, lod = checkpoint_and_level(args, device)
    model, common = trained.model, dict(lod=lod, device=device)
    result = {"checkpoint": str(trained.path)}
    if args.metric == "classify":
        with blame("--data", "give builtin:<name> or an .npz with 'images' and 'labels'"):
            images, labels = labelled_data(args.data)
        test = None
        if args.test_data is not None:
            with blame("--test-data", "give builtin:<name> or an .npz with 'images' and 'labels'"):
                test = labelled_data(args.test_data)
        return {**result, **latent_accuracy(model, images, labels, num=args.num, seed=args.seed, test=test,
                                            **common)}
    if args.metric == "ppl":
        return {**result, **ppl_w(model, dist, args.num, args.batch, crop=args.crop, seed=args.seed, **common)}
    with blame("--data", DATA_HINT):
        stream = make_stream(args.data, device=device, seed=args.seed)
    try:
        if args.metric == "recon" and stream.channels != model.channels:
            raise UsageError(f"--data: {args.data} has {stream.channels}-channel images, the model takes "
                             f"{model.channels}")
        if args.metric == "recon":
            return {**result, **reconstruction_error(model, stream, args.num, args.batch, **common)}
        real = image_batches(stream, args.num, args.batch, model.resolution(lod))
        return {**result, **fid_model_vs_data(model, net, real, args.num, args.batch, psi=args.psi,
                                              seed=args.seed, **common)}
    finally:
        stream.close()


def run_metrics(args) -> int:
    print(json.dumps(run(args)))
    return 0
