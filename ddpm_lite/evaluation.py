"""Evaluating a trained model: many samples in batches, the Fréchet distance on the digits, and bits/dim.

Quality is measured on held-out data, never on the training split:

* :func:`digits_frechet_distance`: the Fréchet distance (:mod:`ddpm_lite.metrics`) of N samples against the 360
  held-out digits, in the feature space of the book's digit classifier, with its floor: N real *training* digits
  scored the same way (no model can be expected to go below it at that N).
* :func:`bits_per_dim`: the variational bound L_T + sum L_{t-1} + L_0 in bits per dimension (Ho et al. eq. (5)),
  with the bound of a uniform distribution over the data's grey levels beside it, log2(data_bins): a model above
  that reference is broken or untrained.
* :func:`class_accuracy` (class-conditional digits models): samples of every class with classifier-free guidance,
  the share the book's digit classifier reads as the class asked for, and the FD of all of them with its floor.
* :func:`ode_bits_per_dim`: the same quantity with the exact likelihood of the probability-flow ODE in place of the
  bound's L_T + sum L_{t-1} (:mod:`ddpm_lite.likelihood`); the data's grey levels are handled exactly as in the
  bound, by the same decoder L_0.

Samples come from one default sampler (:data:`ddpm_lite.sampling.DEFAULT_SAMPLER` with
:func:`ddpm_lite.sampling.default_steps`), the one ``ddpm_lite.sample`` and ``ddpm-lite sample`` use.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import torch

from ._progress import progress_bar
from ._random import randn_like
from ._threads import Threads, num_threads
from .diffusion import GaussianDiffusion, Model
from .likelihood import DEFAULT_ODE_STEPS, Divergence, ode_log_likelihood
from .losses import mean_flat
from .sampling import sample

DIGITS_FD_MAX = 1437  # the floor compares as many real training digits as there are samples


def sample_batches(diffusion: GaussianDiffusion, model: Model, num: int, image_shape: tuple[int, ...], *,
                   batch_size: int = 256, generator: torch.Generator | None = None, device=None,
                   progress: bool = False, **sampler_options) -> Iterator[torch.Tensor]:
    """``num`` samples ``(n, *image_shape)`` in [-1, 1], float32 on the CPU, batch by batch (one batch in memory).

    sampler_options: as :func:`ddpm_lite.sample` (sampler, steps, eta, ...); the default sampler otherwise.
    progress: one bar per batch of the sampler's steps.
    """
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        x = sample(diffusion, model, (n, *image_shape), generator=generator, device=device, progress=progress,
                   **sampler_options)
        yield x.clamp(-1, 1).to(torch.float32).cpu()


def digits_frechet_distance(diffusion: GaussianDiffusion, model: Model, num: int = 1000, *, seed: int = 0,
                            batch_size: int = 500, device=None, progress: bool = False,
                            **sampler_options) -> dict:
    """FD of ``num`` samples of a digits model against the 360 held-out digits, and the floor at that ``num``.

    Returns {"fd", "floor", "num"}. 2 <= num <= 1437 (the floor draws as many training digits).
    """
    from .book.classifier import digits_fd, real_vs_real_floor

    if not 2 <= num <= DIGITS_FD_MAX:
        raise ValueError(f"num={num}: the Frechet distance needs 2 ... {DIGITS_FD_MAX} samples (the floor uses as "
                         "many training digits)")
    generator = torch.Generator(device or "cpu").manual_seed(seed)
    samples = torch.cat(list(sample_batches(diffusion, model, num, (1, 8, 8), batch_size=batch_size,
                                            generator=generator, device=device, progress=progress,
                                            **sampler_options)))
    return {"fd": digits_fd(samples), "floor": real_vs_real_floor(num, seed=seed), "num": num}


def sample_classes(diffusion: GaussianDiffusion, model_of_class: Callable[[int], Model], classes: Iterable[int],
                   num_per_class: int, image_shape: tuple[int, ...], **options) -> list[torch.Tensor]:
    """``num_per_class`` samples of each class c from ``model_of_class(c)`` (a guided model, e.g.
    ``lambda c: ClassifierFreeGuidance(model, c, w)``), class after class with one generator: a list of
    (num_per_class, C, H, W) tensors. options: as :func:`sample_batches`."""
    return [torch.cat(list(sample_batches(diffusion, model_of_class(c), num_per_class, image_shape, **options)))
            for c in classes]


def class_accuracy(diffusion: GaussianDiffusion, model: Model, num_per_class: int = 100, *, guidance: float = 0.0,
                   seed: int = 0, batch_size: int = 500, device=None, progress: bool = False,
                   **sampler_options) -> dict:
    """A class-conditional digits model, sampled ``num_per_class`` times for each of its classes with classifier-free
    guidance ``guidance`` (:class:`~ddpm_lite.guidance.ClassifierFreeGuidance`): the share of each class's samples
    that the book's digit classifier (trained on the training digits) reads as that class, and the Frechet distance
    of all samples against the 360 held-out digits with the floor at that n (:func:`digits_frechet_distance`'s).

    Returns {"accuracy": list of K shares, "fd", "floor", "num": all samples, "guidance"}.
    """
    from .book.classifier import classify_digits, digits_fd, real_vs_real_floor
    from .guidance import ClassifierFreeGuidance

    num_classes = getattr(model, "null_class", None)
    if num_classes is None:
        raise ValueError("class_accuracy needs a class-conditional model (a UNet with UNetConfig(num_classes=...))")
    total = num_per_class * num_classes
    if not 2 <= total <= DIGITS_FD_MAX:
        raise ValueError(f"{num_per_class} samples per class make {total}; the Frechet distance needs 2 ... "
                         f"{DIGITS_FD_MAX} samples in all")
    samples = sample_classes(diffusion, lambda c: ClassifierFreeGuidance(model, c, guidance), range(num_classes),
                             num_per_class, (1, 8, 8), batch_size=batch_size, device=device, progress=progress,
                             generator=torch.Generator(device or "cpu").manual_seed(seed), **sampler_options)
    accuracy = [(classify_digits(x)[0] == c).double().mean().item() for c, x in enumerate(samples)]
    return {"accuracy": accuracy, "fd": digits_fd(torch.cat(samples)), "floor": real_vs_real_floor(total, seed=seed),
            "num": total, "guidance": guidance}


def uniform_bits_per_dim(data_bins: int) -> float:
    """log2(data_bins): the bits/dim of the uniform distribution over the data's grey levels."""
    return math.log2(data_bins)


def bits_per_dim(diffusion: GaussianDiffusion, model: Model, images: torch.Tensor, *, batch_size: int = 500,
                 generator: torch.Generator | None = None, device=None, progress: bool = False,
                 threads: Threads = None) -> dict:
    """The variational bound in bits/dim on ``images`` (N, C, H, W) in [-1, 1] (use held-out images).

    threads: CPU threads for this call, as :func:`~ddpm_lite.set_threads` takes them, restored afterwards; None
    (default) leaves torch's setting alone. Returns {"bpd": the mean, "se": its standard error (NaN for one image),
    "num": N, "uniform": the reference :func:`uniform_bits_per_dim` of the diffusion's data_bins, "per_image": (N,)
    float64}. All T terms for every image: slow for T = 1000.
    """
    totals = []
    with num_threads(threads):
        for batch in progress_bar(list(images.split(batch_size)), desc="bits/dim", enabled=progress):
            terms = diffusion.calc_bpd_loop(model, batch.to(device), clip_denoised=True, generator=generator)
            totals.append(terms["total_bpd"].cpu())
    return _summary(torch.cat(totals), diffusion)


def _summary(totals: torch.Tensor, diffusion: GaussianDiffusion) -> dict:
    """{"bpd": mean, "se": standard error (NaN for one image), "num", "uniform", "per_image": (N,) float64} of
    per-image bits/dim (N,): per_image pairs two measures of the same images (their difference's standard error)."""
    totals = totals.double()
    se = totals.std().item() / len(totals) ** 0.5 if len(totals) > 1 else float("nan")
    return {"bpd": totals.mean().item(), "se": se, "num": len(totals),
            "uniform": uniform_bits_per_dim(diffusion.data_bins), "per_image": totals}


def ode_bits_per_dim(diffusion: GaussianDiffusion, model: Model, images: torch.Tensor, *,
                     steps: int = DEFAULT_ODE_STEPS, divergence_method: Divergence = "exact", probes: int = 1,
                     batch_size: int = 100, generator: torch.Generator | None = None, device=None,
                     progress: bool = False, threads: Threads = None) -> dict:
    """-log P(x_0) in bits/dim on ``images`` (N, C, H, W) in [-1, 1] with the probability-flow ODE's exact density
    of x_1 and the bound's decoder L_0 for the grey levels (use held-out images).

    For discrete data, -log P(x_0) <= E_{q(x_1 | x_0)}[-log p_theta(x_0 | x_1)] + KL(q(x_1 | x_0) || p(x_1)). The
    variational bound (:func:`bits_per_dim`) bounds the KL by L_T + sum_{t >= 2} L_{t-1}; here it is computed
    with the ODE's log p(x_1) (:func:`~ddpm_lite.likelihood.ode_log_likelihood`) on one draw x_1 ~ q(x_1 | x_0)
    per image: E_q[log q(x_1 | x_0) - log p_ODE(x_1)]. Both therefore share L_0 and its discretisation (Ho et al.
    eq. (13)) and differ only in that term. steps: Heun steps of the ODE (2 evaluations each, every one with the
    divergence: 2 steps D backward passes with the exact divergence, D = C H W); divergence_method, probes:
    :func:`~ddpm_lite.likelihood.divergence` ("hutchinson" for large images). Returns :func:`bits_per_dim`'s
    dict plus "decoder" and "kl", the means of the two parts in bits/dim, and "nfe".
    """
    totals, decoders, nfe = [], [], 0
    variance = 1 - diffusion.schedule.alphas_cumprod[0].item()  # of q(x_1 | x_0)
    with num_threads(threads):
        for batch in progress_bar(list(images.split(batch_size)), desc="ODE bits/dim", enabled=progress):
            x_start = batch.to(device)
            t = torch.zeros(len(x_start), dtype=torch.long, device=x_start.device)
            noise = randn_like(x_start, generator)
            x_1 = diffusion.q_sample(x_start, t, noise=noise)
            with torch.no_grad():
                decoder = diffusion.vb_terms_bpd(model, x_start, x_1, t, clip_denoised=True)["output"]  # L_0
            log_q = -0.5 * mean_flat(noise**2) - 0.5 * math.log(2 * math.pi * variance)  # per dimension, nats
            ode = ode_log_likelihood(diffusion, model, x_1, steps=steps, divergence_method=divergence_method,
                                     probes=probes, generator=generator)
            kl = log_q - ode["log_likelihood"].detach() / x_start[0].numel()
            totals.append((decoder + kl / math.log(2.0)).cpu())
            decoders.append(decoder.cpu())
            nfe = ode["nfe"] + 1
    result = _summary(torch.cat(totals), diffusion)
    decoder = torch.cat(decoders).double().mean().item()
    return {**result, "decoder": decoder, "kl": result["bpd"] - decoder, "nfe": nfe}
