"""The pieces of the variational bound: Gaussian KL, the discretized decoder, the mean over dimensions.

These are plain functions of tensors; none of them knows about time steps or networks.
"""
from __future__ import annotations

import math

import torch


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL( N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)) ), elementwise, in nats.

    KL = 1/2 [ log(s2/s1) + s1/s2 + (m1 - m2)^2 / s2 - 1 ] with s = exp(logvar). Arguments broadcast.
    """
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) for N(0, 1), exact (via erf)."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, num_bins: int = 256
) -> torch.Tensor:
    """The decoder p_theta(x_0 | x_1) of Ho et al. 2020, eq. (13), elementwise log-probabilities in nats.

    Data with ``num_bins`` levels (256 for 8-bit images, 17 for sklearn's digits) lives on the grid
    -1, -1 + 2/(num_bins-1), ..., 1. Each level owns the interval of half a bin width on either side;
    the two end levels own everything beyond them (to -inf and +inf), so the probabilities of all levels sum to 1.

    x: data on that grid, any shape; means, log_scales (log standard deviation): broadcastable to x.
    Returns log P(x) with x's shape.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be at least 2, got {num_bins}")
    half_bin = 1.0 / (num_bins - 1)
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = standard_normal_cdf(inv_stdv * (centered + half_bin))
    cdf_min = standard_normal_cdf(inv_stdv * (centered - half_bin))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_probs = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    edge = 1.0 - half_bin  # below -edge is the lowest level, above +edge the highest
    return torch.where(x < -edge, log_cdf_plus, torch.where(x > edge, log_one_minus_cdf_min, log_probs))
