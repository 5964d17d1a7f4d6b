"""The probability-flow ODE and the exact log-likelihood it gives (Song et al. 2021; Chen et al. 2018).

Every diffusion has a deterministic twin: the probability-flow ODE (Song et al. 2021, eq. (13)),
dx = [f(x, t) - g(t)^2 / 2 grad log p_t(x)] dt, moves samples so that at every time they follow the same marginals
q(x_t) as the forward SDE. For the VP SDE, f = -beta(t) x / 2 and g^2 = beta(t); with the eps-model as the score
(s = -eps / sqrt(1 - alpha_bar_t)) it reads dx/dt = beta(t) / 2 [eps(x, t) / sqrt(1 - alpha_bar_t) - x].

This module writes it in u = log sigma^KE_t, the log of the noise level sigma^KE = sqrt((1 - alpha_bar) / alpha_bar)
(du/dt = beta(t) / (2 (1 - alpha_bar_t)) for the VP SDE), where it is smooth from the data to the top level:

    dx/du = sqrt(1 - alpha_bar) eps(x, t) - (1 - alpha_bar) x        (:func:`probability_flow_drift`)

and solves it with Heun's method (the trapezoid rule, second order) between the diffusion's own levels, evenly spaced
in u, so the network is only ever called at the time indices it was trained on (:func:`probability_flow_step`).
DDIM with eta = 0 is Euler's method on the same ODE (in x / sqrt(alpha_bar) and sigma^KE), DPM-Solver++ a
multistep solver of it.

An ODE maps the prior to the data one to one, so the density of a point follows from the instantaneous change of
variables (Chen et al. 2018, Theorem 1): d log p(x(u)) / du = -div f(x(u), u), hence

    log p_start(x) = log N(x(u_T); 0, I) + int_{u_start}^{u_T} div f(x(u), u) du        (:func:`ode_log_likelihood`)

with div f = sqrt(1 - alpha_bar) div eps - (1 - alpha_bar) D. The divergence is exact (:func:`divergence`,
method "exact": D vector-Jacobian products, 64 for the 8 x 8 digits) or Hutchinson's unbiased estimate
E_v[v^T J v] with Rademacher v (method "hutchinson", Grathwohl et al. 2019) for larger images.
Like the rest of the diffusion math, this module never imports the network. Shapes: x (B, ...), D = x[0].numel().
"""
from __future__ import annotations

import math
from typing import Callable, Literal, get_args

import torch

from ._random import randint
from .diffusion import GaussianDiffusion, Model
from .schedules import logsnr_timesteps

Divergence = Literal["exact", "hutchinson"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)
DEFAULT_ODE_STEPS = 50  # Heun steps of the likelihood ODE (at most 100 network evaluations)
MAX_BATCH = 4096  # images per forward pass when the exact divergence replicates the batch D times


def log_noise_level(diffusion: GaussianDiffusion, t: int) -> float:
    """u_t = log sigma^KE_t = log sqrt((1 - alpha_bar_t) / alpha_bar_t) at one time index t: the ODE's time."""
    return math.log(diffusion.schedule.noise_level[t].item())


