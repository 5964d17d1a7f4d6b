"""The score-based view of DDPM: scores, denoising score matching and Langevin dynamics.

The lecture's first sentence says DDPM joins the variational bound to denoising score matching and Langevin
dynamics. This module holds that view's equations, one function each, over any score function
``score(x, level) -> (B, ...)`` or a diffusion's eps-model; like the rest of the diffusion math it never imports the
network.

* The score of the forward marginal q(x_t) is what an eps-model estimates, up to a factor (Tweedie's formula,
  Song et al. 2021, eq. (8) for the VP SDE's Gaussian kernel): s_theta(x_t, t) = -eps_theta(x_t, t) /
  sqrt(1 - alpha_bar_t) (:func:`score_from_eps`).
* Denoising score matching (Vincent 2011): regressing the score of the kernel q(x_t | x_0) is, term by term,
  L_simple / (1 - alpha_bar_t) (:func:`denoising_score_matching_loss`).
* Langevin dynamics (Song & Ermon 2019, eq. (4)): x <- x + (eta / 2) s(x) + sqrt(eta) z draws from p when s is
  its score, for small eta and many steps (:func:`langevin_step`, :func:`langevin_dynamics`); annealed over
  decreasing noise levels with step sizes alpha_i = eps sigma_i^2 / sigma_L^2 (their Algorithm 1,
  :func:`annealed_langevin_dynamics`).
* Predictor-corrector sampling (Song et al. 2021, Algorithm 3): after each predictor step, Langevin steps with the
  step size of their signal-to-noise rule (:func:`snr_step_size`, :func:`corrector_step`).
* Algorithm 2's step is Langevin-like: x_{t-1} = (x_t + beta_t s_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z
  (:func:`ddpm_step_from_score`).

Shapes: x (B, ...); a level is one index t of the diffusion (a (B,) int64 tensor) or, for the plain Langevin
functions, whatever the score function takes.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from ._random import randn_like
from .diffusion import GaussianDiffusion, Model
from .losses import mean_flat

ScoreFn = Callable[[torch.Tensor, object], torch.Tensor]


def score_from_eps(diffusion: GaussianDiffusion, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor):
    """s(x_t, t) = -eps / sqrt(1 - alpha_bar_t): the score grad log q(x_t) that an eps-prediction implies.

    Exact for the optimal eps* = E[eps | x_t] (Tweedie's formula). x_t, eps: (B, ...); t: (B,) -> (B, ...).
    """
    return -eps / diffusion._c("sqrt_one_minus_alphas_cumprod", t, x_t)


def kernel_score(diffusion: GaussianDiffusion, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """grad_{x_t} log q(x_t | x_0) = -(x_t - sqrt(alpha_bar_t) x_0) / (1 - alpha_bar_t), the target of denoising
    score matching (Vincent 2011, with the Gaussian kernel of Ho et al. eq. (4)). (B, ...) -> (B, ...)."""
    mean, variance, _ = diffusion.q_mean_variance(x_start, t)
    return -(x_t - mean) / variance


def denoising_score_matching_loss(
    diffusion: GaussianDiffusion, model: Model, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
) -> torch.Tensor:
    """The DSM loss at level t with the eps-model read as a score: ||s_theta(x_t, t) - grad log q(x_t | x_0)||^2,
    averaged over dimensions: (B,).

    With s_theta = -eps_theta / sqrt(1 - alpha_bar_t) and the kernel's score -eps / sqrt(1 - alpha_bar_t), it is
    ||eps_theta - eps||^2 / (1 - alpha_bar_t): L_simple divided by 1 - alpha_bar_t, term by term. Weighted by
    lambda(t) = 1 - alpha_bar_t (the sigma^2 weighting of NCSN, Song & Ermon 2019, eq. (6)) it is L_simple exactly.
    x_start, noise: (B, ...); t: (B,) int64.
    """
    x_t = diffusion.q_sample(x_start, t, noise=noise, validate=False)  # any data: this is the math
    score = score_from_eps(diffusion, x_t, t, model(x_t, t).to(x_t.dtype))
    return mean_flat((score - kernel_score(diffusion, x_start, x_t, t)) ** 2)


def ddpm_step_from_score(
    diffusion: GaussianDiffusion, x_t: torch.Tensor, t: torch.Tensor, score: torch.Tensor, z: torch.Tensor,
) -> torch.Tensor:
    """Algorithm 2's step written with the score: x_{t-1} = (x_t + beta_t s_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z.

    Substituting eps_theta = -sqrt(1 - alpha_bar_t) s_theta into Ho et al. eq. (11) gives this form (Song et al.
    2021, eq. (47), "reverse diffusion" for the VP SDE): a gradient step of size beta_t on log q(x_t), a rescaling
    by 1 / sqrt(alpha_t) and fresh noise; one step per level, where Langevin dynamics would take many at a fixed
    level and add no rescaling. sigma_t^2 is the diffusion's fixed variance, fixed_small or fixed_large (z = 0 at
    index 0, as in p_sample).
    x_t, score, z: (B, ...); t: (B,) -> x_{t-1}: (B, ...).
    """
    _, log_variance = diffusion.p_variance(x_t, t)
    nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
    beta_t = diffusion._c("betas", t, x_t)
    return (x_t + beta_t * score) / (1 - beta_t).sqrt() + nonzero * (0.5 * log_variance).exp() * z


def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float | torch.Tensor, z: torch.Tensor):
    """One step of Langevin dynamics, Song & Ermon 2019, eq. (4): x + (eta / 2) s(x) + sqrt(eta) z.

    x, score, z: (B, ...); step_size eta > 0, a number or a tensor broadcastable to x -> (B, ...).
    """
    step_size = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    return x + 0.5 * step_size * score + step_size.sqrt() * z


def _check_step_size(step_size) -> None:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not step_size > 0:
        raise ValueError(f"step_size must be a positive number (eta of x + eta/2 s + sqrt(eta) z), got {step_size!r}")


def langevin_dynamics(
    score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, step_size: float, num_steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``num_steps`` Langevin steps (:func:`langevin_step`) with a fixed step size from x: (B, ...) -> (B, ...).

    score_fn(x) -> grad log p(x), of x's shape. As step_size -> 0 and num_steps * step_size -> inf the samples
    follow p (Song & Ermon 2019, Sec. 2.2); with a finite step the stationary law is p only up to O(step_size).
    """
    _check_step_size(step_size)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
    for _ in range(num_steps):
        x = langevin_step(x, score_fn(x), step_size, randn_like(x, generator))
    return x


