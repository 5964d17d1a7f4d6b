"""ddpm_lite: Denoising Diffusion Probabilistic Models (Ho et al. 2020), small enough to read end to end.

Time-step convention everywhere: ``t`` is an int64 tensor of shape (B,) with values 0 ... T-1, where index 0 is
the paper's t = 1.

Modules: ``schedules`` (beta_t, alpha_bar_t), ``diffusion`` (q, posterior, p_theta, losses), ``losses`` (KL,
decoder, bits/dim), ``sampling`` (Algorithm 2, DDIM, DPM-Solver++(2M), churn), ``oracles`` (exact eps* for
Gaussian mixtures), ``unet`` (the network), ``data``, ``metrics`` (Frechet distance on digits), ``plotting``.
"""
from . import checks
from .data import GaussianMixture, load_dataset, load_dataset_with_labels, make_toy_2d
from .diffusion import DiffusionConfig, GaussianDiffusion
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .metrics import digits_fd, frechet_distance, real_vs_real_floor
from .oracles import GaussianMixtureOracle, quantize
from .pretrained import load_pretrained_digits
from .plotting import glue, image_grid, setup_notebook, show_images
from .sampling import (
    SAMPLERS, respace, sample, sample_loop_progressive, sample_trajectory, sampler_timesteps, space_timesteps,
)
from .schedules import NoiseSchedule, cosine_beta_schedule, get_beta_schedule, linear_beta_schedule
from .training import TrainConfig, TrainResult, default_configs, load_checkpoint, train
from .unet import UNet, UNetConfig, count_parameters, format_trace, timestep_embedding, trace

__version__ = "0.1.0"

__all__ = [
    "train",
    "load_pretrained_digits",
    "load_checkpoint",
    "default_configs",
    "TrainResult",
    "TrainConfig",
    "checks",
    "DiffusionConfig",
    "GaussianDiffusion",
    "GaussianMixture",
    "GaussianMixtureOracle",
    "NoiseSchedule",
    "UNet",
    "UNetConfig",
    "count_parameters",
    "cosine_beta_schedule",
    "digits_fd",
    "discretized_gaussian_log_likelihood",
    "format_trace",
    "frechet_distance",
    "get_beta_schedule",
    "glue",
    "image_grid",
    "linear_beta_schedule",
    "load_dataset",
    "load_dataset_with_labels",
    "make_toy_2d",
    "mean_flat",
    "normal_kl",
    "quantize",
    "real_vs_real_floor",
    "respace",
    "sample",
    "sample_loop_progressive",
    "sampler_timesteps",
    "SAMPLERS",
    "sample_trajectory",
    "setup_notebook",
    "show_images",
    "space_timesteps",
    "timestep_embedding",
    "trace",
]
