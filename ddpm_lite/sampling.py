"""Samplers: Algorithm 2 of Ho et al. 2020 (ancestral sampling), DDIM (Song et al. 2021), DPM-Solver++(2M) and its
SDE variant (Lu et al. 2022), the stochastic Heun sampler of Karras et al. 2022 ("churn"), predictor-corrector
sampling (Song et al. 2021, "pc"), annealed Langevin dynamics (Song & Ermon 2019), and respacing.

Every sampler walks from x_T ~ N(0, I) at index T-1 (the paper's t = T) down to index 0 (the paper's t = 1), the
last time step the network sees, and ends on the data (where Algorithm 2 adds no noise, z = 0).
Randomness comes only from ``noise=`` (x_T) and ``generator=``. ``steps`` is the number of network evaluations
(NFE) a sample may use; each sampler spends them on the time steps listed by :func:`sampler_timesteps`.

One default everywhere: :func:`sample`, :func:`sample_loop_progressive`, :func:`sample_trajectory`, the evaluation
functions and ``ddpm-lite sample`` use :data:`DEFAULT_SAMPLER` with :func:`default_steps` evaluations unless told
otherwise. Algorithm 2 itself, the book's subject, is ``sampler="ddpm"`` (by default with all T steps).

The solvers read the schedule in the variables of Lu et al. 2022: alpha_t = sqrt(alpha_bar_t),
sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t) (half the log-SNR); Karras et al. use
sigma^KE_t = sigma_t / alpha_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) and x^KE = x_t / alpha_t.
Every x_0 prediction is clipped to [-1, 1] when ``clip_denoised`` (the default), as in p_mean_variance; that is
diffusers' ``thresholding`` with ``sample_max_value=1``, not its dynamic (percentile) thresholding.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import replace
from typing import Callable, Iterator, Literal, get_args

import torch

from ._progress import progress_bar
from ._random import randn, randn_like
from ._threads import Threads, num_threads
from .diffusion import GaussianDiffusion, Model
from .schedules import _check_kept_timesteps, logsnr_timesteps, respaced_betas
from .score import annealed_step_sizes, corrector_step, langevin_step, score_from_eps

SamplerName = Literal["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "churn", "pc", "annealed_langevin"]  # SAMPLERS' keys
# The default sampler (of sample() and `ddpm-lite sample` alike): the one that reached FD <= 1.25x the full 1000-step
# chain's with the fewest evaluations on the book's digits model (10, FD 29.1 +- 0.5 against the chain's 29.5 +- 3.0;
# held-out digits, benchmarks/results/samplers.md, n = 1000, 2 seeds), given default_steps evaluations.
DEFAULT_SAMPLER: SamplerName = "dpmpp_2m"
DEFAULT_STEPS = 20  # the default evaluations of every sampler but ddpm (Algorithm 2's chain: all T steps)
CHURN = 40.0  # S_churn of the churn sampler (Karras et al. 2022, Algorithm 2; their ImageNet-64 value):
# gamma = min(S_churn / N, sqrt(2) - 1), the largest gamma for N <= 97 levels. Digits model v3 (trained and scored
# on all digits), 20 NFE, n = 500: FD 12.4 with S_churn = 10 or 40 (both the largest gamma there), 14.4 with 0
PC_SNR = 0.16  # r of the predictor-corrector sampler's step size rule (Song et al. 2021: 0.16, their default)
PC_CORRECTOR_STEPS = 1  # M, Langevin corrector steps after each predictor step but the last (theirs: 1)
ANNEALED_STEPS_PER_LEVEL = 5  # Langevin steps at each level of annealed_langevin (Song & Ermon 2019: 100 at 10 levels)
ANNEALED_STEP_RATIO = 1.0  # alpha_i / sigma_i^2 of annealed_langevin, the same at every level (their eps / sigma_L^2)
ANNEALED_SIGMA_MAX = 16.0  # its top noise level sigma^KE: NCSNv2's rule (Song & Ermon 2020, technique 1), sigma_1 about
# the largest distance between two data points: at most 2 sqrt(64) = 16 for the 8 x 8 digits in [-1, 1] (9.5 between
# two training digits). Digits model, 100 NFE, n = 500: FD 30.5 at 16, 32.2 at 5, 45.3 at 50; from the schedule's
# top (sigma^KE = 2e4) every sample saturated (FD 440). Raise it for larger images (2 sqrt(D)).
CHURN_SIGMA_RANGE = (0.05, 50.0)  # (S_tmin, S_tmax): churn only where S_tmin <= sigma^KE <= S_tmax (their values)


def default_steps(sampler: SamplerName, num_timesteps: int) -> int:
    """The network evaluations ``sampler`` gets when ``steps`` is None: T for "ddpm" (Algorithm 2's whole chain),
    min(DEFAULT_STEPS, T) for every other sampler."""
    _check_sampler(sampler)
    return num_timesteps if sampler == "ddpm" else min(DEFAULT_STEPS, num_timesteps)


def space_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """K evenly spaced indices from 0 to T-1, both ends included (for K = 1, just T-1): a list of ints."""
    _check_steps(num_timesteps, steps)
    if steps == 1:
        return [num_timesteps - 1]
    return sorted({round(i * (num_timesteps - 1) / (steps - 1)) for i in range(steps)})


Spacing = Literal["linspace", "logsnr"]
SPACINGS: tuple[str, ...] = get_args(Spacing)
DEFAULT_SPACING: dict[str, Spacing] = {sampler: "linspace" for sampler in get_args(SamplerName)}  # see sampler_timesteps
DEFAULT_SPACING["annealed_langevin"] = "logsnr"  # geometric noise levels, as Song & Ermon 2019's


def sampler_timesteps(
    diffusion: GaussianDiffusion, sampler: SamplerName, steps: int | None, spacing: Spacing | None = None
) -> list[int]:
    """The time indices (ascending, from 0) where ``sampler`` evaluates the network with a budget of ``steps`` NFE.

    spacing: "linspace" (:func:`space_timesteps`, even in t) or "logsnr" (:func:`~ddpm_lite.schedules.logsnr_timesteps`, even in
    lambda); None: DEFAULT_SPACING, "linspace" for every sampler but annealed_langevin (geometric levels, as Song &
    Ermon's). The two disagree for DPM-Solver++: with the exact
    eps* of a sharp 1-D mixture (tests/library/test_samplers.py) "logsnr" is far better at 20 steps (KS distance 0.01 vs
    0.21: even t leaves one long lambda step into index 0, over which the second-order extrapolation overshoots),
    but on the book's digits model "linspace" wins (20 NFE, n = 500: FD 12.4 vs 13.6 for dpmpp_2m, 7.8 vs 12.4
    for dpmpp_2m_sde; "logsnr" also merges levels near t = 0 and so uses 17 evaluations): a trained network's
    errors at low noise cost more than the solver's. Karras et al.'s rho = 7 levels (from sigma^KE_{T-1} = 2e4
    of the cosine schedule) crowd the top: 12 distinct indices of 20, FD 14-19 for DPM-Solver++ and 120 for
    churn there, so they are not offered.
    churn: Heun spends two evaluations per step except the first and the last (Euler), so it gets steps // 2 + 1
    levels (steps >= 2). pc: each level but the last spends 1 + PC_CORRECTOR_STEPS evaluations, so it gets
    (steps + M) // (1 + M) levels. annealed_langevin: ANNEALED_STEPS_PER_LEVEL evaluations at each level and one
    for the final denoising step, so (steps - 1) // ANNEALED_STEPS_PER_LEVEL levels from sigma^KE =
    ANNEALED_SIGMA_MAX down to index 0 (steps > ANNEALED_STEPS_PER_LEVEL).
    steps None: the sampler's default budget, :func:`default_steps` (as in :func:`sample`): every index for "ddpm",
    DEFAULT_STEPS evaluations (or T if fewer) for the others.
    """
    T = diffusion.num_timesteps
    _check_sampler(sampler)
    spacing = spacing or DEFAULT_SPACING[sampler]
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; use one of {SPACINGS}")
    if steps is None:
        steps = default_steps(sampler, T)
    _check_steps(T, steps)
    levels = steps // 2 + 1 if sampler == "churn" and steps > 1 else steps
    if sampler == "pc":
        levels = (steps + PC_CORRECTOR_STEPS) // (1 + PC_CORRECTOR_STEPS)
    if sampler == "annealed_langevin":
        return _annealed_timesteps(diffusion, steps, spacing)
    return space_timesteps(T, levels) if spacing == "linspace" else logsnr_timesteps(diffusion.schedule, levels)


def _annealed_timesteps(diffusion: GaussianDiffusion, steps: int, spacing: Spacing) -> list[int]:
    """annealed_langevin's levels: (steps - 1) // ANNEALED_STEPS_PER_LEVEL indices from the highest with
    sigma^KE <= ANNEALED_SIGMA_MAX down to 0 (see :func:`sampler_timesteps`)."""
    if steps <= ANNEALED_STEPS_PER_LEVEL:
        raise ValueError(f"annealed_langevin takes {ANNEALED_STEPS_PER_LEVEL} evaluations at each level and one to "
                         f"denoise: give it steps >= {ANNEALED_STEPS_PER_LEVEL + 1}, got {steps}")
    top = int((diffusion.schedule.noise_level <= ANNEALED_SIGMA_MAX).nonzero().max())
    levels = min((steps - 1) // ANNEALED_STEPS_PER_LEVEL, top + 1)
    return space_timesteps(top + 1, levels) if spacing == "linspace" else logsnr_timesteps(diffusion.schedule, levels, top)


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {tuple(SAMPLERS)}")


def _check_steps(num_timesteps: int, steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be an int between 1 and T = {num_timesteps}, got {steps!r}")


class SpacedModel:
    """Calls the original model with the original time index: respaced index i -> timesteps[i]."""

    def __init__(self, model: Model, timesteps: torch.Tensor):
        self.model = model
        self.timesteps = timesteps

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x_t, self.timesteps.to(t.device)[t])


def respace(diffusion: GaussianDiffusion, timesteps: list[int]) -> GaussianDiffusion:
    """A diffusion over a subsequence tau_1 < ... < tau_K of the time steps with the same alpha_bar at each kept step.

    beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}} (Nichol & Dhariwal 2021, Sec. 4,
    :func:`~ddpm_lite.schedules.respaced_betas`); wrap the model in :class:`SpacedModel` to call it. With every step
    kept this is the original diffusion (up to rounding). The result's config records the kept steps (as indices of
    the original chain, also when ``diffusion`` was respaced already), so ``GaussianDiffusion.from_config`` rebuilds
    it; a diffusion without a config (raw betas) gives one without.
    """
    config = diffusion.config
    if config is None:
        return GaussianDiffusion(
            respaced_betas(diffusion.schedule, timesteps),
            model_mean_type=diffusion.model_mean_type,
            model_var_type=diffusion.model_var_type,
            loss_type=diffusion.loss_type,
            data_bins=diffusion.data_bins,
        )
    kept = _check_kept_timesteps(timesteps, diffusion.num_timesteps)
    if config.timesteps is not None:  # respacing a respaced chain: its indices are those of the kept steps
        kept = tuple(config.timesteps[i] for i in kept)
    return GaussianDiffusion.from_config(replace(config, timesteps=kept))


def p_sample(
    diffusion: GaussianDiffusion, model: Model, x_t: torch.Tensor, t: torch.Tensor, *,
    clip_denoised: bool = True, generator: torch.Generator | None = None,
) -> dict:
    """One step of Algorithm 2 (lines 3-4): x_{t-1} = mu_theta(x_t, t) + sigma_t z, with z = 0 at index 0.

    Without clipping, mu_theta is exactly eq. (11), (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t).
    x_t: (B, ...); t: (B,). Returns {"sample": x_{t-1}, "pred_x_start": x_0 estimate}, each (B, ...).
    """
    out = diffusion.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, with_eps=False)
    z = randn_like(x_t, generator)
    nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))  # z = 0 at the last step
    sample = out["mean"] + nonzero * (0.5 * out["log_variance"]).exp() * z
    return {"sample": sample, "pred_x_start": out["pred_x_start"]}


def ddim_sample(
    diffusion: GaussianDiffusion, model: Model, x_t: torch.Tensor, t: torch.Tensor, *,
    eta: float = 0.0, clip_denoised: bool = True, generator: torch.Generator | None = None,
) -> dict:
    """One DDIM step, Song et al. 2021 eq. (12):

        x_{t-1} = sqrt(alpha_bar_{t-1}) x0_hat + sqrt(1 - alpha_bar_{t-1} - sigma^2) eps_hat + sigma z,
        sigma = eta sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_{t-1}).

    eta = 0 is deterministic; eta = 1 has the variance of DDPM's fixed-small sampler. eta must lie in [0, 1]
    (:func:`check_eta`).
    """
    check_eta(eta)
    out = diffusion.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised)
    alpha_bar = diffusion._c("alphas_cumprod", t, x_t)
    alpha_bar_prev = diffusion._c("alphas_cumprod_prev", t, x_t)
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
    z = randn_like(x_t, generator)
    mean = alpha_bar_prev.sqrt() * out["pred_x_start"] + (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * out["pred_eps"]
    return {"sample": mean + sigma * z, "pred_x_start": out["pred_x_start"]}


def check_eta(eta: float) -> None:
    """DDIM's eta must be a finite number in [0, 1].

    Why 1 is the upper limit: at eta = 1, sigma^2 is the posterior variance beta_tilde_t = (1 - alpha_bar_{t-1}) /
    (1 - alpha_bar_t) beta_t, which is at most 1 - alpha_bar_{t-1}, so the square root sqrt(1 - alpha_bar_{t-1} -
    sigma^2) of Song et al.'s eq. (12) stays real. Beyond 1 it can turn negative: the step would drop the
    eps term (it is clamped at 0) and no longer keep the marginals q(x_t | x_0) that DDIM is built on.
    """
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM's variance), got {eta!r}")


# ---------------------------------------------------------------------------------------- DPM-Solver++
def dpm_solver_pp_data_estimate(
    x0: torch.Tensor, x0_prev: torch.Tensor | None, h: float, h_prev: float
) -> torch.Tensor:
    """The x_0 estimate a DPM-Solver++ step integrates: D_i of Lu et al. 2022 (DPM-Solver++), Algorithm 2 (2M).

        D_i = (1 + 1 / (2 r_i)) x0_theta(x_s, s) - 1 / (2 r_i) x0_theta(x_prev, prev),   r_i = h_prev / h,

    a linear extrapolation of the x_0 predictions in lambda to the midpoint of the step (second order).
    x0_prev = None (the first step) or h = inf (the step to the data) gives D = x0, the first-order solver.
    x0, x0_prev: (B, ...); h, h_prev: step lengths in lambda of this and the previous step -> (B, ...).
    """
    if x0_prev is None or math.isinf(h):
        return x0
    ratio = 1 / (2 * (h_prev / h))  # 1 / (2 r_i)
    return (1 + ratio) * x0 - ratio * x0_prev


def dpm_solver_pp_update(
    x_s: torch.Tensor, data_estimate: torch.Tensor, coefficients: dict, z: torch.Tensor | None = None
) -> torch.Tensor:
    """One DPM-Solver++ step from level s to level t < s, given the x_0 estimate D over the step (Lu et al. 2022).

    ODE (z = None), Lu et al. 2022, Algorithm 2; with D = x0 it is DPM-Solver++(1), i.e. DDIM with eta = 0::

        x_t = sigma_t / sigma_s x_s - alpha_t (e^{-h} - 1) D,   h = lambda_t - lambda_s

    SDE (z ~ N(0, I) of x_s's shape), SDE-DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095; diffusers'
    sde-dpmsolver++, k-diffusion's dpmpp_2m_sde); with D = x0 it is the
    ancestral DDPM step with sigma^2 = beta_tilde::

        x_t = sigma_t / sigma_s e^{-h} x_s + alpha_t (1 - e^{-2h}) D + sigma_t sqrt(1 - e^{-2h}) z

    coefficients: {"alpha_t", "sigma_t", "sigma_s", "h"} as floats (:func:`_vp_levels`); at the data sigma_t = 0,
    h = inf and x_t = D. x_s, D: (B, ...) -> x_t: (B, ...).
    """
    alpha_t, sigma_t, sigma_s, h = (coefficients[k] for k in ("alpha_t", "sigma_t", "sigma_s", "h"))
    if z is None:
        return (sigma_t / sigma_s) * x_s - alpha_t * math.expm1(-h) * data_estimate
    decay = math.exp(-h)
    return (sigma_t / sigma_s * decay) * x_s - alpha_t * math.expm1(-2 * h) * data_estimate + sigma_t * math.sqrt(
        -math.expm1(-2 * h)
    ) * z


def _vp_levels(diffusion: GaussianDiffusion, t: int) -> dict:
    """alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t) at index t as
    floats; t = -1 stands for the data (alpha = 1, sigma = 0, lambda = inf)."""
    if t < 0:
        return {"alpha": 1.0, "sigma": 0.0, "lambda": math.inf}
    alpha_bar = diffusion.schedule.alphas_cumprod[t].item()
    lambda_t = 0.5 * math.log(alpha_bar / (1 - alpha_bar))
    return {"alpha": math.sqrt(alpha_bar), "sigma": math.sqrt(1 - alpha_bar), "lambda": lambda_t}


def _predict_x_start(
    diffusion: GaussianDiffusion, model: Model, x_t: torch.Tensor, t: int, clip_denoised: bool
) -> torch.Tensor:
    """x0_theta(x_t, t) of p_mean_variance, clipped when asked, for one time index t shared by the batch: (B, ...)."""
    index = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    return diffusion.p_mean_variance(model, x_t, index, clip_denoised=clip_denoised)["pred_x_start"]


def _dpm_solver_pp(diffusion, model, x, timesteps, *, stochastic: bool, clip_denoised: bool, generator):
    """Multistep DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), ODE or SDE, from timesteps[-1] down to the data.
    First order at the first step (no previous x_0) and at the step to the data, as diffusers
    (``lower_order_final``, ``final_sigmas_type="zero"``)."""
    x0_prev, h_prev = None, math.nan
    for k in reversed(range(len(timesteps))):
        s, t = _vp_levels(diffusion, timesteps[k]), _vp_levels(diffusion, timesteps[k - 1] if k > 0 else -1)
        h = t["lambda"] - s["lambda"]
        x0 = _predict_x_start(diffusion, model, x, timesteps[k], clip_denoised)
        data_estimate = dpm_solver_pp_data_estimate(x0, x0_prev, h, h_prev)
        z = randn_like(x, generator) if stochastic else None
        coefficients = {"alpha_t": t["alpha"], "sigma_t": t["sigma"], "sigma_s": s["sigma"], "h": h}
        x = dpm_solver_pp_update(x, data_estimate, coefficients, z)
        x0_prev, h_prev = x0, h
        yield {"t": timesteps[k], "sample": x, "pred_x_start": x0}


# ---------------------------------------------------------------------------------------- Karras et al. churn
def churn_noise_level(sigma: float, num_levels: int, s_churn: float, sigma_range=CHURN_SIGMA_RANGE) -> float:
    """sigma_hat = (1 + gamma) sigma, Karras et al. 2022, Algorithm 2, lines 4-5.

    gamma = min(S_churn / N, sqrt(2) - 1) where S_tmin <= sigma <= S_tmax, else 0.
    """
    s_tmin, s_tmax = sigma_range
    gamma = min(s_churn / num_levels, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
    return (1 + gamma) * sigma


def heun_update(x_hat: torch.Tensor, d_hat: torch.Tensor, sigma_hat: float, sigma_next: float,
                denoise_next: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """The deterministic part of Karras et al. 2022, Algorithm 2, lines 7-11, in their variables (x^KE, sigma^KE):

        x_next = x_hat + (sigma_next - sigma_hat) d,       d = (x_hat - D(x_hat; sigma_hat)) / sigma_hat   (Euler)
        x_next = x_hat + (sigma_next - sigma_hat) (d + d') / 2,  d' = (x_next - D(x_next; sigma_next)) / sigma_next

    The second-order correction is skipped at the data (sigma_next = 0) or when ``denoise_next`` is None.
    x_hat, d_hat: (B, ...) -> (B, ...).
    """
    x_next = x_hat + (sigma_next - sigma_hat) * d_hat
    if sigma_next == 0 or denoise_next is None:
        return x_next
    d_next = (x_next - denoise_next(x_next)) / sigma_next
    return x_hat + (sigma_next - sigma_hat) * 0.5 * (d_hat + d_next)


def sample_churn(diffusion, model, x, timesteps, *, clip_denoised=True, generator=None, s_churn: float = CHURN):
    """Karras et al. 2022, Algorithm 2 (stochastic Heun) on the VP model, from timesteps[-1] down to the data,
    with x_t in the VP variables (x^KE = x_t / alpha_t) inside each step; s_churn: their S_churn (>= 0; 0 is
    deterministic Heun).

    The raised level sigma_hat is rounded to the nearest time index (the network knows only those), and the
    added noise is sqrt(sigma_hat^2 - sigma^2) z for that rounded level, so x_hat has exactly its noise level.
    The first step, from x_T, is Euler (a DDIM step), not Heun: Karras et al. start at sigma = 80, but index T-1 of
    the VP schedule lies at sigma^KE = 2e4 (cosine) or 157 (linear), and the trapezoid rule across 2e4 -> 6 turns
    the O(1) change of eps between its ends into an O(1e4) error (measured: FD 830 on the digits model).
    Why this sampler: the issue finds that stochastic steps wash out the learned eps's errors (DDPM beats DDIM with
    the trained network); churn adds that noise back at a controlled rate while Heun keeps second-order accuracy
    per step.
    """
    if s_churn < 0:
        raise ValueError(f"s_churn must be >= 0 (0: deterministic Heun), got {s_churn}")
    sigmas = diffusion.schedule.noise_level  # sigma^KE_t = sqrt((1 - alpha_bar_t) / alpha_bar_t): (T,) float64

    def denoiser(t: int):
        """D(x^KE; sigma_t) = x0_theta(alpha_t x^KE, t), the network evaluated on the VP input."""
        alpha = _vp_levels(diffusion, t)["alpha"]
        return lambda x_ke: _predict_x_start(diffusion, model, alpha * x_ke, t, clip_denoised)

    for k in reversed(range(len(timesteps))):
        t_s, t_next = timesteps[k], (timesteps[k - 1] if k > 0 else -1)
        sigma = sigmas[t_s].item()
        target = churn_noise_level(sigma, len(timesteps), s_churn)
        t_hat = max(t_s, int((sigmas.log() - math.log(target)).abs().argmin()))
        sigma_hat = sigmas[t_hat].item()
        x_hat = x / _vp_levels(diffusion, t_s)["alpha"] + math.sqrt(sigma_hat**2 - sigma**2) * randn_like(x, generator)
        x0 = denoiser(t_hat)(x_hat)
        sigma_next = sigmas[t_next].item() if t_next >= 0 else 0.0
        first = k == len(timesteps) - 1  # Euler from x_T: see the docstring
        x_next = heun_update(x_hat, (x_hat - x0) / sigma_hat, sigma_hat, sigma_next,
                             None if first or t_next < 0 else denoiser(t_next))
        x = x_next * _vp_levels(diffusion, t_next)["alpha"]
        yield {"t": t_s, "sample": x, "pred_x_start": x0}


# ---------------------------------------------------------------------------------------- the respaced chain
def respaced_chain(diffusion, model, x, timesteps, update, *, clip_denoised: bool, generator, **options):
    """The loop of DDPM and DDIM: ``update`` (:func:`p_sample` or :func:`ddim_sample`) at every level from
    timesteps[-1] down to the data, on the diffusion respaced to ``timesteps`` (:func:`respace`; the chain itself
    when every index is kept). x: (B, ...), x at the level timesteps[-1]; yields the registry's {"t", "sample",
    "pred_x_start"} after every step."""
    if len(timesteps) < diffusion.num_timesteps:
        diffusion, model = respace(diffusion, timesteps), SpacedModel(model, torch.as_tensor(timesteps))
    for k in reversed(range(len(timesteps))):
        t = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        out = update(diffusion, model, x, t, clip_denoised=clip_denoised, generator=generator, **options)
        x = out["sample"]
        yield {"t": timesteps[k], "sample": x, "pred_x_start": out["pred_x_start"]}


# ---------------------------------------------------------------------------------------- the registry
# Every sampler is one function of this signature (k-diffusion's sampling.py has the same shape):
#     fn(diffusion, model, x_T, timesteps, *, clip_denoised=True, generator=None, **its own options) -> Iterator[dict]
# It walks x from the level timesteps[-1] down to the data and yields {"t": the index just denoised, "sample": x at
# the next level (x_0 after t = timesteps[0]), "pred_x_start": that step's x_0 estimate} after every step.
# sample_loop_progressive chooses the time steps, draws x_T, and checks the options against the signature.
def sample_ddpm(diffusion, model, x, timesteps, *, clip_denoised=True, generator=None):
    """Algorithm 2 (:func:`p_sample` at every kept step), on the diffusion respaced to ``timesteps``."""
    yield from respaced_chain(diffusion, model, x, timesteps, p_sample, clip_denoised=clip_denoised, generator=generator)


def sample_ddim(diffusion, model, x, timesteps, *, clip_denoised=True, generator=None, eta: float = 0.0):
    """DDIM (:func:`ddim_sample`) on the diffusion respaced to ``timesteps``; eta in [0, 1] (0: deterministic)."""
    check_eta(eta)
    yield from respaced_chain(diffusion, model, x, timesteps, ddim_sample, clip_denoised=clip_denoised,
                              generator=generator, eta=eta)


def sample_dpmpp_2m(diffusion, model, x, timesteps, *, clip_denoised=True, generator=None):
    """DPM-Solver++(2M), the deterministic multistep solver of the probability-flow ODE (Lu et al. 2022)."""
    yield from _dpm_solver_pp(diffusion, model, x, timesteps, stochastic=False, clip_denoised=clip_denoised,
                              generator=generator)


def sample_dpmpp_2m_sde(diffusion, model, x, timesteps, *, clip_denoised=True, generator=None):
    """SDE-DPM-Solver++(2M): the same multistep x_0 estimate with fresh noise at every step (Lu et al. 2022b)."""
    yield from _dpm_solver_pp(diffusion, model, x, timesteps, stochastic=True, clip_denoised=clip_denoised,
                              generator=generator)


def _pc_update(diffusion, model, x_t, t, *, clip_denoised: bool, generator, snr: float):
    """The predictor (Algorithm 2's step, :func:`p_sample`) from index t, then PC_CORRECTOR_STEPS Langevin
    corrector steps at index t - 1 (none after the step to the data)."""
    out = p_sample(diffusion, model, x_t, t, clip_denoised=clip_denoised, generator=generator)
    x, level = out["sample"], t - 1
    if int(t[0]) > 0:  # the loop's t is one index for the whole batch
        alpha = diffusion._c("alphas", level, x)
        for _ in range(PC_CORRECTOR_STEPS):
            score = score_from_eps(diffusion, x, level, diffusion.model_eps(model, x, level))
            x = corrector_step(x, score, randn_like(x, generator), snr, alpha)
    return {"sample": x, "pred_x_start": out["pred_x_start"]}


def sample_pc(diffusion, model, x, timesteps, *, clip_denoised=True, generator=None, snr: float = PC_SNR):
    """Predictor-corrector sampling, Song et al. 2021, Algorithm 3 (VP SDE): Algorithm 2's ancestral step as the
    predictor, then PC_CORRECTOR_STEPS Langevin steps at the new level with the eps-model read as a score
    (:func:`ddpm_lite.score.score_from_eps`) and the signal-to-noise step size rule with r = ``snr``
    (:func:`ddpm_lite.score.snr_step_size`). Its evaluations: 1 + PC_CORRECTOR_STEPS per level but the last."""
    if not snr > 0:
        raise ValueError(f"snr must be positive (r of the corrector's step size rule), got {snr!r}")
    yield from respaced_chain(diffusion, model, x, timesteps, _pc_update, clip_denoised=clip_denoised,
                              generator=generator, snr=snr)


def sample_annealed_langevin(diffusion, model, x, timesteps, *, clip_denoised=True, generator=None,
                             step_ratio: float = ANNEALED_STEP_RATIO):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) over the model's own noise levels, with the
    eps-model as the score: ANNEALED_STEPS_PER_LEVEL Langevin steps at each level of ``timesteps`` from the top,
    then one denoising step.

    It runs in the variables of Song & Ermon (and of Karras et al.), x^KE = x_t / sqrt(alpha_bar_t) with noise level
    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), where the levels are nested Gaussian blurs of one density and the
    score is grad log p_sigma(x^KE) = -eps_theta(sqrt(alpha_bar_t) x^KE, t) / sigma_t. Step sizes follow their rule
    alpha_i = eps sigma_i^2 / sigma_L^2 (:func:`ddpm_lite.score.annealed_step_sizes`) with eps = ``step_ratio``
    sigma_L^2, i.e. alpha_i = step_ratio sigma_i^2 at every level (0 < step_ratio < 4: a Gaussian of variance
    sigma^2 is stable under steps alpha < 4 sigma^2). The top level is at sigma^KE <= ANNEALED_SIGMA_MAX
    (:func:`sampler_timesteps`): x, drawn as N(0, I) for x_T, is taken as x at that level. The last step is
    Tweedie's denoising x_0 = x^KE - sigma_0 eps_theta (Jolicoeur-Martineau et al. 2021; NCSNv2's final step).
    """
    if isinstance(step_ratio, bool) or not isinstance(step_ratio, (int, float)) or not 0 < step_ratio < 4:
        raise ValueError(f"step_ratio must be in (0, 4) (alpha_i / sigma_i^2), got {step_ratio!r}")
    levels = list(reversed(timesteps))
    sigmas = diffusion.schedule.noise_level[levels]  # (K,) decreasing
    step_sizes = annealed_step_sizes(sigmas, step_ratio * sigmas[-1].item() ** 2).tolist()
    x_ke = x / _vp_levels(diffusion, levels[0])["alpha"]
    for t, sigma, step_size in zip(levels, sigmas.tolist(), step_sizes):
        index = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        alpha_t = _vp_levels(diffusion, t)["alpha"]
        for _ in range(ANNEALED_STEPS_PER_LEVEL):
            eps = diffusion.model_eps(model, alpha_t * x_ke, index)
            pred_x_start = x_ke - sigma * eps  # Tweedie's estimate at this step's input, for the figures
            x_ke = langevin_step(x_ke, -eps / sigma, step_size, randn_like(x_ke, generator))
        if t > 0:  # "sample": x after this level's steps (still at level t), in the VP variables
            yield {"t": t, "sample": x_ke * alpha_t, "pred_x_start": pred_x_start}
    x_0 = x_ke - sigma * diffusion.model_eps(model, alpha_t * x_ke, index)  # Tweedie: E[x_0 | x^KE]
    x_0 = x_0.clamp(-1, 1) if clip_denoised else x_0
    yield {"t": 0, "sample": x_0, "pred_x_start": x_0}


SAMPLERS: dict[str, Callable[..., Iterator[dict]]] = {
    "ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp_2m": sample_dpmpp_2m, "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "churn": sample_churn, "pc": sample_pc, "annealed_langevin": sample_annealed_langevin,
}
"""Every sampler by name: the one place the CLI, the chapters, the benchmarks and :func:`sample` find them."""
assert tuple(SAMPLERS) == get_args(SamplerName)
_COMMON = ("clip_denoised", "generator")


def sampler_options(sampler: SamplerName) -> dict[str, object]:
    """The options of one sampler beyond the common ones, with their defaults: e.g. {"eta": 0.0} for "ddim"."""
    _check_sampler(sampler)
    parameters = inspect.signature(SAMPLERS[sampler]).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON}