def probability_flow_drift(diffusion: GaussianDiffusion, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """dx/du of the probability-flow ODE, Song et al. 2021, eq. (13) for the VP SDE with the eps-model as the score,
    in u = log sigma^KE_t: sqrt(1 - alpha_bar_t) eps - (1 - alpha_bar_t) x_t.

    From eq. (13): dx/dt = -beta(t) x / 2 - beta(t) s(x, t) / 2 with s = -eps / sqrt(1 - alpha_bar_t), and
    du/dt = beta(t) / (2 (1 - alpha_bar_t)). eps, x_t: (B, ...); t: (B,) -> (B, ...).
    """
    return diffusion._c("sqrt_one_minus_alphas_cumprod", t, x_t) * eps - (1 - diffusion._c("alphas_cumprod", t, x_t)) * x_t


def divergence(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, method: Divergence = "exact",
               probes: int = 1, generator: torch.Generator | None = None, max_batch: int = MAX_BATCH):
    """fn(x) and its divergence div fn(x) = trace of the Jacobian d fn / dx, per sample: ((B, ...), (B,)).

    fn must treat samples independently (a network without batch statistics). "exact": the D diagonal entries of
    the Jacobian, one vector-Jacobian product each, done as one backward pass through the batch replicated D times
    (at most ``max_batch`` rows per pass). "hutchinson": the mean of v^T J v over ``probes`` Rademacher vectors v,
    unbiased (Hutchinson 1989; Grathwohl et al. 2019), with the generator's randomness.
    """
    if method not in DIVERGENCES:
        raise ValueError(f"unknown divergence method {method!r}; use one of {DIVERGENCES}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer, got {probes!r}")
    batch, dims = x.shape[0], x[0].numel()
    x = x.detach()
    rows = None  # hutchinson's probes, (P B, D): Rademacher +-1
    if method == "hutchinson":
        rows = (randint(0, 2, (probes * batch, dims), generator, x.device) * 2 - 1).to(x.dtype)
    total, value = torch.zeros(batch, dtype=x.dtype, device=x.device), None
    count = probes if method == "hutchinson" else dims
    per_pass = max(1, max_batch // batch)
    for first in range(0, count, per_pass):
        k = min(per_pass, count - first)
        with torch.enable_grad():
            inputs = x.repeat(k, *([1] * (x.ndim - 1))).requires_grad_(True)  # (k B, ...)
            out = fn(inputs)
            if method == "exact":  # row j of copy i is paired with coordinate first + i
                dims_of = torch.arange(first, first + k, device=x.device).repeat_interleave(batch)
                picked = out.reshape(k * batch, dims).gather(1, dims_of[:, None])
                grad, = torch.autograd.grad(picked.sum(), inputs)
                total += grad.reshape(k * batch, dims).gather(1, dims_of[:, None]).reshape(k, batch).sum(0)
            else:
                probe = rows[first * batch:(first + k) * batch]
                grad, = torch.autograd.grad((out.reshape(k * batch, dims) * probe).sum(), inputs)
                total += (grad.reshape(k * batch, dims) * probe).sum(1).reshape(k, batch).sum(0)
        if value is None:
            value = out[:batch].detach()
    return value, total / probes if method == "hutchinson" else total


def probability_flow_step(diffusion: GaussianDiffusion, model: Model, x: torch.Tensor, t_from: int, t_to: int, *,
                          divergence_method: Divergence | None = None, probes: int = 1,
                          generator: torch.Generator | None = None):
    """One Heun step of the probability-flow ODE from time index t_from to t_to (either direction): (x, delta).

    With h = u_{t_to} - u_{t_from} (:func:`log_noise_level`) and F = :func:`probability_flow_drift`:
    x' = x + h F(x, t_from), x_next = x + h (F(x, t_from) + F(x', t_to)) / 2, two network evaluations.
    With ``divergence_method`` the same trapezoid integrates the divergence: delta = h (div F(x) + div F(x')) / 2,
    the change of log p along the step taken with the opposite sign (:func:`divergence`); else delta is None.
    x: (B, ...) -> x_next: (B, ...), delta: (B,) or None.
    """
    h = log_noise_level(diffusion, t_to) - log_noise_level(diffusion, t_from)

    def drift(t: int):
        def f(y: torch.Tensor) -> torch.Tensor:
            index = torch.full((y.shape[0],), t, dtype=torch.long, device=y.device)
            return probability_flow_drift(diffusion, diffusion.model_eps(model, y, index), y, index)
        return f

    if divergence_method is None:
        f0 = drift(t_from)(x)
        f1 = drift(t_to)(x + h * f0)
        return x + 0.5 * h * (f0 + f1), None
    f0, div0 = divergence(drift(t_from), x, method=divergence_method, probes=probes, generator=generator)
    f1, div1 = divergence(drift(t_to), x + h * f0, method=divergence_method, probes=probes, generator=generator)
    return x + 0.5 * h * (f0 + f1), 0.5 * h * (div0 + div1)


def ode_log_likelihood(diffusion: GaussianDiffusion, model: Model, x: torch.Tensor, *, steps: int = DEFAULT_ODE_STEPS,
                       divergence_method: Divergence = "exact", probes: int = 1,
                       generator: torch.Generator | None = None) -> dict:
    """log p(x) in nats of the probability-flow ODE's model at time index 0 (the paper's t = 1, the level x_1).

    Integrates the ODE from x at index 0 up to index T - 1 in at most ``steps`` Heun steps between levels evenly
    spaced in u (:func:`~ddpm_lite.schedules.logsnr_timesteps`; near t = 0 some merge, so fewer may be taken) with
    :func:`probability_flow_step`, two network evaluations per step, each with its divergence; then
    log p(x) = log N(x_T; 0, I) + sum of the steps' deltas (the instantaneous change of variables).
    x: (B, ...). Returns {"log_likelihood": (B,), "prior": log N(x_T; 0, I) (B,), "delta": (B,), "x_T": (B, ...),
    "nfe": network evaluations (divergence passes not counted)}.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps < diffusion.num_timesteps:
        raise ValueError(f"steps must be an int between 1 and T - 1 = {diffusion.num_timesteps - 1}, got {steps!r}")
    levels = logsnr_timesteps(diffusion.schedule, steps + 1)
    x_t, delta = x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for t_from, t_to in zip(levels[:-1], levels[1:]):
        x_t, step_delta = probability_flow_step(diffusion, model, x_t, t_from, t_to, divergence_method=divergence_method,
                                                probes=probes, generator=generator)
        delta = delta + step_delta
    flat = x_t.reshape(x.shape[0], -1)
    prior = -0.5 * (flat**2).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)
    return {"log_likelihood": prior + delta, "prior": prior, "delta": delta, "x_T": x_t,
            "nfe": 2 * (len(levels) - 1)}
