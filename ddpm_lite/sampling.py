"""Samplers: Algorithm 2 of Ho et al. 2020 (ancestral sampling), DDIM (Song et al. 2021), and respacing to K steps.

Every sampler walks t = T-1, ..., 0 (the paper's t = T, ..., 1) and reaches index 0, where Algorithm 2 adds
no noise (z = 0). Randomness comes only from ``noise=`` (x_T) and ``generator=``.
"""
from __future__ import annotations

from typing import Iterator, Literal

import torch

from .diffusion import GaussianDiffusion, Model

SamplerName = Literal["ddpm", "ddim"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim")


def space_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """K evenly spaced indices from 0 to T-1, both ends included (for K = 1, just T-1): a list of ints."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be between 1 and T = {num_timesteps}, got {steps}")
    if steps == 1:
        return [num_timesteps - 1]
    return sorted({round(i * (num_timesteps - 1) / (steps - 1)) for i in range(steps)})


class SpacedModel:
    """Calls the original model with the original time index: respaced index i -> timesteps[i]."""

    def __init__(self, model: Model, timesteps: torch.Tensor):
        self.model = model
        self.timesteps = timesteps

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x_t, self.timesteps.to(t.device)[t])


def respace(diffusion: GaussianDiffusion, timesteps: list[int]) -> GaussianDiffusion:
    """A diffusion over a subsequence tau of the time steps with the same alpha_bar at each kept step.

    beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}} (Nichol & Dhariwal 2021, Sec. 4); wrap the model in
    :class:`SpacedModel` to call it. With every step kept this is the original diffusion.
    """
    kept = diffusion.schedule.alphas_cumprod[torch.as_tensor(timesteps)]
    previous = torch.cat([torch.ones(1, dtype=torch.float64), kept[:-1]])
    return GaussianDiffusion(
        1.0 - kept / previous,
        model_mean_type=diffusion.model_mean_type,
        model_var_type=diffusion.model_var_type,
        loss_type=diffusion.loss_type,
        data_bins=diffusion.data_bins,
    )


def p_sample(
    diffusion: GaussianDiffusion, model: Model, x_t: torch.Tensor, t: torch.Tensor, *,
    clip_denoised: bool = True, generator: torch.Generator | None = None,
) -> dict:
    """One step of Algorithm 2 (lines 3-4): x_{t-1} = mu_theta(x_t, t) + sigma_t z, with z = 0 at index 0.

    Without clipping, mu_theta is exactly eq. (11), (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t).
    x_t: (B, ...); t: (B,). Returns {"sample": x_{t-1}, "pred_x_start": x_0 estimate}, each (B, ...).
    """
    out = diffusion.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised)
    z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
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
    z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
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


def sample_loop_progressive(
    diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], *,
    sampler: SamplerName = "ddpm", steps: int | None = None, eta: float = 0.0, clip_denoised: bool = True,
    noise: torch.Tensor | None = None, generator: torch.Generator | None = None, device=None, progress: bool = False,
) -> Iterator[dict]:
    """Run a sampler from x_T ~ N(0, I) down to x_0, yielding after every step.

    shape: (B, ...) of the samples; steps: K <= T steps (respaced), None for all T.
    Yields {"t": original time index just denoised (int), "sample": x_{t-1}, "pred_x_start": x_0 estimate}.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {SAMPLERS}")
    check_eta(eta)
    timesteps = list(range(diffusion.num_timesteps)) if steps is None else space_timesteps(diffusion.num_timesteps, steps)
    if len(timesteps) < diffusion.num_timesteps:
        diffusion, model = respace(diffusion, timesteps), SpacedModel(model, torch.as_tensor(timesteps))
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=device)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise (x_T) has shape {tuple(noise.shape)}, but shape is {tuple(shape)}; pass one like it")
    elif not bool(torch.isfinite(noise).all()):
        raise ValueError("noise (x_T) has NaN or inf values; pass finite noise, or none to draw x_T ~ N(0, I)")
    step = p_sample if sampler == "ddpm" else ddim_sample
    options = {"clip_denoised": clip_denoised, "generator": generator} | ({"eta": eta} if sampler == "ddim" else {})
    x = noise
    indices = reversed(range(len(timesteps)))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(list(indices), desc=f"{sampler} sampling")
    for i in indices:
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        with torch.no_grad():
            out = step(diffusion, model, x, t, **options)
        x = out["sample"]
        yield {"t": timesteps[i], "sample": x, "pred_x_start": out["pred_x_start"]}


def sample(diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], **kwargs) -> torch.Tensor:
    """Draw samples x_0: (B, ...). Keyword arguments as :func:`sample_loop_progressive`."""
    for out in sample_loop_progressive(diffusion, model, shape, **kwargs):
        pass
    return out["sample"]


def sample_trajectory(
    diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], *, every: int = 100, **kwargs
) -> dict:
    """Sample and keep x_t and the predicted x_0 every ``every`` steps (and at the last) for figures.

    Returns {"timesteps": list of time indices (S,), "x_t": (S, B, ...), "pred_x_start": (S, B, ...),
    "sample": x_0 (B, ...)}; x_t[k] is the sample after denoising timesteps[k].
    """
    timesteps, states, predictions = [], [], []
    for k, out in enumerate(sample_loop_progressive(diffusion, model, shape, **kwargs)):
        if k % every == 0 or out["t"] == 0:
            timesteps.append(out["t"])
            states.append(out["sample"])
            predictions.append(out["pred_x_start"])
    return {"timesteps": timesteps, "x_t": torch.stack(states), "pred_x_start": torch.stack(predictions), "sample": out["sample"]}
