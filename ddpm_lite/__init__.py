"""ddpm_lite: Denoising Diffusion Probabilistic Models (Ho et al. 2020), small enough to read end to end.

Time-step convention everywhere: ``t`` is an int64 tensor of shape (B,) with values 0 ... T-1, where index 0 is
the paper's t = 1.

Modules: ``schedules`` (beta_t, alpha_bar_t), ``diffusion`` (q, posterior, p_theta, losses), ``losses`` (KL,
decoder, bits/dim), ``sampling`` (Algorithm 2, DDIM, DPM-Solver++(2M), churn), ``reconstruction`` (inverse
problems), ``oracles`` (exact eps* for Gaussian mixtures), ``unet`` (the network), ``data``, ``training``
(Algorithm 1), ``metrics`` (the Fréchet distance), ``cli`` (the ``ddpm-lite`` command).

What only the book needs (exercise graders, its pretrained digits model, the digit classifier, figures) lives in
the subpackage ``ddpm_lite.book``, imported on first use of ``ddpm_lite.book`` (not by ``import ddpm_lite``).
"""
import importlib

from .data import GaussianMixture, load_dataset, load_dataset_with_labels, make_toy_2d
from .diffusion import DiffusionConfig, GaussianDiffusion
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .metrics import feature_statistics, frechet_distance
from .oracles import GaussianMixtureOracle, quantize
from .sampling import (
    SAMPLERS, respace, sample, sample_loop_progressive, sample_trajectory, sampler_timesteps, space_timesteps,
)
from .schedules import NoiseSchedule, cosine_beta_schedule, get_beta_schedule, linear_beta_schedule
from .training import TrainConfig, TrainResult, default_configs, default_device, load_checkpoint, train
from .unet import UNet, UNetConfig, count_parameters, format_trace, timestep_embedding, trace

__version__ = "0.1.0"

__all__ = [  # in the order of the API reference
    # schedules
    "NoiseSchedule",
    "get_beta_schedule",
    "linear_beta_schedule",
    "cosine_beta_schedule",
    # diffusion
    "DiffusionConfig",
    "GaussianDiffusion",
    # losses
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    # sampling
    "sample",
    "SAMPLERS",
    "sampler_timesteps",
    "space_timesteps",
    "respace",
    "sample_loop_progressive",
    "sample_trajectory",
    # unet
    "UNet",
    "UNetConfig",
    "timestep_embedding",
    "count_parameters",
    "trace",
    "format_trace",
    # data
    "load_dataset",
    "load_dataset_with_labels",
    "make_toy_2d",
    "GaussianMixture",
    # training
    "train",
    "TrainConfig",
    "TrainResult",
    "default_configs",
    "default_device",
    "load_checkpoint",
    # oracles
    "GaussianMixtureOracle",
    "quantize",
    # metrics
    "frechet_distance",
    "feature_statistics",
]


def __getattr__(name: str):
    """``ddpm_lite.book``: the book's support, imported on first use (PEP 562), so ``import ddpm_lite`` stays light."""
    if name == "book":
        return importlib.import_module(".book", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
