"""`alae-fast metrics {fid,ppl,recon,classify} CHECKPOINT ...`: each prints one line of JSON.

Weights for the feature networks come from files (no downloads): --inception takes a
torchvision-layout Inception-v3 state_dict (e.g. pytorch-fid's pt_inception-2015-12-05 file),
--vgg a torchvision VGG16 state_dict, --lpips-lin LPIPS's v0.1 vgg.pth linear heads.
"""

from __future__ import annotations

import argparse
import json

import torch

from alae_fast.data import make_stream
from alae_fast.infer import load_model
from alae_fast.metrics.classify import labelled_data, latent_accuracy
from alae_fast.metrics.fid import fid_model_vs_data
from alae_fast.metrics.inception import load_inception
from alae_fast.metrics.perceptual import load_lpips_vgg
from alae_fast.metrics.ppl import ppl_w
from alae_fast.metrics.recon import image_batches, reconstruction_error


def build_parser(prog: str = "alae-fast metrics") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="metric", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("checkpoint", help="alae_fast checkpoint (.pt)")
    common.add_argument("--weights", choices=("ema", "model"), default="ema")
    common.add_argument("--lod", type=int, default=None, help="level (default: the highest)")
    common.add_argument("--batch", type=int, default=32)
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    common.add_argument("--seed", type=int, default=0)
    fid = sub.add_parser("fid", parents=[common], help="FID against a dataset")
    fid.add_argument("--inception", required=True, help="Inception-v3 weights file")
    fid.add_argument("--torchvision-inception", action="store_true",
                     help="weights are torchvision's ImageNet ones (not the TF FID Inception)")
    fid.add_argument("--data", required=True, help="dataset (path or builtin:<name>)")
    fid.add_argument("--num", type=int, default=50_000, help="images per side")
    fid.add_argument("--psi", type=float, default=None, help="truncation (default: none)")
    ppl = sub.add_parser("ppl", parents=[common], help="perceptual path length in W")
    ppl.add_argument("--vgg", required=True, help="VGG16 weights file")
    ppl.add_argument("--lpips-lin", default=None, help="LPIPS v0.1 linear heads (vgg.pth)")
    ppl.add_argument("--num", type=int, default=100_000)
    ppl.add_argument("--crop", action="store_true", help="StyleGAN's face crop")
    rec = sub.add_parser("recon", parents=[common], help="reconstruction MSE/PSNR over a dataset")
    rec.add_argument("--data", required=True, help="dataset (path or builtin:<name>)")
    rec.add_argument("--num", type=int, default=10_000)
    cls = sub.add_parser("classify", parents=[common], help="1-NN / linear-SVM accuracy of E(x)")
    cls.add_argument("--data", default="builtin:digits", help="builtin:<name> or .npz (images, labels)")
    cls.add_argument("--num", type=int, default=None)
    return p


def run(args) -> dict:
    model = load_model(args.checkpoint, args.weights, args.device)
    lod = model.max_lod if args.lod is None else args.lod
    common = dict(lod=lod, device=args.device)
    if args.metric == "classify":
        images, labels = labelled_data(args.data)
        return latent_accuracy(model, images, labels, num=args.num, seed=args.seed, **common)
    if args.metric == "ppl":
        dist = load_lpips_vgg(args.vgg, args.lpips_lin).to(args.device)
        return ppl_w(model, dist, args.num, args.batch, epsilon=1e-4, crop=args.crop, seed=args.seed, **common)
    stream = make_stream(args.data, device=args.device, seed=args.seed)
    try:
        if args.metric == "recon":
            return reconstruction_error(model, stream, args.num, args.batch, **common)
        net = load_inception(args.inception, fid_variant=not args.torchvision_inception).to(args.device)
        real = image_batches(stream, args.num, args.batch)
        return fid_model_vs_data(model, net, real, args.num, args.batch, psi=args.psi, seed=args.seed, **common)
    finally:
        stream.close()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps({"checkpoint": args.checkpoint, **run(args)}))
    return 0
