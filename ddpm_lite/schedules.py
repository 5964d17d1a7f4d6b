"""Noise schedules: the fixed variances beta_1 ... beta_T of the forward process.

Everything here is computed in float64 (as improved-diffusion does: "use float64 for accuracy") and kept in
float64; :func:`extract` casts one entry per sample to the dtype of the data when the math needs it.

Time-step convention of the whole package: ``t`` is an int64 tensor of shape (B,) with values 0 ... T-1,
and index 0 is the paper's t = 1. So ``schedule.betas[0]`` is the paper's beta_1 and ``betas[T-1]`` is beta_T.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

ScheduleName = Literal["linear", "cosine"]
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)


def linear_beta_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. 2020, Sec. 4: beta_t rises linearly from beta_1 = 1e-4 to beta_T = 0.02 (for T = 1000).

    For other T the end points are rescaled by 1000 / T (improved-diffusion's convention), so that the total
    amount of noise added stays comparable; for very short chains (T <= 20) betas are clipped at 0.999.
    Returns betas: (T,) float64.
    """
    _check_num_timesteps(num_timesteps)
    scale = 1000 / num_timesteps
    betas = torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)
    return betas.clamp(max=0.999)


def cosine_beta_schedule(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. (17): alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2).

    beta_t = 1 - alpha_bar(t) / alpha_bar(t-1), clipped at ``max_beta`` to avoid a singularity at t = T.
    Returns betas: (T,) float64.
    """
    _check_num_timesteps(num_timesteps)
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta)


def get_beta_schedule(name: ScheduleName, num_timesteps: int = 1000) -> torch.Tensor:
    """The betas of a named schedule (one of :data:`SCHEDULE_NAMES`): (T,) float64."""
    if name == "linear":
        return linear_beta_schedule(num_timesteps)
    if name == "cosine":
        return cosine_beta_schedule(num_timesteps)
    raise ValueError(f"unknown beta schedule {name!r}; use one of {SCHEDULE_NAMES}")


def schedule_name(betas: torch.Tensor) -> ScheduleName | None:
    """The name of the schedule whose betas (T,) are exactly ``betas`` at their length T, or None for other betas."""
    T = betas.shape[0]
    return next((name for name in SCHEDULE_NAMES if torch.equal(get_beta_schedule(name, T), betas)), None)


def _check_num_timesteps(num_timesteps: int) -> None:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be an int >= 1 (T, e.g. 1000), got {num_timesteps!r}")


def _check_kept_timesteps(timesteps, num_timesteps: int) -> tuple[int, ...]:
    """The indices tau_1 < ... < tau_K that a respaced chain keeps, checked: K >= 1 ints rising within 0 ... T-1."""
    kept = tuple(int(t) for t in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps))
    in_order = all(a < b for a, b in zip(kept[:-1], kept[1:]))
    if not kept or not in_order or kept[0] < 0 or kept[-1] >= num_timesteps:
        shown = str(list(kept)) if len(kept) <= 8 else f"[{kept[0]}, {kept[1]}, ..., {kept[-1]}] ({len(kept)})"
        raise ValueError(f"timesteps must be rising indices in 0 ... T-1 = {num_timesteps - 1} (e.g. "
                         f"space_timesteps(T, K)), got {shown}")
    return kept


def check_betas(betas) -> torch.Tensor:
    """Validate betas (1-D, every 0 < beta_t < 1) and return them as a float64 tensor."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(f"betas must be a non-empty 1-D sequence (T,), got shape {tuple(betas.shape)}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        bad = betas[(betas <= 0) | (betas >= 1) | betas.isnan()]
        raise ValueError(f"every beta_t must lie strictly between 0 and 1; found {bad[:3].tolist()}")
    return betas


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Every per-step coefficient that the forward process, the posterior and the samplers need, in float64.

    Build with :meth:`from_betas` or :meth:`from_name`. All fields are (T,) float64 tensors indexed by
    t = 0 ... T-1 (index 0 is the paper's t = 1).

    ``noise_level`` reads the forward process as added noise: x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps with
    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), rising with t (Karras et al. 2022, Table 1: their sigma of
    this process). The churn sampler and the reconstruction methods use it. It equals
    ``sqrt_recipm1_alphas_cumprod`` in exact arithmetic, without the cancellation in 1 / alpha_bar_t - 1 at small t.
    """

    betas: torch.Tensor  # \beta_t
    alphas: torch.Tensor  # \alpha_t = 1 - \beta_t
    alphas_cumprod: torch.Tensor  # \bar\alpha_t = \prod_{s<=t} \alpha_s
    alphas_cumprod_prev: torch.Tensor  # \bar\alpha_{t-1}, with \bar\alpha_0 = 1
    sqrt_alphas_cumprod: torch.Tensor  # \sqrt{\bar\alpha_t}
    sqrt_one_minus_alphas_cumprod: torch.Tensor  # \sqrt{1 - \bar\alpha_t}
    sqrt_recip_alphas_cumprod: torch.Tensor  # 1 / \sqrt{\bar\alpha_t}
    sqrt_recipm1_alphas_cumprod: torch.Tensor  # \sqrt{1 / \bar\alpha_t - 1}
    snr: torch.Tensor  # signal-to-noise ratio \bar\alpha_t / (1 - \bar\alpha_t)
    noise_level: torch.Tensor  # \sigma_t = \sqrt{(1 - \bar\alpha_t) / \bar\alpha_t}, see above
    posterior_variance: torch.Tensor  # \tilde\beta_t = (1 - \bar\alpha_{t-1}) / (1 - \bar\alpha_t) \beta_t, eq. (7)
    posterior_log_variance_clipped: torch.Tensor  # log \tilde\beta_t, with \tilde\beta_1 (= 0) replaced by \tilde\beta_2
    posterior_mean_coef1: torch.Tensor  # coefficient of x_0 in \tilde\mu_t, eq. (7)
    posterior_mean_coef2: torch.Tensor  # coefficient of x_t in \tilde\mu_t, eq. (7)

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @classmethod
    def from_name(cls, name: ScheduleName = "linear", num_timesteps: int = 1000) -> "NoiseSchedule":
        return cls.from_betas(get_beta_schedule(name, num_timesteps))

    @classmethod
    def from_betas(cls, betas) -> "NoiseSchedule":
        betas = check_betas(betas)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # \tilde\beta_1 = 0 makes log(0) = -inf; the decoder at t = 1 never uses it (improved-diffusion).
        first = posterior_variance[1] if len(betas) > 1 else betas[0]
        log_var_clipped = torch.log(torch.cat([first.reshape(1), posterior_variance[1:]]))
        return cls(
            betas=betas,
            alphas=alphas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - alphas_cumprod).sqrt(),
            sqrt_recip_alphas_cumprod=alphas_cumprod.rsqrt(),
            sqrt_recipm1_alphas_cumprod=(1.0 / alphas_cumprod - 1.0).sqrt(),
            snr=alphas_cumprod / (1.0 - alphas_cumprod),
            noise_level=((1.0 - alphas_cumprod) / alphas_cumprod).sqrt(),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=log_var_clipped,
            posterior_mean_coef1=betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
        )


def respaced_betas(schedule: NoiseSchedule, timesteps) -> torch.Tensor:
    """The variances of the chain that keeps only the steps tau_1 < ... < tau_K (Nichol & Dhariwal 2021, Sec. 4):

        beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}},   alpha_bar_{tau_0} = 1,

    so that the short chain has the same alpha_bar at every kept step. timesteps: K rising indices in 0 ... T-1
    -> (K,) float64.
    """
    kept = schedule.alphas_cumprod[list(_check_kept_timesteps(timesteps, schedule.num_timesteps))]
    previous = torch.cat([torch.ones(1, dtype=torch.float64), kept[:-1]])
    return 1.0 - kept / previous


def logsnr_timesteps(schedule: NoiseSchedule, steps: int, top: int | None = None) -> list[int]:
    """Indices spaced uniformly in lambda_t = log(alpha_t / sigma_t) = -log sigma^KE_t from index ``top`` (default
    T-1) to index 0, both kept, each level rounded to the nearest index (Lu et al. 2022, DPM-Solver, Sec. 3.3,
    "logSNR" steps; geometric noise levels, as Song & Ermon 2019's): ascending ints. DPM-Solver++, annealed Langevin
    and the probability-flow ODE's likelihood (:mod:`ddpm_lite.likelihood`) step through them.

    Near t = 0 neighbouring indices lie far apart in lambda, so several levels may round to one index; each is kept
    once and fewer than ``steps`` indices may come back. 1 <= steps <= top + 1.
    """
    top = schedule.num_timesteps - 1 if top is None else top
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= top + 1:
        raise ValueError(f"steps must be an int between 1 and {top + 1} (levels from index {top} to 0), got {steps!r}")
    if steps == 1:
        return [top]
    lambdas = -schedule.noise_level[: top + 1].log()  # (top + 1,) descending in t
    levels = torch.linspace(lambdas[-1].item(), lambdas[0].item(), steps, dtype=torch.float64)
    return sorted(set((levels[:, None] - lambdas[None]).abs().argmin(dim=1).tolist()))


def check_timesteps(t, x: torch.Tensor, num_timesteps: int) -> None:
    """Raise a ValueError unless t is the package's time-step tensor for the batch x.

    t must be an integer tensor of shape (B,) = (x.shape[0],) with values in 0 ... T-1 (index 0 is the paper's
    t = 1). A Python int is refused rather than broadcast (write ``torch.full((B,), i)``), and -1 is refused rather
    than read as T-1. The shape and dtype tests read metadata only; the range test is one fused reduction, the
    only part that waits for a GPU.
    """
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"t must be an int64 tensor of shape (B,), got {type(t).__name__} {t!r}; for one time "
                         "step for the whole batch write torch.full((B,), t)")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"t must be an integer tensor (time indices 0 ... {num_timesteps - 1}), got dtype {t.dtype}; "
                         "convert it with t.long() if its values are whole numbers")
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), one time step per sample, got {tuple(t.shape)}")
    if t.numel() and bool(((t < 0) | (t >= num_timesteps)).any()):
        raise ValueError(f"t must lie in 0 ... T-1 = {num_timesteps - 1} (index 0 is the paper's t = 1), got values "
                         f"from {int(t.min())} to {int(t.max())}")


def extract(coefficients: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pick ``coefficients[t]`` for every sample and shape it to broadcast against x.

    coefficients: (T,) float64; t: (B,) int64 in 0 ... T-1; x: (B, ...) -> (B, 1, ..., 1) in x's dtype and device.
    This is the package's one broadcasting helper: it works for images (B, C, H, W) and for 2-D points (B, 2).
    t is validated (:func:`check_timesteps`): a ValueError, never a silent wrap-around of t = -1 to T-1.
    """
    check_timesteps(t, x, coefficients.shape[0])
    return _extract(coefficients, t, x)


def _extract(coefficients: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`extract` without the checks, for callers that have validated t already."""
    values = coefficients.to(t.device)[t.detach().long()]  # index where t lives: no host-device sync per call
    return values.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
