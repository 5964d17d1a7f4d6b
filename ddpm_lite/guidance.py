"""Guidance: sampling a class-conditional model towards its class (Ho & Salimans 2022).

Classifier-free guidance mixes the model's prediction for the class c with its prediction for the null class
(no class), both from one network trained with its labels dropped now and then:

    eps~(x_t, t) = (1 + w) eps_theta(x_t, t, c) - w eps_theta(x_t, t, null)        (Ho & Salimans 2022, eq. (6))

w = 0 is the conditional model, w = -1 the unconditional one, w > 0 pushes the samples towards what tells c apart.
Classifier guidance (Dhariwal & Nichol 2021) instead steers an unconditional model with the gradient of a
noise-aware classifier p_phi(y | x_t, t) (:mod:`ddpm_lite.classifier`):

    eps^(x_t, t) = eps_theta(x_t, t) - s sqrt(1 - alpha_bar_t) grad_{x_t} log p_phi(y | x_t, t)
                                                                     (Dhariwal & Nichol 2021, Sec. 4.2, eq. (14))

With s = 1 and the exact p(y | x_t) this is exactly the conditional model's eps: Bayes' rule, grad log p(x_t | y)
= grad log p(x_t) + grad log p(y | x_t). Both are wrapped as a ``model(x_t, t)`` (:class:`ClassifierFreeGuidance`,
:class:`ClassifierGuidance`), so every sampler of :mod:`ddpm_lite.sampling` takes them unchanged. Like the rest of
the diffusion math, this module never imports a network: a model is any callable ``model(x_t, t[, y])``, a
classifier any callable ``classifier(x_t, t) -> logits (B, K)``.
"""
from __future__ import annotations

from typing import Callable

import torch

from .diffusion import GaussianDiffusion, Model

ConditionalModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _batch_labels(labels: int | torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """One label per sample of x_t: an int is repeated, a (B,) tensor checked. (B,) int64 on x_t's device."""
    labels = torch.as_tensor(labels, device=x_t.device)
    if labels.ndim == 0:
        return labels.long().expand(x_t.shape[0])
    if labels.shape != (x_t.shape[0],):
        raise ValueError(f"labels has shape {tuple(labels.shape)}, but the batch has {x_t.shape[0]} samples; "
                         "give one label per sample, or one int for all")
    return labels.long()


class ClassifierFreeGuidance:
    """model(x_t, t, y) guided towards ``labels`` with weight ``guidance``: call it like a model, (x_t, t) -> output.

    labels: one class for every sample (an int) or (B,) labels; guidance: w, a finite number >= -1; null_class: the
    label of "no class" (default: ``model.null_class``, as :class:`~ddpm_lite.UNet` has it). The outputs are mixed
    whatever the model predicts (eps, x_0 or v: each is affine in eps with the same coefficients, and the weights
    sum to 1); a learned variance (2C output channels for C input channels) is the conditional model's. At w = 0
    and w = -1 only one of the two is evaluated, so they are exactly the conditional and the unconditional model.
    """

    def __init__(self, model: ConditionalModel, labels: int | torch.Tensor, guidance: float,
                 null_class: int | None = None):
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not -1 <= guidance < float("inf"):
            raise ValueError(f"guidance must be a finite number >= -1 (0: the conditional model, -1: the "
                             f"unconditional one), got {guidance!r}")
        null_class = getattr(model, "null_class", None) if null_class is None else null_class
        if null_class is None:
            raise ValueError("classifier-free guidance needs a class-conditional model with a null class (a UNet "
                             "with UNetConfig(num_classes=...)), or null_class= for a model of your own")
        self.model, self.labels, self.guidance, self.null_class = model, labels, float(guidance), null_class

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels, w = _batch_labels(self.labels, x_t), self.guidance
        null = torch.full_like(labels, self.null_class)
        if w == 0:
            return self.model(x_t, t, labels)
        if w == -1:
            return self.model(x_t, t, null)
        conditional, unconditional = self.model(x_t, t, labels), self.model(x_t, t, null)
        channels = x_t.shape[1]
        guided = (1 + w) * conditional[:, :channels] - w * unconditional[:, :channels]
        return torch.cat([guided, conditional[:, channels:]], dim=1)  # a learned variance: the conditional one


class ClassifierGuidance:
    """An unconditional model steered towards ``labels`` by a noise-aware classifier, with scale ``scale``: call it
    like a model, (x_t, t) -> output (Dhariwal & Nichol 2021, eq. (14); see the module docstring).

    diffusion: the model's (its alpha_bar_t, and what the model predicts: the eps shift is converted to x_0 or v
    where needed); classifier(x_t, t) -> logits (B, K); labels: an int for every sample or (B,); scale: s >= 0
    (0 is the unconditional model). Each call costs one model evaluation and one classifier gradient.
    """

    def __init__(self, diffusion: GaussianDiffusion, model: Model, classifier: Callable, labels: int | torch.Tensor,
                 scale: float):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < float("inf"):
            raise ValueError(f"scale must be a finite number >= 0 (0: the unconditional model), got {scale!r}")
        self.diffusion, self.model, self.classifier, self.labels, self.scale = (
            diffusion, model, classifier, labels, float(scale))

    def log_prob_gradient(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_{x_t} log p_phi(y | x_t, t) for every sample: (B, ...)."""
        labels = _batch_labels(self.labels, x_t)
        with torch.enable_grad():  # the samplers run under no_grad
            x = x_t.detach().requires_grad_(True)
            log_probs = torch.log_softmax(self.classifier(x, t), dim=1)
            picked = log_probs.gather(1, labels[:, None]).sum()
            return torch.autograd.grad(picked, x)[0]

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        output = self.model(x_t, t)
        if self.scale == 0:
            return output
        d = self.diffusion
        shift = -self.scale * d._c("sqrt_one_minus_alphas_cumprod", t, x_t) * self.log_prob_gradient(x_t, t)  # of eps
        # the same shift in what the model predicts, at fixed x_t: x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a) and
        # v = (eps - sqrt(1 - a) x_t) / sqrt(a), so d x_0 = -sqrt((1 - a) / a) d eps and d v = d eps / sqrt(a)
        alpha_bar = d._c("alphas_cumprod", t, x_t)
        factor = {"eps": 1.0, "x_start": -((1 - alpha_bar) / alpha_bar).sqrt(), "v": 1 / alpha_bar.sqrt()}.get(
            d.model_mean_type)
        if factor is None:
            raise ValueError(f"classifier guidance shifts eps, x_0 or v; this diffusion's model predicts "
                             f"{d.model_mean_type!r}")
        channels = x_t.shape[1]
        guided = output[:, :channels] + factor * shift.to(output.dtype)
        return torch.cat([guided, output[:, channels:]], dim=1)  # a learned variance is left as it is
