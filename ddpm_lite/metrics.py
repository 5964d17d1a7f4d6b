"""The Fréchet distance between Gaussians fitted to two sets of features (the math of FID, Heusel et al. 2017).

Any feature space will do: :func:`feature_statistics` fits the Gaussian, :func:`frechet_distance` compares two.
The book scores 8x8 digits in the feature space of a small classifier of its own
(:func:`ddpm_lite.book.digits_fd`, with its floor :func:`ddpm_lite.book.real_vs_real_floor`).
"""
from __future__ import annotations

import torch

__all__ = ["feature_statistics", "frechet_distance"]


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), both float64."""
    f = torch.as_tensor(features).to(torch.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {tuple(f.shape)}")
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues clipped)."""
    vals, vecs = torch.linalg.eigh((a + a.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    tr((sigma1 sigma2)^(1/2)) equals tr((S sigma2 S)^(1/2)) with S = sigma1^(1/2), a
    symmetric PSD matrix, so two symmetric eigen-decompositions suffice (no scipy).
    Accepts tensors or arrays; the result is clipped at 0 against rounding.
    """
    mu1, mu2 = (torch.as_tensor(m).to(torch.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s).to(torch.float64) for s in (sigma1, sigma2))
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            "need mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D); got "
            f"{tuple(mu1.shape)}, {tuple(sigma1.shape)}, {tuple(mu2.shape)}, {tuple(sigma2.shape)}"
        )
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    fd = ((mu1 - mu2) ** 2).sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_covmean
    return max(float(fd), 0.0)