def _check_options(sampler: str, options: dict) -> None:
    known = sampler_options(sampler)
    for name in options:
        if name not in known:
            owners = [other for other in SAMPLERS if name in sampler_options(other)]
            if not owners:
                raise TypeError(f"unknown sampling option {name!r}; the samplers' options: "
                                f"{ {s: list(sampler_options(s)) for s in SAMPLERS} }")
            use = " or ".join(f"sampler={o!r}" for o in owners)
            raise ValueError(f"{name} applies to {use} only, not {sampler!r}; drop it or use {use}")


# ---------------------------------------------------------------------------------------- the sampling loop
def sample_loop_progressive(
    diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], *,
    sampler: SamplerName = DEFAULT_SAMPLER, steps: int | None = None, spacing: Spacing | None = None,
    clip_denoised: bool = True, noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
    device=None, progress: bool = False, **options,
) -> Iterator[dict]:
    """Run a sampler from x_T ~ N(0, I) down to x_0, yielding after every step.

    shape: (B, ...) of the samples; sampler: a name in :data:`SAMPLERS` (default :data:`DEFAULT_SAMPLER`; "ddpm" is
    Algorithm 2); steps: at most this many network evaluations (NFE), 1 <= steps <= T, or None for the sampler's
    :func:`default_steps` (all T for "ddpm"; :func:`sampler_timesteps` says where each sampler spends them);
    spacing: where the steps go (:func:`sampler_timesteps`). options: the sampler's own
    (:func:`sampler_options`): ``eta`` of "ddim" (0 to 1), ``s_churn`` of "churn". device: where x_T and every step
    live, the model's device (default: that of ``noise``, else torch's default). progress: a progress bar over the
    steps (:mod:`ddpm_lite._progress`).
    Yields {"t": original time index just denoised (int), "sample": x at the next level (x_0 after t = 0),
    "pred_x_start": the x_0 estimate of that step}.
    """
    _check_sampler(sampler)
    _check_options(sampler, options)
    timesteps = sampler_timesteps(diffusion, sampler, steps, spacing)
    if noise is None:
        noise = randn(shape, generator, device)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise (x_T) has shape {tuple(noise.shape)}, but shape is {tuple(shape)}; pass one like it")
    elif not bool(torch.isfinite(noise).all()):
        raise ValueError("noise (x_T) has NaN or inf values; pass finite noise, or none to draw x_T ~ N(0, I)")
    x = noise if device is None else noise.to(device)  # a model on a GPU: x_T (drawn anywhere) moves there
    run = SAMPLERS[sampler](diffusion, model, x, timesteps, clip_denoised=clip_denoised, generator=generator,
                            **options)
    bar = progress_bar(total=len(timesteps), desc=f"{sampler} sampling", enabled=progress)
    try:
        while True:
            with torch.no_grad():  # each step runs inside next()
                out = next(run, None)
            if out is None:
                return
            bar.update()
            yield out
    finally:
        bar.close()


