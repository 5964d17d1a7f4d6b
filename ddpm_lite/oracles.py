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

from .losses import discretized_gaussian_log_likelihood
from .schedules import NoiseSchedule, extract


class GaussianMixtureOracle:
    """eps*(x_t, t) for data x_0 ~ sum_k weights[k] N(means[k], std^2 I).

    schedule: the diffusion's :class:`NoiseSchedule`; weights: (K,); means: (K, D); std: float.
    Call it like a model: ``oracle(x_t, t)`` with x_t: (B, D), t: (B,) -> (B, D).
    """

    def __init__(self, schedule: NoiseSchedule, weights, means, std: float):
        self.schedule = schedule
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.std = float(std)
        if self.means.ndim != 2 or self.weights.shape != self.means.shape[:1]:
            raise ValueError(f"weights must be (K,) and means (K, D); got {tuple(self.weights.shape)} and {tuple(self.means.shape)}")
        if not math.isclose(float(self.weights.sum()), 1.0, rel_tol=1e-9):
            raise ValueError(f"weights must sum to 1, got {float(self.weights.sum())}")

    def _marginal(self, x_t: torch.Tensor, t: torch.Tensor):
        """Per component: centred x_t - sqrt(alpha_bar) m_k (B, K, D), v_t (B, 1, 1), responsibilities (B, K)."""
        alpha_bar = extract(self.schedule.alphas_cumprod, t, x_t).reshape(-1, 1, 1)
        means = self.means.to(x_t)
        variance = alpha_bar * self.std**2 + 1 - alpha_bar
        centred = x_t[:, None, :] - alpha_bar.sqrt() * means[None]  # (B, K, D)
        log_r = self.weights.to(x_t).log()[None] - 0.5 * (centred**2).sum(-1) / variance[:, :, 0]
        return centred, variance, torch.softmax(log_r, dim=1)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        centred, variance, r = self._marginal(x_t, t)
        one_minus = 1 - extract(self.schedule.alphas_cumprod, t, x_t)
        return one_minus.sqrt() * (r[:, :, None] * centred / variance).sum(1)

    def score(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_x log q(x_t) = -eps*(x_t, t) / sqrt(1 - alpha_bar_t): (B, D)."""
        return -self(x_t, t) / (1 - extract(self.schedule.alphas_cumprod, t, x_t)).sqrt()

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of x_0: (n, D) float64."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn((n, self.means.shape[1]), generator=generator, dtype=torch.float64)
        return self.means[k] + self.std * noise

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density log q(x_0) in nats: (B, D) -> (B,)."""
        d = x.shape[1]
        sq = ((x[:, None, :] - self.means.to(x)[None]) ** 2).sum(-1)  # (B, K)
        log_n = -0.5 * sq / self.std**2 - d * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        return torch.logsumexp(self.weights.to(x).log()[None] + log_n, dim=1)

    def discretized_log_prob(self, x: torch.Tensor, num_bins: int = 256) -> torch.Tensor:
        """Exact log P(x) in nats when each coordinate of x_0 is rounded to ``num_bins`` levels on [-1, 1]: (B,).

        Each component factorises over dimensions, so its probability is a product of one-dimensional bins.
        """
        log_std = torch.full_like(x[:, None, :], math.log(self.std))
        per_dim = discretized_gaussian_log_likelihood(x[:, None, :], self.means.to(x)[None], log_std, num_bins)
        return torch.logsumexp(self.weights.to(x).log()[None] + per_dim.sum(-1), dim=1)


def quantize(x: torch.Tensor, num_bins: int = 256) -> torch.Tensor:
    """Round values to the nearest of ``num_bins`` levels on [-1, 1] (values outside are clipped)."""
    scale = (num_bins - 1) / 2
    return ((x.clamp(-1, 1) + 1) * scale).round() / scale - 1
