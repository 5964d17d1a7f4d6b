"""Exact noise predictors for data whose distribution we know: an isotropic Gaussian mixture.

If x_0 ~ sum_k w_k N(m_k, s^2 I), the forward process keeps it a mixture:
q(x_t) = sum_k w_k N(sqrt(alpha_bar_t) m_k, v_t I) with v_t = alpha_bar_t s^2 + 1 - alpha_bar_t. The best
possible eps-predictor (the minimiser of L_simple) is the posterior mean of the noise,

    eps*(x_t, t) = E[eps | x_t] = -sqrt(1 - alpha_bar_t) grad log q(x_t)
                 = sqrt(1 - alpha_bar_t) sum_k r_k(x_t) (x_t - sqrt(alpha_bar_t) m_k) / v_t,

with r_k the posterior responsibilities. A single Gaussian is the case K = 1. Feeding eps* to the samplers
or to the bound lets tests and chapters check the mathematics with no training at all.
"""
from __future__ import annotations

import math

import torch

from .data import GaussianMixture
from .losses import discretized_gaussian_log_likelihood
from .schedules import NoiseSchedule, extract


class GaussianMixtureOracle:
    """eps*(x_t, t) for data x_0 ~ ``mixture`` (a :class:`~ddpm_lite.data.GaussianMixture`), under ``schedule``.

    Call it like a model: ``oracle(x_t, t)`` with x_t: (B, D), t: (B,) -> (B, D). Each sample may have its own t.
    """

    def __init__(self, schedule: NoiseSchedule, mixture: GaussianMixture):
        self.schedule = schedule
        self.mixture = mixture

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = self.mixture
        alpha_bar = extract(self.schedule.alphas_cumprod, t, x_t)[:, :, None]  # (B, 1, 1)
        variance = alpha_bar * m.std**2 + 1 - alpha_bar  # v_t
        centred = x_t[:, None, :] - alpha_bar.sqrt() * m.means.to(x_t)[None]  # (B, K, D)
        log_r = m.weights.to(x_t).log()[None] - 0.5 * (centred**2).sum(-1) / variance[:, :, 0]  # (B, K)
        r = torch.softmax(log_r, dim=1)
        return (1 - alpha_bar[:, :, 0]).sqrt() * (r[:, :, None] * centred / variance).sum(1)

    def score(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_x log q(x_t) = -eps*(x_t, t) / sqrt(1 - alpha_bar_t): (B, D)."""
        return -self(x_t, t) / (1 - extract(self.schedule.alphas_cumprod, t, x_t)).sqrt()

    def discretized_log_prob(self, x: torch.Tensor, num_bins: int = 256) -> torch.Tensor:
        """Exact log P(x) in nats when each coordinate of x_0 is rounded to ``num_bins`` levels on [-1, 1]: (B,).

        Each component factorises over dimensions, so its probability is a product of one-dimensional bins.
        """
        m = self.mixture
        log_std = torch.full_like(x[:, None, :], math.log(m.std))
        per_dim = discretized_gaussian_log_likelihood(x[:, None, :], m.means.to(x)[None], log_std, num_bins)
        return torch.logsumexp(m.weights.to(x).log()[None] + per_dim.sum(-1), dim=1)


def quantize(x: torch.Tensor, num_bins: int = 256) -> torch.Tensor:
    """Round values to the nearest of ``num_bins`` levels on [-1, 1] (values outside are clipped)."""
    scale = (num_bins - 1) / 2
    return ((x.clamp(-1, 1) + 1) * scale).round() / scale - 1
