"""Image reconstruction with an unconditional diffusion model: the first half of "reconstruction and generation".

A trained eps_theta knows what clean images look like at every noise level; these functions use it, unchanged, to
recover an image x_0 from an observation of it. Like :mod:`ddpm_lite.diffusion`, nothing here imports a network: a
model is any callable ``model(x_t, t)``, and every function takes the :class:`~ddpm_lite.diffusion.GaussianDiffusion`
it was trained with.

==========================  =====================================================  ================================
function                    observation                                            method
==========================  =====================================================  ================================
:func:`sdedit`              x_0 itself, or a rough/corrupted version of it         noise to step t with q(x_t|x_0),
                                                                                   run p_theta back (Meng et al. 2022)
:func:`denoise`             y = x_0 + sigma n, n ~ N(0, I)                         the step whose noise level is
                                                                                   sigma, then p_theta back
:func:`inpaint`             the pixels where ``mask`` is 1                         replacement (Song et al. 2021) or
                                                                                   RePaint (Lugmayr et al. 2022)
:func:`ddnm`                y = A x_0 for a known linear A (:class:`Inpainting`,   range/null-space projection of
                            :class:`SuperResolution`, :class:`Colorization`)       x0_hat (Wang et al. 2023)
:func:`ddim_invert`         x_0, to be encoded to x_T and decoded back             DDIM run backwards (Song et al.
                                                                                   2021, Sec. 4.3)
==========================  =====================================================  ================================

Time steps follow the package's convention: indices 0 ... T-1, index 0 the paper's t = 1. Each method runs its
reverse chain on ``steps`` evenly spaced indices from its start index down to 0 (respaced exactly as
:func:`~ddpm_lite.sampling.respace` does), so its cost is ``steps`` network evaluations (RePaint: more, see there).
Data may be images (B, C, H, W) or vectors (B, D); values in [-1, 1]. Randomness comes only from ``generator=``
and ``noise=``.

The classical baselines (:func:`classical_denoise`, :func:`classical_inpaint`, :func:`bicubic_upsample`) and the
quality measures (:func:`psnr`, :func:`ssim`) come from scikit-image and torch; scikit-image is imported only when
they are called (``pip install scikit-image``).
"""
from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from ._random import randn_like
from .diffusion import GaussianDiffusion, Model
from .images import check_images
from .sampling import SpacedModel, p_sample, respace, sample

Sampler = Literal["ddpm", "ddim"]  # the samplers of the reverse chains here (respaced, from any start index)
RECONSTRUCTION_SAMPLERS: tuple[str, ...] = get_args(Sampler)
InpaintMethod = Literal["replace", "repaint", "ddnm"]
INPAINT_METHODS: tuple[str, ...] = get_args(InpaintMethod)
ClassicalDenoiser = Literal["nl_means", "tv"]
CLASSICAL_DENOISERS: tuple[str, ...] = get_args(ClassicalDenoiser)

__all__ = [
    "Colorization",
    "INPAINT_METHODS",
    "Inpainting",
    "LinearOperator",
    "SuperResolution",
    "bicubic_upsample",
    "classical_denoise",
    "classical_inpaint",
    "ddim_decode",
    "ddim_invert",
    "ddnm",
    "denoise",
    "inpaint",
    "psnr",
    "repaint_schedule",
    "sdedit",
    "ssim",
    "timestep_for_sigma",
]


# ---------------------------------------------------------------------------------------------- checks
def _check_start(diffusion: GaussianDiffusion, t: int) -> int:
    T = diffusion.num_timesteps
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < T:
        raise ValueError(f"t must be an integer time index in 0 ... {T - 1} (T = {T}), got {t!r}")
    return t


def _check_steps(steps: int | None, start: int) -> int:
    """The number of reverse steps from index ``start`` down to 0: 1 ... start + 1 (None: all of them)."""
    if steps is None:
        return start + 1
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return min(steps, start + 1)


