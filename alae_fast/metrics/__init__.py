"""Evaluation metrics: FID (also at training snapshots), PPL in W with LPIPS, reconstruction
MSE/PSNR, latent classification accuracy."""

from alae_fast.metrics.classify import labelled_data, latent_accuracy
from alae_fast.metrics.fid import (FeatureStats, SnapshotFID, fid_from_stats, fid_model_vs_data, frechet_distance,
                                   generated_batches, snapshot_fid, stats_of)
from alae_fast.metrics.inception import InceptionV3Features, load_inception
from alae_fast.metrics.perceptual import LPIPSVGG, installed_lpips_heads, load_lpips_heads, load_lpips_vgg
from alae_fast.metrics.ppl import ppl_w
from alae_fast.metrics.recon import image_batches, reconstruction_error


__all__ = ["FeatureStats", "InceptionV3Features", "LPIPSVGG", "SnapshotFID", "fid_from_stats", "fid_model_vs_data",
           "frechet_distance", "generated_batches", "image_batches", "installed_lpips_heads", "labelled_data",
           "latent_accuracy", "load_inception", "load_lpips_heads", "load_lpips_vgg", "ppl_w",
           "reconstruction_error", "snapshot_fid", "stats_of"]
