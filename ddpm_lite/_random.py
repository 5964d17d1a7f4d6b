"""Random draws from an injected ``generator``, for tensors on any device.

torch draws from a generator only on that generator's own device: ``torch.randn(shape, generator=g, device="cuda")``
with a CPU generator ``g`` raises. The chapters and tests seed CPU generators (``torch.Generator().manual_seed(k)``)
and pass them to samplers whose model may sit on a GPU, so every draw with a generator goes through here: drawn on
the generator's device, then moved. A seed then gives the same numbers on every device.
"""
from __future__ import annotations

import torch


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """N(0, I) noise of ``shape`` on ``device`` (default: the generator's, else torch's default), in ``dtype``."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device or generator.device)


def rand(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Uniform [0, 1) float32 of ``shape`` on ``device``, drawn as :func:`randn` draws."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device or generator.device)


def randint(low: int, high: int, shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Integers uniform in [low, high), int64, of ``shape`` on ``device``, drawn as :func:`randn` draws."""
    if generator is None:
        return torch.randint(low, high, shape, device=device)
    return torch.randint(low, high, shape, generator=generator, device=generator.device).to(device or generator.device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I) noise of x's shape, device and dtype, drawn as :func:`randn` draws."""
    return randn(x.shape, generator, x.device, x.dtype)


MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds (the trainer adds the process rank to its seed)