def _check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A mask of x's shape, or one that broadcasts to it (e.g. (1, H, W) or (H, W) for images), as 0/1 floats."""
    mask = torch.as_tensor(mask)
    try:
        expanded = mask.to(x.device, x.dtype).expand_as(x)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit the images {tuple(x.shape)}; give one of "
                         f"shape {tuple(x.shape[1:])} or {tuple(x.shape[-2:])} (1 = known pixel, 0 = missing)") from None
    if not ((expanded == 0) | (expanded == 1)).all():
        raise ValueError("mask values must be 0 (missing) or 1 (known)")
    return expanded


def _timesteps_until(start: int, steps: int) -> list[int]:
    """``steps`` evenly spaced indices from 0 to ``start``, both ends included (for steps = 1, just start)."""
    if steps == 1:
        return [start]
    return sorted({round(i * start / (steps - 1)) for i in range(steps)})


# ---------------------------------------------------------------------------------------------- the reverse chain
def _reverse_from(
    diffusion: GaussianDiffusion, model: Model, x_t: torch.Tensor, start: int, steps: int, *,
    sampler: Sampler, eta: float, clip_denoised: bool, generator: torch.Generator | None,
) -> torch.Tensor:
    """Run p_theta from x_t at index ``start`` down to x_0 in ``steps`` respaced steps -> (B, ...)."""
    if sampler not in RECONSTRUCTION_SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {RECONSTRUCTION_SAMPLERS}")
    timesteps = _timesteps_until(start, steps)
    spaced = respace(diffusion, timesteps)  # its top index len - 1 is `start`
    return sample(spaced, SpacedModel(model, torch.as_tensor(timesteps)), tuple(x_t.shape), noise=x_t,
                  sampler=sampler, steps=len(timesteps), clip_denoised=clip_denoised, generator=generator,
                  **_eta_option(sampler, eta))


def _eta_option(sampler: Sampler, eta: float) -> dict:
    """DDIM's eta as a sampler option ({} for "ddpm" at the default 0; any other eta with "ddpm" is refused by
    :func:`~ddpm_lite.sample`, which names the fix)."""
    return {} if sampler != "ddim" and eta == 0 else {"eta": eta}


def sdedit(
    diffusion: GaussianDiffusion, model: Model, x_guide: torch.Tensor, t: int, *, steps: int | None = None,
    sampler: Sampler = "ddpm", eta: float = 0.0, clip_denoised: bool = True,
    noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): noise x_guide to index t with q(x_t | x_0) (Ho et al. eq. (4)), then denoise.

    With a clean image as the guide this is reconstruction from a noise level: small t returns the image, large t
    keeps only its coarse shape and at t = T-1 draws a new sample. With a rough sketch or a corrupted image as the
    guide it returns a sample of the model that keeps the guide's coarse shape, so t trades faithfulness to the guide
    for the model's realism (whether that helps a given guide is measured, not promised: the reconstruction chapter
    finds no gain on its rough digits).

    x_guide: (B, ...) in [-1, 1]; t: one index 0 ... T-1 for the whole batch; steps: reverse steps (default t + 1,
    every step); noise: (B, ...) the eps of q(x_t | x_0). Returns x_0: (B, ...).
    """
    check_images(x_guide, "x_guide")
    start = _check_start(diffusion, t)
    index = torch.full((x_guide.shape[0],), start, dtype=torch.long, device=x_guide.device)
    if noise is None:
        noise = randn_like(x_guide, generator)
    x_t = diffusion.q_sample(x_guide, index, noise=noise)
    return _reverse_from(diffusion, model, x_t, start, _check_steps(steps, start), sampler=sampler, eta=eta,
                         clip_denoised=clip_denoised, generator=generator)


# ---------------------------------------------------------------------------------------------- denoising
def timestep_for_sigma(diffusion: GaussianDiffusion, sigma: float) -> int:
    """The smallest index t whose noise level sigma_t is at least ``sigma``.

    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) is ``diffusion.schedule.noise_level``: x_t / sqrt(alpha_bar_t) =
    x_0 + sigma_t eps (eq. (4) divided by sqrt(alpha_bar_t)), additive Gaussian noise of standard deviation sigma_t.

    Raises ValueError for sigma <= 0 or sigma above sigma_{T-1}.
    """
    levels = diffusion.schedule.noise_level  # (T,) float64, rising
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number (the noise's standard deviation on the [-1, 1] scale), "
                         f"got {sigma!r}")
    if sigma > levels[-1]:
        raise ValueError(f"sigma = {sigma:g} is above the largest noise level of this model, {float(levels[-1]):.4g}")
    return int(torch.searchsorted(levels, torch.tensor(float(sigma), dtype=torch.float64)))


def denoise(
    diffusion: GaussianDiffusion, model: Model, y: torch.Tensor, sigma: float, *, steps: int | None = None,
    sampler: Sampler = "ddpm", eta: float = 0.0, clip_denoised: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Remove Gaussian noise of known standard deviation: y = x_0 + sigma n, n ~ N(0, I) -> an estimate of x_0.

    The forward process at index t is x_t = sqrt(alpha_bar_t) (x_0 + sigma_t eps) (:func:`timestep_for_sigma`). Take the
    smallest t with sigma_t >= sigma, add independent noise of variance sigma_t^2 - sigma^2 to y (so that y' = x_0 +
    sigma_t n' exactly in distribution), scale: x_t = sqrt(alpha_bar_t) y' is a draw of q(x_t | x_0). Then run the
    reverse process from t. y may leave [-1, 1] by the noise; it is not clipped. y: (B, ...) -> (B, ...).
    """
    if not isinstance(y, torch.Tensor) or not torch.isfinite(y).all():
        raise ValueError("y must be a finite tensor of shape (B, C, H, W) or (B, D)")
    x_t, start = noisy_to_x_t(diffusion, y, sigma, generator=generator)
    return _reverse_from(diffusion, model, x_t, start, _check_steps(steps, start), sampler=sampler, eta=eta,
                         clip_denoised=clip_denoised, generator=generator)


