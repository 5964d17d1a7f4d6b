"""Schedules: exact float64 identities (CONVENTIONS.md, "Tests of mathematics", 1)."""
import math

import pytest
import torch
from torch.testing import assert_close

from ddpm_lite import NoiseSchedule, cosine_beta_schedule, get_beta_schedule, linear_beta_schedule
from ddpm_lite.schedules import extract


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_alpha_bar_is_the_product_of_alphas(name):
    s = NoiseSchedule.from_name(name, 1000)
    assert s.betas.dtype == torch.float64
    # \bar\alpha_t = \prod_{s<=t} (1 - \beta_s), computed here by an independent loop
    expected = torch.empty(1000, dtype=torch.float64)
    running = 1.0
    for i, beta in enumerate(s.betas.tolist()):
        running *= 1.0 - beta
        expected[i] = running
    assert_close(s.alphas_cumprod, expected, rtol=1e-12, atol=0)
    assert_close(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1], rtol=0, atol=0)
    assert s.alphas_cumprod_prev[0] == 1.0
    assert_close(s.snr, s.alphas_cumprod / (1 - s.alphas_cumprod), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_noise_level_is_the_noise_of_the_rescaled_x_t(name, float64):
    """x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps: sigma_t^2 alpha_bar_t = 1 - alpha_bar_t, and it is
    sqrt(1 / alpha_bar_t - 1) of the x_0 prediction up to that formula's cancellation at small t."""
    s = NoiseSchedule.from_name(name, 1000)
    assert_close(s.noise_level**2 * s.alphas_cumprod, 1 - s.alphas_cumprod, rtol=1e-14, atol=0)
    assert_close(s.noise_level, s.sqrt_recipm1_alphas_cumprod, rtol=1e-11, atol=0)
    assert bool((s.noise_level[1:] > s.noise_level[:-1]).all())


def test_linear_schedule_matches_the_paper():
    betas = linear_beta_schedule(1000)
    assert betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    assert bool((betas[1:] > betas[:-1]).all())


def test_cosine_schedule_matches_its_alpha_bar_formula():
    T, s = 1000, 0.008
    betas = cosine_beta_schedule(T)
    alpha_bar = torch.cumprod(1 - betas, 0)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # Nichol & Dhariwal eq. (17)
    for t in [1, 10, 500, 900]:  # away from the clipped end
        assert alpha_bar[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-10)
    assert betas.max().item() <= 0.999


def test_posterior_variance_formula():
    s = NoiseSchedule.from_name("linear", 100)
    expected = s.betas * (1 - s.alphas_cumprod_prev) / (1 - s.alphas_cumprod)
    assert_close(s.posterior_variance, expected, rtol=0, atol=0)
    assert s.posterior_variance[0] == 0.0  # \tilde\beta_1 = 0: x_0 is known given x_1 and x_0
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]
    assert torch.isfinite(s.posterior_log_variance_clipped).all()


@pytest.mark.parametrize("bad", ["quadratic", "Linear", ""])
def test_unknown_schedule_names_the_options(bad):
    with pytest.raises(ValueError, match="linear.*cosine"):
        get_beta_schedule(bad)


@pytest.mark.parametrize("betas", [[0.1, 0.0], [0.1, 1.0], [[0.1, 0.2]], [], [0.1, -0.2], [0.1, float("nan")]])
def test_invalid_betas_are_rejected(betas):
    with pytest.raises(ValueError, match="beta"):
        NoiseSchedule.from_betas(betas)


def test_invalid_num_timesteps():
    with pytest.raises(ValueError, match="num_timesteps"):
        linear_beta_schedule(0)


@pytest.mark.parametrize("shape", [(3, 2), (3, 1, 8, 8), (3, 4)])
def test_extract_broadcasts_to_any_data_shape(shape):
    s = NoiseSchedule.from_name("linear", 10)
    x = torch.zeros(shape, dtype=torch.float32)
    t = torch.tensor([0, 4, 9])
    out = extract(s.betas, t, x)
    assert out.shape == (3,) + (1,) * (len(shape) - 1)
    assert out.dtype == torch.float32
    assert_close(out.flatten(), s.betas[t].float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        extract(s.betas, torch.tensor([0, 1]), x)
