"""Writes tests/library/data/samplers_reference.pt: every sampler's output on a fixed float64 problem, as the
samplers computed it when they were closure "steppers" (commit 7925715), before they became one function each behind
ddpm_lite.sampling.SAMPLERS. test_samplers.py::test_every_sampler_is_bit_identical_to_the_reference compares against
it; rerun this only for a change that is meant to alter samples, and say so in the commit.

    python tests/library/make_sampler_reference.py
"""
from pathlib import Path

import torch

from ddpm_lite import GaussianDiffusion, NoiseSchedule, sample

CASES = {  # label: keyword arguments of sample()
    "ddpm": {"sampler": "ddpm"},
    "ddpm 7 steps": {"sampler": "ddpm", "steps": 7},
    "ddim 7 steps": {"sampler": "ddim", "steps": 7},
    "ddim eta=0.5 7 steps": {"sampler": "ddim", "steps": 7, "eta": 0.5},
    "dpmpp_2m": {"sampler": "dpmpp_2m"},
    "dpmpp_2m logsnr": {"sampler": "dpmpp_2m", "spacing": "logsnr", "steps": 9},
    "dpmpp_2m_sde": {"sampler": "dpmpp_2m_sde", "steps": 9},
    "churn": {"sampler": "churn", "steps": 9},
    "churn s_churn=0": {"sampler": "churn", "steps": 9, "s_churn": 0.0},
    "ddpm unclipped": {"sampler": "ddpm", "steps": 7, "clip_denoised": False},
}


def model(x, t):
    """A fixed, nonlinear, t-dependent eps-predictor."""
    scale = 1 + t.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1)) / 50
    return torch.tanh(0.7 * x * scale) + 0.05 * x.roll(1, dims=-1)


def outputs() -> dict[str, torch.Tensor]:
    diffusion = GaussianDiffusion(NoiseSchedule.from_name("cosine", 50))
    results = {}
    for k, (label, kwargs) in enumerate(CASES.items()):
        generator = torch.Generator().manual_seed(k)
        noise = 1.3 * torch.randn(6, 1, 2, 2, generator=generator, dtype=torch.float64)
        results[label] = sample(diffusion, model, noise.shape, noise=noise, generator=generator, **kwargs)
    return results


if __name__ == "__main__":
    path = Path(__file__).parent / "data" / "samplers_reference.pt"
    torch.save(outputs(), path)
    print(f"wrote {path}")
