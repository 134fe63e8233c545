"""Evaluation metrics: FID, PPL in W, reconstruction MSE/PSNR, latent classification accuracy."""

from alae_fast.metrics.classify import labelled_data, latent_accuracy
from alae_fast.metrics.cli import main
from alae_fast.metrics.fid import (FeatureStats, fid_from_stats, fid_model_vs_data, frechet_distance,
                                   generated_batches, stats_of)
from alae_fast.metrics.inception import InceptionV3Features, load_inception
from alae_fast.metrics.perceptual import LPIPSVGG, load_lpips_vgg
from alae_fast.metrics.ppl import ppl_w
from alae_fast.metrics.recon import image_batches, reconstruction_error

__all__ = ["FeatureStats", "InceptionV3Features", "LPIPSVGG", "fid_from_stats", "fid_model_vs_data",
           "frechet_distance", "generated_batches", "image_batches", "labelled_data", "latent_accuracy",
           "load_inception", "load_lpips_vgg", "main", "ppl_w", "reconstruction_error", "stats_of"]
