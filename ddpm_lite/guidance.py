"""Guidance: sampling a class-conditional model towards its class (Ho & Salimans 2022).

Classifier-free guidance mixes the model's prediction for the class c with its prediction for the null class
(no class), both from one network trained with its labels dropped now and then:

    eps~(x_t, t) = (1 + w) eps_theta(x_t, t, c) - w eps_theta(x_t, t, null)        (Ho & Salimans 2022, eq. (6))

w = 0 is the conditional model, w = -1 the unconditional one, w > 0 pushes the samples towards what tells c apart.
:class:`ClassifierFreeGuidance` wraps the network as a ``model(x_t, t)``, so every sampler of
:mod:`ddpm_lite.sampling` takes it unchanged. Like the rest of the diffusion math, this module never imports the
network: a model is any callable ``model(x_t, t, y)``.
"""
from __future__ import annotations

from typing import Callable

import torch

ConditionalModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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

    def _labels(self, x_t: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(self.labels, device=x_t.device)
        if labels.ndim == 0:
            return labels.long().expand(x_t.shape[0])
        if labels.shape != (x_t.shape[0],):
            raise ValueError(f"labels has shape {tuple(labels.shape)}, but the batch has {x_t.shape[0]} samples; "
                             "give one label per sample, or one int for all")
        return labels.long()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels, w = self._labels(x_t), self.guidance
        null = torch.full_like(labels, self.null_class)
        if w == 0:
            return self.model(x_t, t, labels)
        if w == -1:
            return self.model(x_t, t, null)
        conditional, unconditional = self.model(x_t, t, labels), self.model(x_t, t, null)
        channels = x_t.shape[1]
        guided = (1 + w) * conditional[:, :channels] - w * unconditional[:, :channels]
        return torch.cat([guided, conditional[:, channels:]], dim=1)  # a learned variance: the conditional one
