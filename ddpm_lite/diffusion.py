"""Gaussian diffusion (Ho et al. 2020): the forward process, its posterior, the reverse process and the losses.

The vocabulary is improved-diffusion's (Nichol & Dhariwal 2021), which follows the paper: ``x_start`` is x_0,
``x_t`` the noised sample, ``eps`` the noise, ``q_*`` the fixed forward process, ``p_*`` the learned reverse
process. A "model" is any callable ``model(x_t, t) -> tensor``; this module never imports a network.

Time-step convention: ``t`` is an int64 tensor of shape (B,) with values 0 ... T-1; index 0 is the paper's
t = 1 and index T-1 is the paper's t = T. Data may be images (B, C, H, W) or points (B, D).

Inputs are checked where they enter (a ValueError saying what was expected): t by
:func:`~ddpm_lite.schedules.check_timesteps` (an integer tensor (B,) in 0 ... T-1: -1 is not read as T-1), and
the data of :meth:`GaussianDiffusion.q_sample`, :meth:`GaussianDiffusion.training_losses` and
:meth:`GaussianDiffusion.calc_bpd_loop` by :func:`~ddpm_lite.images.check_images`: finite, and images
(B, C, H, W) in [-1, 1] (the decoder L_0 and the sampler's clipping assume that range).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable, Literal, get_args

import torch

from ._random import randint, randn_like
from .images import check_images
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .schedules import (
    SCHEDULE_NAMES, NoiseSchedule, ScheduleName, _check_kept_timesteps, _check_num_timesteps, _extract,
    check_timesteps, respaced_betas, schedule_name,
)

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ModelMeanType = Literal["eps", "x_start", "v", "mu"]
ModelVarType = Literal["fixed_small", "fixed_large", "learned_range"]
LossType = Literal["simple", "vlb", "hybrid"]
MODEL_MEAN_TYPES: tuple[str, ...] = get_args(ModelMeanType)
MODEL_VAR_TYPES: tuple[str, ...] = get_args(ModelVarType)
LOSS_TYPES: tuple[str, ...] = get_args(LossType)


def _check_choice(what: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"unknown {what} {value!r}; use one of {options}")


@dataclass(frozen=True)
class DiffusionConfig:
    """Everything that defines a :class:`GaussianDiffusion`; checkpoints and the CLI store this.

    ``GaussianDiffusion.from_config(config)`` builds the diffusion, and ``diffusion.config`` gives it back.
    """

    schedule: ScheduleName = "linear"  # "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    num_timesteps: int = 1000  # T of the schedule (a respaced chain keeps the T it was cut from)
    model_mean_type: ModelMeanType = "eps"  # what the network predicts: "eps", "x_start", "v" or "mu" (= \tilde\mu_t)
    model_var_type: ModelVarType = "fixed_small"  # sigma_t^2 = \tilde\beta_t, \beta_t or learned, in that order
    loss_type: LossType = "simple"  # "simple" (L_simple), "vlb" (the true bound), "hybrid" (L_simple + lambda L_vlb)
    data_bins: int = 256  # grey levels of the data, for the decoder L_0: 256 for 8-bit images, 17 for digits
    min_snr_gamma: float | None = None  # L_simple weighted by min(SNR_t, gamma) / SNR_t (Hang et al. 2023); None: 1
    timesteps: tuple[int, ...] | None = None  # a respaced chain's kept indices tau_1 < ... < tau_K of 0 ... T-1
    # (:func:`~ddpm_lite.sampling.respace`); None: all T steps

    def __post_init__(self):
        _check_choice("schedule", self.schedule, SCHEDULE_NAMES)
        _check_num_timesteps(self.num_timesteps)
        _check_choice("model_mean_type", self.model_mean_type, MODEL_MEAN_TYPES)
        _check_choice("model_var_type", self.model_var_type, MODEL_VAR_TYPES)
        _check_choice("loss_type", self.loss_type, LOSS_TYPES)
        if self.model_var_type == "learned_range" and self.loss_type == "simple":
            raise ValueError("a learned variance gets no gradient from L_simple; use loss_type 'hybrid' or 'vlb'")
        if isinstance(self.data_bins, bool) or not isinstance(self.data_bins, int) or self.data_bins < 2:
            raise ValueError(f"data_bins must be an int >= 2 (256 for 8-bit images, 17 for the digits), "
                             f"got {self.data_bins!r}")
        if self.min_snr_gamma is not None:
            gamma = self.min_snr_gamma
            if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < float("inf"):
                raise ValueError(f"min_snr_gamma must be a positive number (Hang et al. use 5) or None, got {gamma!r}")
            if self.loss_type != "simple" or self.model_mean_type == "mu":
                raise ValueError("min_snr_gamma weights L_simple of an eps, x_start or v model; with loss_type "
                                 f"{self.loss_type!r} and model_mean_type {self.model_mean_type!r} set it to None")
        if self.timesteps is not None:  # a list (from a checkpoint's JSON) is stored as the tuple it stands for
            object.__setattr__(self, "timesteps", _check_kept_timesteps(self.timesteps, self.num_timesteps))

    def noise_schedule(self) -> NoiseSchedule:
        """The schedule this config names: T steps of ``schedule``, or the respaced chain over ``timesteps``."""
        schedule = NoiseSchedule.from_name(self.schedule, self.num_timesteps)
        if self.timesteps is None:
            return schedule
        return NoiseSchedule.from_betas(respaced_betas(schedule, self.timesteps))


class GaussianDiffusion:
    """The DDPM forward and reverse processes for one noise schedule.

    Args:
        betas: (T,) the forward variances beta_1 ... beta_T (converted to float64), or a :class:`NoiseSchedule`.
        model_mean_type, model_var_type, loss_type, data_bins: as in :class:`DiffusionConfig`.

    The settings live in one :class:`DiffusionConfig`, read through the properties of the same names.
    :attr:`config` returns it when it describes these betas (:meth:`from_config`, a named schedule's betas, or
    :func:`~ddpm_lite.sampling.respace` of such a diffusion), so that ``from_config(diffusion.config)`` rebuilds
    this diffusion exactly; for other betas it is None.
    """

    def __init__(
        self,
        betas,
        *,
        model_mean_type: ModelMeanType = "eps",
        model_var_type: ModelVarType = "fixed_small",
        loss_type: LossType = "simple",
        data_bins: int = 256,
    ):
        schedule = betas if isinstance(betas, NoiseSchedule) else NoiseSchedule.from_betas(betas)
        name = schedule_name(schedule.betas)
        # For betas no name describes, the config's schedule is a stand-in that nothing reads (config is None).
        config = DiffusionConfig(
            schedule=name or "linear",
            num_timesteps=schedule.num_timesteps,
            model_mean_type=model_mean_type,
            model_var_type=model_var_type,
            loss_type=loss_type,
            data_bins=data_bins,
        )
        self._setup(schedule, config, describes_schedule=name is not None)

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> "GaussianDiffusion":
        if not isinstance(config, DiffusionConfig):
            raise TypeError(f"from_config needs a DiffusionConfig, got {type(config).__name__}")
        diffusion = cls.__new__(cls)
        diffusion._setup(config.noise_schedule(), config, describes_schedule=True)
        return diffusion

    def _setup(self, schedule: NoiseSchedule, config: DiffusionConfig, describes_schedule: bool) -> None:
        self.schedule = schedule
        self._config = config
        self._describes_schedule = describes_schedule
        self._on_device: dict = {}  # (coefficient name, device, dtype) -> that schedule tensor there, in that dtype
        self._checked_t = None  # (weak reference to the last t found in range, its version): see _check_t
        # log sigma_t^2 of "fixed_large": log beta_t, with beta_tilde_2 at t = 1 (see p_variance)
        self._log_betas_clipped = torch.cat([schedule.posterior_variance[1:2], schedule.betas[1:]]).log()

    @property
    def config(self) -> DiffusionConfig | None:
        """The :class:`DiffusionConfig` that rebuilds this diffusion (:meth:`from_config`), or None (raw betas)."""
        return self._config if self._describes_schedule else None

    # The settings, read-only views of the one config (see DiffusionConfig for what each means).
    model_mean_type = property(lambda self: self._config.model_mean_type, doc="What the network predicts.")
    model_var_type = property(lambda self: self._config.model_var_type, doc="How sigma_t^2 is chosen.")
    loss_type = property(lambda self: self._config.loss_type, doc="Which loss training_losses returns.")
    data_bins = property(lambda self: self._config.data_bins, doc="Grey levels of the data (the decoder L_0).")
    min_snr_gamma = property(lambda self: self._config.min_snr_gamma, doc="gamma of the Min-SNR weighting, or None.")

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    @property
    def learns_sigma(self) -> bool:
        """True when the model outputs 2x the data channels (mean output, then variance interpolation v)."""
        return self.model_var_type == "learned_range"

    def _c(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The schedule's coefficient ``name`` at t, shaped to broadcast against x.

        The float64 schedule is copied once to each device that t lives on, in x's dtype (a GPU sampler then never
        waits for a host-to-device copy in its inner loop, and each look-up is one indexing operation).
        """
        self._check_t(t, x)
        key = (name, t.device, x.dtype)
        table = self._on_device.get(key)
        if table is None:  # rounding the table once is rounding each value read from it: the same numbers
            table = self._on_device[key] = getattr(self.schedule, name).to(device=t.device, dtype=x.dtype)
        return table[t.long()].to(x.device).reshape(-1, *([1] * (x.ndim - 1)))

    def _check_t(self, t: torch.Tensor, x: torch.Tensor) -> None:
        """check_timesteps(t, x, T), with its range test done once per t tensor.

        One public call reads several coefficients at the same t (``p_mean_variance`` reads about ten); the range
        test, the only part that waits for a GPU, runs for the first of them. A t changed in place since then
        (its ``_version`` moved) is tested again.
        """
        cached = self._checked_t
        if cached is not None and cached[0]() is t and cached[1] == t._version and t.shape[0] == x.shape[0]:
            return
        check_timesteps(t, x, self.num_timesteps)
        self._checked_t = (weakref.ref(t), t._version)

    # ------------------------------------------------------------------ forward process q
    def q_sample_step(self, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One step of the forward chain, Ho et al. eq. (2): x_t ~ q(x_t | x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t I).

        x_prev: (B, ...) is x_{t-1}; t: (B,) -> x_t: (B, ...).
        """
        if noise is None:
            noise = torch.randn_like(x_prev)
        beta_t = self._c("betas", t, x_prev)
        return (1.0 - beta_t).sqrt() * x_prev + beta_t.sqrt() * noise

    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        """Ho et al. eq. (4): q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

        Returns (mean (B, ...), variance (B, 1, ...), log_variance (B, 1, ...)).
        """
        mean = self._c("sqrt_alphas_cumprod", t, x_start) * x_start
        variance = 1.0 - self._c("alphas_cumprod", t, x_start)
        return mean, variance, variance.log()

    def q_sample(
        self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None, *, validate: bool = True
    ) -> torch.Tensor:
        """Sample q(x_t | x_0) in one step, by reparameterisation (Ho et al. eq. (4) and Algorithm 1, line 5):

            x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I).

        x_start: (B, ...) finite, images in [-1, 1]; t: (B,) int64 in 0 ... T-1; noise: like x_start or None
        -> x_t: (B, ...). validate=False skips the data check (for callers that checked x_start already).
        """
        if validate:
            check_images(x_start, "x_start")
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} must equal x_start shape {tuple(x_start.shape)}")
        return self._c("sqrt_alphas_cumprod", t, x_start) * x_start + self._c(
            "sqrt_one_minus_alphas_cumprod", t, x_start
        ) * noise

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """The forward-process posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I), Ho et al. eqs. (6)-(7):

            mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
            beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

        Returns (mean (B, ...), variance (B, 1, ...), log_variance_clipped (B, 1, ...)).
        """
        mean = self.q_posterior_mean(x_start, x_t, t)
        return mean, self._c("posterior_variance", t, x_t), self._c("posterior_log_variance_clipped", t, x_t)

    def q_posterior_mean(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """mu_tilde_t(x_t, x_0) of eq. (7) alone (:meth:`q_posterior_mean_variance` without the variance): (B, ...)."""
        return self._c("posterior_mean_coef1", t, x_t) * x_start + self._c("posterior_mean_coef2", t, x_t) * x_t

    # ------------------------------------------------------------------ conversions between eps, x_0, v and mu
    def predict_x_start_from_eps(self, x_t, t, eps):
        """Invert eq. (4): x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        return self._c("sqrt_recip_alphas_cumprod", t, x_t) * x_t - self._c("sqrt_recipm1_alphas_cumprod", t, x_t) * eps

    def predict_eps_from_x_start(self, x_t, t, x_start):
        """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
        return (self._c("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x_start) / self._c(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def get_v(self, x_start, t, eps):
        """The velocity target of Salimans & Ho 2022: v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0."""
        return self._c("sqrt_alphas_cumprod", t, x_start) * eps - self._c(
            "sqrt_one_minus_alphas_cumprod", t, x_start
        ) * x_start

    def predict_x_start_from_v(self, x_t, t, v):
        """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
        return self._c("sqrt_alphas_cumprod", t, x_t) * x_t - self._c("sqrt_one_minus_alphas_cumprod", t, x_t) * v

    def predict_x_start_from_mu(self, x_t, t, mu):
        """Invert eq. (7) for x_0: x_0 = (mu_tilde - coef2 x_t) / coef1."""
        return (mu - self._c("posterior_mean_coef2", t, x_t) * x_t) / self._c("posterior_mean_coef1", t, x_t)

    def mean_from_eps(self, x_t, t, eps):
        """Ho et al. eq. (11), the line of Algorithm 2: mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t).

        Equal to ``q_posterior_mean_variance(predict_x_start_from_eps(x_t, t, eps), x_t, t)[0]`` (tested).
        """
        return (x_t - self._c("betas", t, x_t) / self._c("sqrt_one_minus_alphas_cumprod", t, x_t) * eps) / self._c(
            "alphas", t, x_t
        ).sqrt()

    def eps_loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """lambda_t of Ho et al. eq. (12): L_{t-1} - C = lambda_t E||eps - eps_theta||^2 per dimension, for a fixed sigma_t^2.

            lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t))

        L_simple (eq. (14)) sets lambda_t = 1. t: (B,) -> (B,) float64. Needs a fixed variance. At index 0 (the
        paper's t = 1) fixed_small's beta_tilde_1 = 0 is replaced by beta_tilde_2, as in the decoder, so lambda_1 is
        finite there; the term at t = 1 is the decoder L_0, not a KL, so that value is not part of the bound.
        """
        if self.learns_sigma:
            raise ValueError("lambda_t needs a fixed variance; this diffusion learns sigma_t")
        check_timesteps(t, t, self.num_timesteps)
        s = self.schedule
        log_variance = s.posterior_log_variance_clipped if self.model_var_type == "fixed_small" else self._log_betas_clipped
        index = t.detach().cpu().long()
        return (s.betas**2 / (2 * log_variance.exp() * s.alphas * (1 - s.alphas_cumprod)))[index]

    def min_snr_loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """The Min-SNR-gamma weight of L_simple (Hang et al. 2023, eq. (9) and Sec. 3.4), per sample: (B,) -> (B,).

        Weighting the x_0 error by min(SNR_t, gamma), SNR_t = alpha_bar_t / (1 - alpha_bar_t), is, in the target
        the network regresses: min(SNR_t, gamma) / SNR_t for eps, min(SNR_t, gamma) for x_0, and
        min(SNR_t, gamma) / (SNR_t + 1) for v (||v - v_theta||^2 = (SNR_t + 1) ||x_0 - x0_theta||^2). It caps the
        weight of the nearly noise-free steps, whose gradients Hang et al. find conflict with the noisy ones.
        1 everywhere when ``min_snr_gamma`` is None. t: (B,) int64 -> float64 (B,).
        """
        self._check_t(t, t)
        snr = self.schedule.snr.to(t.device)[t]
        if self.min_snr_gamma is None:
            return torch.ones_like(snr)
        capped = snr.clamp(max=self.min_snr_gamma)
        return {"eps": capped / snr, "x_start": capped, "v": capped / (snr + 1)}[self.model_mean_type]

    # ------------------------------------------------------------------ reverse process p_theta
    def split_model_output(self, model_output: torch.Tensor, x_t: torch.Tensor):
        """(mean output, variance output or None): a learned-range model outputs 2C channels on dim 1."""
        if self.learns_sigma:
            expected = (x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:])
            if tuple(model_output.shape) != expected:
                raise ValueError(f"a learned-variance model must output {expected}, got {tuple(model_output.shape)}")
            return model_output.chunk(2, dim=1)
        if model_output.shape != x_t.shape:
            raise ValueError(f"the model must output x_t's shape {tuple(x_t.shape)}, got {tuple(model_output.shape)}")
        return model_output, None

    def p_variance(self, x_t: torch.Tensor, t: torch.Tensor, var_output: torch.Tensor | None = None):
        """Sigma_theta(x_t, t) = sigma_t^2 I: (variance, log_variance), each broadcastable to x_t.

        fixed_small: sigma_t^2 = beta_tilde_t; fixed_large: sigma_t^2 = beta_t (Ho et al. Sec. 3.2; at t = 1 the
        decoder uses beta_tilde_2 instead, as improved-diffusion does, so that L_0 stays finite);
        learned_range: log sigma_t^2 = v log beta_t + (1 - v) log beta_tilde_t with v = (output + 1) / 2
        (Nichol & Dhariwal 2021, eq. (15)).
        """
        if self.model_var_type == "fixed_small":
            return self._c("posterior_variance", t, x_t), self._c("posterior_log_variance_clipped", t, x_t)
        self._check_t(t, x_t)
        max_log = _extract(self._log_betas_clipped, t, x_t)
        if self.model_var_type == "fixed_large":
            return max_log.exp(), max_log
        min_log = self._c("posterior_log_variance_clipped", t, x_t)
        frac = (var_output + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        return log_variance.exp(), log_variance

    def p_mean_variance(
        self, model: Model, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = False, *, with_eps: bool = True,
    ):
        """p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), Sigma_theta(x_t, t)), Ho et al. eq. (1).

        The model's output is read according to ``model_mean_type``; the predicted x_0 is clipped to [-1, 1]
        when ``clip_denoised`` (then mu is the posterior mean of the clipped x_0).
        x_t: (B, ...); t: (B,). Returns a dict of (B, ...) tensors: mean, variance, log_variance,
        pred_x_start, pred_eps, model_output. with_eps=False leaves pred_eps out (three tensor operations fewer,
        for a caller that needs only the mean and variance, as Algorithm 2 does).
        """
        self._check_t(t, x_t)  # before the model sees t
        model_output = model(x_t, t).to(x_t.dtype)
        mean_output, var_output = self.split_model_output(model_output, x_t)
        variance, log_variance = self.p_variance(x_t, t, var_output)
        if self.model_mean_type == "eps":
            pred_x_start = self.predict_x_start_from_eps(x_t, t, mean_output)
        elif self.model_mean_type == "x_start":
            pred_x_start = mean_output
        elif self.model_mean_type == "v":
            pred_x_start = self.predict_x_start_from_v(x_t, t, mean_output)
        else:  # "mu"
            pred_x_start = self.predict_x_start_from_mu(x_t, t, mean_output)
        if clip_denoised:
            pred_x_start = pred_x_start.clamp(-1, 1)
        if self.model_mean_type == "mu" and not clip_denoised:
            mean = mean_output
        else:
            mean = self.q_posterior_mean(pred_x_start, x_t, t)
        out = {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_x_start": pred_x_start,
               "model_output": model_output}
        if with_eps:
            out["pred_eps"] = self.predict_eps_from_x_start(x_t, t, pred_x_start)
        return out

    def model_eps(self, model: Model, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t), unclipped, whatever the model predicts: its output itself for an eps-model, else the
        eps that its x_0 estimate implies (eq. (4) solved for eps). Differentiable in x_t. (B, ...) -> (B, ...)."""
        if self.model_mean_type == "eps":
            self._check_t(t, x_t)
            return self.split_model_output(model(x_t, t).to(x_t.dtype), x_t)[0]
        return self.p_mean_variance(model, x_t, t, clip_denoised=False)["pred_eps"]

    # ------------------------------------------------------------------ the variational bound, term by term
    def prior_bpd(self, x_start: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dimension: (B, ...) -> (B,). No parameters: a constant."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x_start.device)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        kl = normal_kl(mean, log_variance, torch.zeros_like(mean), torch.zeros_like(log_variance))
        return mean_flat(kl) / math.log(2.0)

    def vb_terms_bpd(
        self, model: Model, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = False,
        out: dict | None = None,
    ) -> dict:
        """One term of the bound per sample, in bits per dimension (Ho et al. eq. (5)):

            L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))   for t > 0 (paper's t >= 2)
            L_0     = -log p_theta(x_0 | x_1)  (discretized decoder, eq. (13))  for t == 0

        ``out`` may pass an already computed ``p_mean_variance`` dict. Returns {"output": (B,), "pred_x_start": ...}.
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        if out is None:
            out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"]))
        decoder_nll = -mean_flat(
            discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"], self.data_bins)
        )
        output = torch.where(t == 0, decoder_nll, kl) / math.log(2.0)
        return {"output": output, "pred_x_start": out["pred_x_start"]}

    @torch.no_grad()
    def calc_bpd_loop(
        self, model: Model, x_start: torch.Tensor, clip_denoised: bool = False, generator: torch.Generator | None = None
    ) -> dict:
        """The whole bound -log p(x_0) <= L_T + sum_t L_{t-1} + L_0 for a batch, in bits per dimension.

        Runs the model once per time step (T evaluations). x_start: (B, ...) on the data grid.
        Returns total_bpd (B,), prior_bpd (B,), vb (B, T) with vb[:, t] the term at index t, and
        x_start_mse, eps_mse (B, T).
        """
        check_images(x_start, "x_start")
        batch = x_start.shape[0]
        vb, x_start_mse, eps_mse = [], [], []
        for index in reversed(range(self.num_timesteps)):
            t = torch.full((batch,), index, dtype=torch.long, device=x_start.device)
            noise = randn_like(x_start, generator)
            x_t = self.q_sample(x_start, t, noise=noise, validate=False)
            out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised)
            terms = self.vb_terms_bpd(model, x_start, x_t, t, out=out)
            vb.append(terms["output"])
            x_start_mse.append(mean_flat((out["pred_x_start"] - x_start) ** 2))
            eps_mse.append(mean_flat((out["pred_eps"] - noise) ** 2))
        vb = torch.stack(vb[::-1], dim=1)
        prior = self.prior_bpd(x_start)
        return {
            "total_bpd": vb.sum(dim=1) + prior,
            "prior_bpd": prior,
            "vb": vb,
            "x_start_mse": torch.stack(x_start_mse[::-1], dim=1),
            "eps_mse": torch.stack(eps_mse[::-1], dim=1),
        }

    # ------------------------------------------------------------------ training losses
    def sample_timesteps(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Algorithm 1, line 3: t ~ Uniform({1, ..., T}), i.e. indices 0 ... T-1: (B,) int64."""
        return randint(0, self.num_timesteps, (batch,), generator, device)

    def training_target(self, x_start, x_t, t, noise) -> torch.Tensor:
        """What the network regresses for ``model_mean_type``: eps, x_0, v or mu_tilde: (B, ...)."""
        if self.model_mean_type == "eps":
            return noise
        if self.model_mean_type == "x_start":
            return x_start
        if self.model_mean_type == "v":
            return self.get_v(x_start, t, noise)
        return self.q_posterior_mean(x_start, x_t, t)

    def training_losses(
        self,
        model: Model,
        x_start: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
    ) -> dict:
        """Per-sample training losses for one batch (Algorithm 1).

        loss_type "simple": L_simple = ||target - model output||^2 averaged over dimensions (Ho et al. eq. (14)),
        where target is eps (the paper's choice), x_0, v or mu_tilde; with ``min_snr_gamma``, "loss" is "mse" times
        :meth:`min_snr_loss_weight`. "vlb": T * L_{t-1}, an unbiased estimate of
        sum_t L_{t-1} (the true bound less the constant L_T), in bits/dim. "hybrid": L_simple + T/1000 * L_{t-1}
        with the mean frozen in L_{t-1}, so the bound trains only the variance (Nichol & Dhariwal 2021, Sec. 3.1).

        x_start: (B, ...) finite, images in [-1, 1]; t: (B,) int64 in 0 ... T-1 or None (drawn uniformly);
        noise: like x_start or None. validate=False skips the data check (:func:`~ddpm_lite.training.train` checks
        its dataset once, and ``benchmarks/bench_validation.py`` measures what the check costs); a given t is
        always checked.
        Returns a dict of (B,) tensors: "loss", "mse" (if computed), "vlb" (if computed), and "t".
        """
        if validate:
            check_images(x_start, "x_start")
        if t is None:
            t = self.sample_timesteps(x_start.shape[0], x_start.device, generator)
            self._checked_t = (weakref.ref(t), t._version)  # in range by construction: no check, no GPU wait
        else:
            self._check_t(t, x_start)
        if noise is None:
            noise = randn_like(x_start, generator)
        x_t = self.q_sample(x_start, t, noise=noise, validate=False)
        terms = {"t": t}
        if self.loss_type == "vlb":
            terms["vlb"] = self.vb_terms_bpd(model, x_start, x_t, t)["output"]
            terms["loss"] = terms["vlb"] * self.num_timesteps
            return terms
        model_output = model(x_t, t).to(x_t.dtype)  # a bf16-autocast model's output is cast back
        mean_output, var_output = self.split_model_output(model_output, x_t)
        terms["mse"] = mean_flat((self.training_target(x_start, x_t, t, noise) - mean_output) ** 2)
        terms["loss"] = terms["mse"]
        if self.min_snr_gamma is not None:
            terms["loss"] = terms["mse"] * self.min_snr_loss_weight(t).to(terms["mse"].dtype)
        if self.loss_type == "hybrid":
            # The bound sees a frozen copy of the mean output: only the variance learns from it.
            frozen = torch.cat([mean_output.detach(), var_output], dim=1) if self.learns_sigma else mean_output.detach()
            terms["vlb"] = self.vb_terms_bpd(lambda *_: frozen, x_start, x_t, t)["output"]
            terms["loss"] = terms["loss"] + terms["vlb"] * self.num_timesteps / 1000.0
        return terms
