"""ddpm_lite: Denoising Diffusion Probabilistic Models (Ho et al. 2020), small enough to read end to end.

Time-step convention everywhere: ``t`` is an int64 tensor of shape (B,) with values 0 ... T-1, where index 0 is
the paper's t = 1.
"""
from .diffusion import DiffusionConfig, GaussianDiffusion
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .oracles import GaussianMixtureOracle, quantize
from .sampling import respace, sample, sample_loop_progressive, sample_trajectory, space_timesteps
from .schedules import NoiseSchedule, cosine_beta_schedule, get_beta_schedule, linear_beta_schedule

__version__ = "0.1.0"

__all__ = [
    "DiffusionConfig",
    "GaussianDiffusion",
    "GaussianMixtureOracle",
    "NoiseSchedule",
    "cosine_beta_schedule",
    "discretized_gaussian_log_likelihood",
    "get_beta_schedule",
    "linear_beta_schedule",
    "mean_flat",
    "normal_kl",
    "quantize",
    "respace",
    "sample",
    "sample_loop_progressive",
    "sample_trajectory",
    "space_timesteps",
]
