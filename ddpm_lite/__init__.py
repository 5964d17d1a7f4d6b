"""ddpm_lite: Denoising Diffusion Probabilistic Models (Ho et al. 2020), small enough to read end to end.

Time-step convention everywhere: ``t`` is an int64 tensor of shape (B,) with values 0 ... T-1, where index 0 is
the paper's t = 1.

Modules, one job each: ``schedules`` (beta_t, alpha_bar_t), ``diffusion`` (q, posterior, p_theta, losses),
``losses`` (KL, decoder, bits/dim), ``sampling`` (Algorithm 2, DDIM, DPM-Solver++(2M), churn, predictor-corrector,
annealed Langevin), ``score`` (scores, denoising score matching, Langevin dynamics), ``likelihood`` (the
probability-flow ODE and its exact likelihood), ``reconstruction``
(inverse problems), ``oracles`` (exact eps* for Gaussian mixtures), ``unet`` (the network), ``data`` (datasets and
your own data), ``images`` (the image check; .npy, .png and folders), ``training`` (Algorithm 1), ``checkpoints``
(run directories: checkpoint.pt and log.jsonl), ``distributed`` (torchrun), ``metrics`` (the Fréchet distance),
``evaluation`` (FD and bits/dim of a trained model), ``cli`` (the ``ddpm-lite`` command).

What only the book needs (exercise graders, its pretrained digits model, the digit classifier, figures) lives in
the subpackage ``ddpm_lite.book``, imported on first use of ``ddpm_lite.book`` (not by ``import ddpm_lite``).
"""
import importlib

from ._device import default_device
from ._threads import num_threads, set_threads
from .checkpoints import load_checkpoint
from .data import GaussianMixture, as_images, load_dataset, load_dataset_with_labels, make_toy_2d
from .evaluation import bits_per_dim, ode_bits_per_dim
from .images import check_images, load_images, save_images
from .diffusion import DiffusionConfig, GaussianDiffusion
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .metrics import feature_statistics, frechet_distance
from .oracles import GaussianMixtureOracle, LabelledMixtureOracle, quantize
from .sampling import (
    SAMPLERS, respace, sample, sample_loop_progressive, sample_trajectory, sampler_timesteps, space_timesteps,
)
from .schedules import NoiseSchedule, cosine_beta_schedule, get_beta_schedule, linear_beta_schedule
from .training import TrainConfig, TrainResult, default_configs, train
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
    "as_images",
    "make_toy_2d",
    "GaussianMixture",
    # images
    "check_images",
    "save_images",
    "load_images",
    # training
    "train",
    "TrainConfig",
    "TrainResult",
    "default_configs",
    # checkpoints
    "load_checkpoint",
    # the device and its threads
    "default_device",
    "set_threads",
    "num_threads",
    # oracles
    "GaussianMixtureOracle",
    "LabelledMixtureOracle",
    "quantize",
    # metrics
    "frechet_distance",
    "feature_statistics",
    # evaluation
    "bits_per_dim",
    "ode_bits_per_dim",
]


def __getattr__(name: str):
    """``ddpm_lite.book``: the book's support, imported on first use (PEP 562), so ``import ddpm_lite`` stays light."""
    if name == "book":
        return importlib.import_module(".book", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