def annealed_step_sizes(sigmas: torch.Tensor, eps: float) -> torch.Tensor:
    """alpha_i = eps sigma_i^2 / sigma_L^2, Song & Ermon 2019, Algorithm 1, line 3, for decreasing noise levels
    sigma_1 > ... > sigma_L (the last is the smallest): (L,) -> (L,).

    alpha_i / sigma_i^2 is then the same at every level, and so is the "signal-to-noise ratio" of a step
    (their Sec. 4.3): each level takes steps of the same size relative to its own noise.
    """
    _check_step_size(eps)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or len(sigmas) == 0 or not bool((sigmas > 0).all()) or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be a non-empty 1-D sequence of positive, strictly decreasing noise levels")
    return eps * sigmas**2 / sigmas[-1] ** 2


def annealed_langevin_dynamics(
    score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, *, eps: float, steps_per_level: int,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Annealed Langevin dynamics, Song & Ermon 2019, Algorithm 1: for each noise level sigma_i, from the largest
    to the smallest, ``steps_per_level`` Langevin steps of size alpha_i (:func:`annealed_step_sizes`) with
    score_fn(x, i) = grad log p_{sigma_i}(x); each level starts where the previous one stopped.

    x: (B, ...) the start (their x_0, e.g. noise of scale sigma_1); sigmas: (L,) decreasing. Yields x after each
    level: (B, ...), L times.
    """
    if isinstance(steps_per_level, bool) or not isinstance(steps_per_level, int) or steps_per_level < 1:
        raise ValueError(f"steps_per_level must be a positive integer, got {steps_per_level!r}")
    step_sizes = annealed_step_sizes(sigmas, eps)
    for i, alpha in enumerate(step_sizes.tolist()):
        for _ in range(steps_per_level):
            x = langevin_step(x, score_fn(x, i), alpha, randn_like(x, generator))
        yield x


def snr_step_size(score: torch.Tensor, z: torch.Tensor, snr: float, alpha: float | torch.Tensor = 1.0):
    """epsilon = 2 alpha (r ||z|| / ||s||)^2, Song et al. 2021, Algorithm 3: the corrector's step size, chosen so
    that a step's noise is r times its drift. The norms are each sample's over all of its dimensions, averaged
    over the batch, as in the authors' code (score_sde's LangevinCorrector): with one sample's own ||z|| the step
    would grow with the very noise it scales, which in few dimensions biases the chain.
    score, z: (B, ...); alpha: a number or a tensor broadcastable to them -> epsilon, broadcastable to x."""
    ratio = snr * z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp(min=1e-12)
    return 2 * alpha * ratio**2


def corrector_step(x: torch.Tensor, score: torch.Tensor, z: torch.Tensor, snr: float,
                   alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
    """One Langevin corrector step of Song et al. 2021, Algorithm 3: x + epsilon s + sqrt(2 epsilon) z with
    epsilon = :func:`snr_step_size` (that is :func:`langevin_step` with eta = 2 epsilon). (B, ...) -> (B, ...)."""
    return langevin_step(x, score, 2 * snr_step_size(score, z, snr, alpha), z)