def noisy_to_x_t(
    diffusion: GaussianDiffusion, y: torch.Tensor, sigma: float, *, extra_noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """(x_t, t) with x_t = sqrt(alpha_bar_t) (y + sqrt(sigma_t^2 - sigma^2) n), t = :func:`timestep_for_sigma`.

    If y = x_0 + sigma n, then x_t ~ q(x_t | x_0) exactly (Ho et al. eq. (4)). extra_noise: n, (B, ...).
    """
    t = timestep_for_sigma(diffusion, sigma)
    sigma_t = float(diffusion.schedule.noise_level[t])
    alpha_bar = float(diffusion.schedule.alphas_cumprod[t])
    if extra_noise is None:
        extra_noise = randn_like(y, generator)
    top_up = math.sqrt(max(sigma_t**2 - float(sigma) ** 2, 0.0))
    return math.sqrt(alpha_bar) * (y + top_up * extra_noise), t


# ---------------------------------------------------------------------------------------------- inpainting
def repaint_schedule(steps: int, jump: int = 1, resample: int = 1) -> list[int]:
    """RePaint's walk over the respaced indices (Lugmayr et al. 2022, Sec. 4.2): a list of levels.

    The walk starts at level ``steps - 1`` and ends at level -1 (x_0). A move from level i to i - 1 is a reverse
    step; a move from i - 1 to i is a forward step q(x_i | x_{i-1}). After every ``jump`` reverse steps (above the
    last block) it goes ``jump`` levels back up, ``resample - 1`` times, so that the known and the generated parts
    are harmonised again; resample = 1 is the plain chain (the replacement method).
    Network evaluations: one per reverse step, len(list) - 1 - (forward steps).
    """
    for name, value in (("steps", steps), ("jump", jump), ("resample", resample)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    jumps_left = {level: resample - 1 for level in range(0, steps - jump, jump)}
    level, walk = steps - 1, [steps - 1]
    while level >= 0:
        level -= 1
        walk.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            for _ in range(jump):
                level += 1
                walk.append(level)
    return walk


def inpaint(
    diffusion: GaussianDiffusion, model: Model, x_known: torch.Tensor, mask: torch.Tensor, *,
    method: InpaintMethod = "repaint", steps: int | None = None, jump: int = 10, resample: int = 5,
    clip_denoised: bool = True, noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill the pixels where ``mask`` is 0 with an unconditional model; the pixels where it is 1 are x_known's.

    - ``"replace"`` (Song et al. 2021, App. I): walk the reverse chain; after each step set the known pixels of
      x_{t-1} to a fresh draw of q(x_{t-1} | x_known). It never lets the generated part condition the noise of the
      known part, so its conditional is biased (the book's Gaussian example measures by how much).
    - ``"repaint"``: the same, with RePaint's resampling (:func:`repaint_schedule`: ``jump``, ``resample``).
    - ``"ddnm"``: the projection method of :func:`ddnm` with :class:`Inpainting`.

    The returned known pixels equal x_known's exactly (the last step sets them). x_known: (B, ...) in [-1, 1]
    (values under mask 0 are ignored); mask: x_known's shape or broadcastable to it, 1 = known.
    steps: respaced reverse steps (default T); noise: x_T. Returns x_0: (B, ...).
    """
    if method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; use one of {INPAINT_METHODS}")
    check_images(x_known, "x_known")
    mask = _check_mask(mask, x_known)
    if method == "ddnm":
        return ddnm(diffusion, model, x_known * mask, Inpainting(mask), steps=steps, clip_denoised=clip_denoised,
                    noise=noise, generator=generator)
    T = diffusion.num_timesteps
    steps = _check_steps(steps, T - 1)
    walk = repaint_schedule(steps, jump=min(jump, steps), resample=resample if method == "repaint" else 1)
    timesteps = _timesteps_until(T - 1, steps)
    spaced, spaced_model = respace(diffusion, timesteps), SpacedModel(model, torch.as_tensor(timesteps))
    x = noise if noise is not None else randn_like(x_known, generator)  # x_T
    batch = x.shape[0]

    def level(i: int) -> torch.Tensor:
        return torch.full((batch,), i, dtype=torch.long, device=x.device)

    for here, there in zip(walk[:-1], walk[1:]):
        if there > here:  # one forward step, q(x_i | x_{i-1}) (Ho et al. eq. (2))
            x = spaced.q_sample_step(x, level(there), noise=randn_like(x, generator))
            continue
        with torch.no_grad():
            x = p_sample(spaced, spaced_model, x, level(here), clip_denoised=clip_denoised, generator=generator)["sample"]
        known = x_known if there < 0 else spaced.q_sample(x_known, level(there), noise=randn_like(x, generator))
        x = mask * known + (1 - mask) * x
    return x


# ---------------------------------------------------------------------------------------------- linear inverse problems
class LinearOperator:
    """A known degradation y = A x with a pseudo-inverse A^+ such that A A^+ y = y (DDNM's requirement).

    Subclasses define :meth:`A` and :meth:`A_pinv`; :meth:`project` is DDNM's range/null-space decomposition.
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (the paper's name)
        raise NotImplementedError

    def A_pinv(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError

    def project(self, x_start: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Wang et al. 2023, eq. (7): x = A^+ y + (I - A^+ A) x_start, which satisfies A x = y exactly."""
        return self.A_pinv(y) + x_start - self.A_pinv(self.A(x_start))


class Inpainting(LinearOperator):
    """A x = mask * x (mask 1 = known). A^+ = A: the known pixels pass, the missing ones are zero."""

    def __init__(self, mask: torch.Tensor):
        self.mask = torch.as_tensor(mask)

    def A(self, x):  # noqa: N802
        return self.mask.to(x) * x

    def A_pinv(self, y):  # noqa: N802
        return self.mask.to(y) * y

    def project(self, x_start, y):
        """The same projection written as a selection, so that the known pixels are y's bit for bit."""
        mask = self.mask.to(x_start)
        return mask * y + (1 - mask) * x_start


class SuperResolution(LinearOperator):
    """A = average pooling by ``scale`` (B, C, H, W) -> (B, C, H/scale, W/scale); A^+ = nearest upsampling.

    avg_pool(nearest_up(y)) = y, so A A^+ = I; A^+ is the Moore-Penrose inverse of A (A^T (A A^T)^-1).
    """

    def __init__(self, scale: int):
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = scale

    def A(self, x):  # noqa: N802
        if x.shape[-1] % self.scale or x.shape[-2] % self.scale:
            raise ValueError(f"scale {self.scale} does not divide the image size {tuple(x.shape[-2:])}")
        return F.avg_pool2d(x, self.scale)

    def A_pinv(self, y):  # noqa: N802
        return y.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)


class Colorization(LinearOperator):
    """A = the mean of the 3 colour channels (B, 3, H, W) -> (B, 1, H, W); A^+ copies the grey value to all 3."""

    def A(self, x):  # noqa: N802
        if x.shape[1] != 3:
            raise ValueError(f"colourisation needs 3-channel images, got {x.shape[1]} channel(s)")
        return x.mean(dim=1, keepdim=True)

    def A_pinv(self, y):  # noqa: N802
        return y.expand(-1, 3, *y.shape[2:])


class _ProjectedModel:
    """A model whose x_0 prediction is replaced by ``operator.project(x0_hat, y)`` (DDNM, Wang et al. 2023, eq. (13)).

    It returns the model output (eps, x_0 or v, whatever the diffusion expects) that corresponds to the projected
    x_0, so the package's unchanged samplers take the DDNM step.
    """

    def __init__(self, diffusion: GaussianDiffusion, model: Model, operator: LinearOperator, y: torch.Tensor,
                 clip_denoised: bool):
        if diffusion.learns_sigma or diffusion.model_mean_type == "mu":
            raise ValueError("ddnm needs a model that predicts eps, x_start or v with a fixed variance")
        self.diffusion, self.model, self.operator, self.y, self.clip = diffusion, model, operator, y, clip_denoised

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        d = self.diffusion
        x_start = self.operator.project(d.p_mean_variance(self.model, x_t, t, clip_denoised=self.clip)["pred_x_start"], self.y)
        if d.model_mean_type == "x_start":
            return x_start
        eps = d.predict_eps_from_x_start(x_t, t, x_start)
        return eps if d.model_mean_type == "eps" else d.get_v(x_start, t, eps)


def ddnm(
    diffusion: GaussianDiffusion, model: Model, y: torch.Tensor, operator: LinearOperator, *,
    steps: int | None = None, sampler: Sampler = "ddpm", eta: float = 0.0, clip_denoised: bool = True,
    noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Solve y = A x_0 for x_0 with the range/null-space method of DDNM (Wang et al. 2023, Algorithm 1).

    At every reverse step the model's x0_hat is replaced by A^+ y + (I - A^+ A) x0_hat: its range-space part is
    fixed by the observation, its null-space part comes from the model. The projection can push a pixel out of
    [-1, 1]; a few alternating projections onto {x : A x = y} and onto the box [-1, 1] (both convex, and they meet
    when y comes from an image) end with A x_0 = y to float precision and x_0 in [-1, 1] to within 1e-4 (or after
    200 rounds). With noisy y it satisfies the noisy equation; see :func:`denoise` for the pure-noise case.

    y: (B, ...) = operator.A(x_0), in [-1, 1]; steps: respaced reverse steps (default T); noise: x_T: the shape of
    operator.A_pinv(y). Returns x_0: (B, ...).
    """
    check_images(y, "y")
    shape = operator.A_pinv(y).shape
    T = diffusion.num_timesteps
    steps = _check_steps(steps, T - 1)
    timesteps = _timesteps_until(T - 1, steps)
    spaced = respace(diffusion, timesteps)
    projected = _ProjectedModel(spaced, SpacedModel(model, torch.as_tensor(timesteps)), operator, y, clip_denoised)
    x_0 = sample(spaced, projected, tuple(shape), noise=noise, sampler=sampler, steps=len(timesteps),
                 clip_denoised=clip_denoised, generator=generator, device=y.device, **_eta_option(sampler, eta))
    return _consistent_in_range(operator, x_0, y)


def _consistent_in_range(operator: LinearOperator, x: torch.Tensor, y: torch.Tensor, rounds: int = 200) -> torch.Tensor:
    """Alternate projections onto {A x = y} and [-1, 1] (von Neumann), ending on the first: A x = y exactly."""
    x = operator.project(x, y)
    for _ in range(rounds):
        if x.abs().max() <= 1 + 1e-4:
            break
        x = operator.project(x.clamp(-1, 1), y)
    return x


# ---------------------------------------------------------------------------------------------- DDIM inversion
@torch.no_grad()
def ddim_invert(
    diffusion: GaussianDiffusion, model: Model, x_start: torch.Tensor, steps: int, t_end: int | None = None
) -> torch.Tensor:
    """Encode x_0 into x_{t_end} by running deterministic DDIM (eta = 0) backwards (Song et al. 2021, Sec. 4.3).

    On K evenly spaced indices tau_1 < ... < tau_K = t_end (default T-1):

        x_{tau_{i+1}} = sqrt(alpha_bar_{tau_{i+1}}) x0_hat + sqrt(1 - alpha_bar_{tau_{i+1}}) eps_theta(x_{tau_i}, tau_i),

    with x0_hat computed from the same eps (eq. (13) read from right to left). The only approximation is
    eps_theta(x_{tau_i}, tau_i) in place of eps_theta(x_{tau_{i+1}}, tau_{i+1}), so the error shrinks as K grows.
    :func:`ddim_decode` with the same t_end and K maps back. No clipping: it would make the map non-invertible.
    Where alpha_bar_{t_end} is tiny (the cosine schedule's last steps: 2e-9 at T-1) the latent keeps x_0 only
    in its last digits and decoding divides by sqrt(alpha_bar): stop earlier (t_end = 900 keeps alpha_bar = 0.02).
    x_start: (B, ...) -> x_{t_end}: (B, ...).
    """
    check_images(x_start, "x_start")
    t_end = diffusion.num_timesteps - 1 if t_end is None else _check_start(diffusion, t_end)
    timesteps = _timesteps_until(t_end, _check_steps(steps, t_end))
    alphas_cumprod = diffusion.schedule.alphas_cumprod
    x = x_start
    previous = timesteps[0]  # eps at the first level is read at tau_1 from x_0 itself
    for current in timesteps:
        t = torch.full((x.shape[0],), previous, dtype=torch.long, device=x.device)
        out = diffusion.p_mean_variance(model, x, t, clip_denoised=False)
        alpha_bar = float(alphas_cumprod[current])
        x = math.sqrt(alpha_bar) * out["pred_x_start"] + math.sqrt(1 - alpha_bar) * out["pred_eps"]
        previous = current
    return x


def ddim_decode(
    diffusion: GaussianDiffusion, model: Model, x_t: torch.Tensor, steps: int, t_end: int | None = None
) -> torch.Tensor:
    """The inverse of :func:`ddim_invert`: deterministic DDIM (eta = 0, no clipping) from x_{t_end} down to x_0,
    on the same K indices. x_t: (B, ...) -> x_0: (B, ...)."""
    t_end = diffusion.num_timesteps - 1 if t_end is None else _check_start(diffusion, t_end)
    return _reverse_from(diffusion, model, x_t, t_end, _check_steps(steps, t_end), sampler="ddim", eta=0.0,
                         clip_denoised=False, generator=None)


# ---------------------------------------------------------------------------------------------- quality and baselines
def psnr(x: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for images in [-1, 1] (peak-to-peak 2): (B, ...) -> (B,) float64.

    scikit-image's ``peak_signal_noise_ratio(data_range=2)`` per image; with ``mask`` only the pixels where it is 1
    count (the same formula, 10 log10(2^2 / MSE), over those pixels).
    """
    metrics = _skimage("metrics")

    x, reference = _numpy_pair(x, reference)
    if mask is None:
        values = [metrics.peak_signal_noise_ratio(r, a, data_range=2.0) for a, r in zip(x, reference)]
    else:
        m = _check_mask(mask, torch.as_tensor(x)).numpy().astype(bool)
        values = [10 * math.log10(4.0 / max(metrics.mean_squared_error(r[k], a[k]), 1e-20))
                  for a, r, k in zip(x, reference, m)]
    return torch.tensor(values, dtype=torch.float64)


def ssim(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of images (B, C, H, W) in [-1, 1] -> (B,) float64.

    scikit-image's ``structural_similarity(data_range=2)``; the window is 7 pixels wide, or 3 for images smaller
    than 14 pixels (8x8 digits), so that it fits more than a few positions.
    """
    structural_similarity = _skimage("metrics").structural_similarity
    x, reference = _numpy_pair(x, reference)
    if x.ndim != 4:
        raise ValueError(f"ssim needs images (B, C, H, W), got shape {x.shape}")
    win = 7 if min(x.shape[-2:]) >= 14 else 3
    values = [structural_similarity(r, a, data_range=2.0, channel_axis=0, win_size=win) for a, r in zip(x, reference)]
    return torch.tensor(values, dtype=torch.float64)


def _skimage(module: str):
    """scikit-image's ``skimage.<module>``, or an ImportError naming the install command."""
    import importlib

    try:
        return importlib.import_module(f"skimage.{module}")
    except ImportError:
        raise ImportError("PSNR, SSIM and the classical baselines need scikit-image: pip install scikit-image "
                          "(or pip install 'ddpm_lite[recon]')") from None


def _numpy_pair(x: torch.Tensor, reference: torch.Tensor):
    x, reference = torch.as_tensor(x), torch.as_tensor(reference)
    if x.shape != reference.shape:
        raise ValueError(f"x {tuple(x.shape)} and reference {tuple(reference.shape)} must have the same shape")
    return x.detach().cpu().double().numpy(), reference.detach().cpu().double().numpy()


def classical_denoise(y: torch.Tensor, sigma: float, method: ClassicalDenoiser = "nl_means") -> torch.Tensor:
    """A classical denoiser from scikit-image for images (B, C, H, W) with noise of std ``sigma`` (on [-1, 1]).

    ``"nl_means"``: non-local means (Buades et al. 2005) with the scikit-image documentation's ``h = 0.8 sigma``,
    3x3 patches; ``"tv"``: total-variation denoising (Chambolle 2004) with ``weight = 0.25 sigma`` (the best of
    0.1 ... 1 sigma on 200 training digits at sigma = 0.1, 0.3, 0.5). Each channel is denoised on its own, then
    clipped to [-1, 1]. Nothing was tuned on the held-out digits.
    Returns (B, C, H, W) float32.
    """
    restoration = _skimage("restoration")
    if method not in CLASSICAL_DENOISERS:
        raise ValueError(f"unknown classical denoiser {method!r}; use one of {CLASSICAL_DENOISERS}")
    if method == "nl_means":
        def one(plane):
            return restoration.denoise_nl_means(plane, h=0.8 * sigma, sigma=sigma, patch_size=3, patch_distance=3, fast_mode=False)
    else:
        def one(plane):
            return restoration.denoise_tv_chambolle(plane, weight=0.25 * sigma)
    planes = y.detach().cpu().double().reshape(-1, *y.shape[-2:]).numpy()  # (B C, H, W)
    return torch.stack([torch.as_tensor(one(plane)) for plane in planes]).reshape(y.shape).float().clamp(-1, 1)


def classical_inpaint(x_known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Biharmonic inpainting (Damelin & Hoang 2018, scikit-image's ``inpaint_biharmonic``) of the pixels where mask
    is 0: images (B, C, H, W) -> (B, C, H, W) float32; known pixels are kept exactly."""
    import numpy as np

    inpaint_biharmonic = _skimage("restoration").inpaint_biharmonic
    mask = _check_mask(mask, x_known)
    images, known = x_known.detach().cpu().double().numpy(), mask.cpu().numpy().astype(bool)
    # scikit-image takes one (H, W) mask per image: a pixel is filled where any channel is missing
    out = [inpaint_biharmonic(image, ~k.all(axis=0), channel_axis=0) for image, k in zip(images, known)]
    result = torch.as_tensor(np.stack(out), dtype=torch.float32).reshape(x_known.shape)
    return mask.cpu() * x_known.cpu() + (1 - mask.cpu()) * result


def bicubic_upsample(y: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling (torch, ``align_corners=False``) by ``scale``, clipped to [-1, 1]: (B, C, h, w) ->
    (B, C, h scale, w scale)."""
    return F.interpolate(y, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)