def sample(
    diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], *, sampler: SamplerName = DEFAULT_SAMPLER,
    steps: int | None = None, threads: Threads = None, **kwargs,
) -> torch.Tensor:
    """Draw samples x_0: (B, ...) with ``sampler`` (default :data:`DEFAULT_SAMPLER`) in ``steps`` evaluations
    (default :func:`default_steps`); ``sampler="ddpm"`` is Algorithm 2, with all T steps unless ``steps`` is given.
    threads: CPU threads for this call, as :func:`~ddpm_lite.set_threads` takes them ("auto": the free cores),
    restored afterwards; None (default) leaves torch's setting alone.
    Other keyword arguments as :func:`sample_loop_progressive`."""
    with num_threads(threads):
        for out in sample_loop_progressive(diffusion, model, shape, sampler=sampler, steps=steps, **kwargs):
            pass
    return out["sample"]


def sample_trajectory(
    diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], *, sampler: SamplerName = DEFAULT_SAMPLER,
    steps: int | None = None, every: int | None = None, **kwargs,
) -> dict:
    """Sample and keep x_t and the predicted x_0 every ``every`` steps (and at the last) for figures.

    sampler, steps and the other keyword arguments as :func:`sample`; every: None keeps about ten states, one
    every len(levels) // 10 steps of the sampler's :func:`sampler_timesteps`.
    Returns {"timesteps": list of time indices (S,), "x_t": (S, B, ...), "pred_x_start": (S, B, ...),
    "sample": x_0 (B, ...)}; x_t[k] is the sample after denoising timesteps[k].
    """
    if every is None:
        every = max(1, len(sampler_timesteps(diffusion, sampler, steps, kwargs.get("spacing"))) // 10)
    elif isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int (keep one state every that many steps), got {every!r}")
    timesteps, states, predictions = [], [], []
    for k, out in enumerate(sample_loop_progressive(diffusion, model, shape, sampler=sampler, steps=steps, **kwargs)):
        if k % every == 0 or out["t"] == 0:
            timesteps.append(out["t"])
            states.append(out["sample"])
            predictions.append(out["pred_x_start"])
    return {"timesteps": timesteps, "x_t": torch.stack(states), "pred_x_start": torch.stack(predictions), "sample": out["sample"]}
