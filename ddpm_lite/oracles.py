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

    def _posterior(self, x_t: torch.Tensor, t: torch.Tensor):
        """(alpha_bar (B, 1, 1), v_t (B, 1, 1), x_t - sqrt(alpha_bar) m_k (B, K, D), log r_k + const (B, K))."""
        m = self.mixture
        alpha_bar = extract(self.schedule.alphas_cumprod, t, x_t)[:, :, None]  # (B, 1, 1)
        variance = alpha_bar * m.std**2 + 1 - alpha_bar  # v_t
        centred = x_t[:, None, :] - alpha_bar.sqrt() * m.means.to(x_t)[None]  # (B, K, D)
        log_r = m.weights.to(x_t).log()[None] - 0.5 * (centred**2).sum(-1) / variance[:, :, 0]  # (B, K)
        return alpha_bar, variance, centred, log_r

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar, variance, centred, log_r = self._posterior(x_t, t)
        return _eps(alpha_bar, variance, centred, torch.softmax(log_r, dim=1))

    def class_logits(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log p(k | x_t) + const for each component k, read as the class of x_0: (B, K) logits, exact (the
        responsibilities of eps*). Call it like a noise-aware classifier."""
        return self._posterior(x_t, t)[3]

    def component(self, k: int) -> "GaussianMixtureOracle":
        """The exact eps* of class k alone, x_0 ~ N(m_k, s^2 I): the conditional model of a labelled mixture."""
        m = self.mixture
        return GaussianMixtureOracle(self.schedule, GaussianMixture([1.0], m.means[k:k + 1], m.std))

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


def _eps(alpha_bar: torch.Tensor, variance: torch.Tensor, centred: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """sqrt(1 - alpha_bar_t) sum_k r_k (x_t - sqrt(alpha_bar_t) m_k) / v_t: (B, D), from :meth:`_posterior`'s parts
    and weights r (B, K) (the responsibilities, or one class's indicator)."""
    return (1 - alpha_bar[:, :, 0]).sqrt() * (r[:, :, None] * centred / variance).sum(1)


class LabelledMixtureOracle:
    """The exact class-conditional eps*(x_t, t, y) of a labelled mixture whose classes are its components.

    y = k < K: component k alone, E[eps | x_t, class k]; y = K (:attr:`null_class`): the whole mixture's eps*, the
    unconditional model. Call it like a class-conditional network, ``model(x_t, t, y)`` with x_t: (B, D), t: (B,),
    y: (B,) -> (B, D), so :class:`~ddpm_lite.guidance.ClassifierFreeGuidance` guides it as it guides a U-Net.
    """

    def __init__(self, schedule: NoiseSchedule, mixture: GaussianMixture):
        self.oracle = GaussianMixtureOracle(schedule, mixture)
        self.null_class = len(mixture.weights)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        alpha_bar, variance, centred, log_r = self.oracle._posterior(x_t, t)
        y = torch.as_tensor(y, device=x_t.device).long().expand(x_t.shape[0])
        if ((y < 0) | (y > self.null_class)).any():
            raise ValueError(f"labels must be classes 0 ... {self.null_class - 1} or the null class "
                             f"{self.null_class}, got {sorted(set(y.tolist()))}")
        labelled = (y < self.null_class)[:, None]
        one_hot = torch.nn.functional.one_hot(y.clamp_max(self.null_class - 1), self.null_class).to(log_r)
        return _eps(alpha_bar, variance, centred, torch.where(labelled, one_hot, torch.softmax(log_r, dim=1)))

    def class_logits(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log p(y | x_t) + const for each class y: (B, K), exact (:meth:`GaussianMixtureOracle.class_logits`).
        Call it like a noise-aware classifier, for classifier guidance."""
        return self.oracle.class_logits(x_t, t)

    def guided_log_density(self, x: torch.Tensor, y: int, guidance: float) -> torch.Tensor:
        """(1 + w) log p(x | y) - w log p(x) for x (N, D) -> (N,) float64: the log density, up to a constant, of
        the tilted law p(x | y)^{1 + w} p(x)^{-w} of the clean data (Ho & Salimans 2022, Sec. 3.2). At each level t
        guidance with weight w follows the score of q_t(x | y)^{1 + w} q_t(x)^{-w}, which is not the noised version
        of this law (the two agree as t -> 0), so guided samplers do not draw it exactly (Bradley & Nakkiran 2025).
        :meth:`guided_moments` integrates it on a grid."""
        m = self.oracle.mixture
        log_joint = m._component_log_probs(x)  # (N, K): log w_k + log N(x; m_k, s^2 I)
        log_conditional = log_joint[:, y] - m.weights[y].log()
        return (1 + guidance) * log_conditional - guidance * torch.logsumexp(log_joint, dim=1)

    def guided_moments(self, y: int, guidance: float, points: int = 801) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and covariance (D, D), float64, of p(x | y)^{1 + w} p(x)^{-w} normalised, by quadrature on a
        grid of ``points`` per axis spanning every component's mean +- 8 std (D = 1 or 2)."""
        m = self.oracle.mixture
        if m.dim > 2:
            raise ValueError(f"guided_moments integrates on a grid, in 1 or 2 dimensions; this mixture has {m.dim}")
        axes = [torch.linspace(lo - 8 * m.std, hi + 8 * m.std, points, dtype=torch.float64)
                for lo, hi in zip(m.means.min(0).values.tolist(), m.means.max(0).values.tolist())]
        x = torch.stack([g.flatten() for g in torch.meshgrid(*axes, indexing="ij")], dim=1)  # (points^D, D)
        p = torch.softmax(self.guided_log_density(x, y, guidance), dim=0)  # equal cells: weights sum to 1
        mean = p @ x
        centred = x - mean
        return mean, (p[:, None] * centred).T @ centred


class GaussianOracle:
    """eps*(x_t, t) for data x_0 ~ N(mean, covariance) with a full covariance (correlated coordinates).

    q(x_t) = N(sqrt(alpha_bar_t) mean, alpha_bar_t Sigma + (1 - alpha_bar_t) I), so

        eps*(x_t, t) = E[eps | x_t] = sqrt(1 - alpha_bar_t) (alpha_bar_t Sigma + (1 - alpha_bar_t) I)^{-1}
                                      (x_t - sqrt(alpha_bar_t) mean).

    Computed in float64 through the eigen-decomposition Sigma = U diag(lambda) U^T (once). Call it like a model:
    x_t: (B, D), t: (B,) -> (B, D). :meth:`conditional` gives the exact answer an inpainting method should reach.
    """

    def __init__(self, schedule: NoiseSchedule, mean: torch.Tensor, covariance: torch.Tensor):
        self.schedule = schedule
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.covariance = torch.as_tensor(covariance, dtype=torch.float64)
        d = self.mean.shape[0]
        if self.mean.ndim != 1 or self.covariance.shape != (d, d):
            raise ValueError(f"need mean (D,) and covariance (D, D), got {tuple(self.mean.shape)}, "
                             f"{tuple(self.covariance.shape)}")
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(self.covariance)
        if self.eigenvalues.min() < 0:
            raise ValueError("covariance must be positive semi-definite")

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = extract(self.schedule.alphas_cumprod, t, x_t.double())  # (B, 1)
        centred = x_t.double() - alpha_bar.sqrt() * self.mean  # (B, D)
        u = self.eigenvectors
        scale = (1 - alpha_bar).sqrt() / (alpha_bar * self.eigenvalues + 1 - alpha_bar)  # (B, D) per eigen-direction
        return (((centred @ u) * scale) @ u.T).to(x_t.dtype)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of x_0: (n, D) float64."""
        z = torch.randn(n, self.mean.shape[0], generator=generator, dtype=torch.float64)
        return self.mean + (z * self.eigenvalues.clamp_min(0).sqrt()) @ self.eigenvectors.T

    def conditional(self, known: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact law of the missing coordinates given the known ones, x_k = values: (mean (M,), covariance (M, M)).

        mu_m + Sigma_mk Sigma_kk^{-1} (values - mu_k) and Sigma_mm - Sigma_mk Sigma_kk^{-1} Sigma_km, with
        known: (D,) bool, values: (K,) for the K known coordinates.
        """
        known = torch.as_tensor(known, dtype=torch.bool)
        missing = ~known
        s = self.covariance
        gain = torch.linalg.solve(s[known][:, known], s[known][:, missing]).T  # Sigma_mk Sigma_kk^{-1}: (M, K)
        mean = self.mean[missing] + gain @ (torch.as_tensor(values, dtype=torch.float64) - self.mean[known])
        return mean, s[missing][:, missing] - gain @ s[known][:, missing]


def quantize(x: torch.Tensor, num_bins: int = 256) -> torch.Tensor:
    """Round values to the nearest of ``num_bins`` levels on [-1, 1] (values outside are clipped)."""
    scale = (num_bins - 1) / 2
    return ((x.clamp(-1, 1) + 1) * scale).round() / scale - 1
