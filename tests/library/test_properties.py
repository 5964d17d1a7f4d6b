"""Property-based tests (hypothesis) of the schedule and posterior identities over random T, shapes and t.

All in float64. Tolerances: the identities below hold exactly in real arithmetic; in float64 each side is a few
roundings away from it, so an absolute 1e-12 on quantities of order 1 (or a relative 1e-10 for the cumulative
product over up to 1000 factors, whose rounding grows like T * 2**-53 ~ 1e-13) leaves a margin of ~100x.
"""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from ddpm_lite import GaussianDiffusion
from ddpm_lite.schedules import NoiseSchedule

settings.register_profile("ddpm_lite", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ddpm_lite")


@st.composite
def schedules(draw):
    """A linear or cosine schedule of 1 to 1000 steps, or random betas in (0, 0.5)."""
    kind = draw(st.sampled_from(["linear", "cosine", "random"]))
    T = draw(st.integers(min_value=1, max_value=1000))
    if kind != "random":
        return NoiseSchedule.from_name(kind, T)
    betas = draw(st.lists(st.floats(1e-5, 0.5), min_size=1, max_size=50))
    return NoiseSchedule.from_betas(torch.tensor(betas, dtype=torch.float64))


@st.composite
def batches(draw):
    """(schedule, x (B, ...) float64, t (B,) int64 in 0 ... T-1, eps like x) for images or points."""
    schedule = draw(schedules())
    B = draw(st.integers(1, 6))
    tail = draw(st.sampled_from([(2,), (3,), (1, 4, 4), (3, 2, 2)]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, schedule.num_timesteps, (B,), generator=g)
    x = torch.rand(B, *tail, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(B, *tail, generator=g, dtype=torch.float64)
    return schedule, x, t, eps


@given(schedules())
def test_alpha_bar_is_the_cumulative_product_of_alpha(s):
    T = s.num_timesteps
    for t in {0, T // 2, T - 1}:
        assert_close(s.alphas_cumprod[t], torch.prod(1 - s.betas[: t + 1]), rtol=1e-10, atol=0)
    assert_close(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1], rtol=0, atol=0)
    assert s.alphas_cumprod_prev[0] == 1


@given(schedules())
def test_posterior_variance_formula(s):
    """beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), Ho et al. eq. (7), and it equals the
    variance of Bayes' rule for the two Gaussians q(x_t | x_{t-1}) and q(x_{t-1} | x_0):
    1 / (1 / (1 - alpha_bar_{t-1}) + alpha_t / beta_t) for t >= 2 (index >= 1)."""
    expected = s.betas * (1 - s.alphas_cumprod_prev) / (1 - s.alphas_cumprod)
    assert_close(s.posterior_variance, expected, rtol=0, atol=1e-12)
    if s.num_timesteps > 1:
        bayes = 1 / (1 / (1 - s.alphas_cumprod_prev[1:]) + s.alphas[1:] / s.betas[1:])
        assert_close(s.posterior_variance[1:], bayes, rtol=1e-9, atol=0)


@given(batches())
def test_eps_x0_eps_round_trip(batch):
    """x_t = q_sample(x_0, t, eps); predict_x_start_from_eps(x_t, t, eps) = x_0 and
    predict_eps_from_x_start(x_t, t, x_0) = eps. 1 / sqrt(alpha_bar_t) reaches ~1e4 at the end of a
    1000-step cosine schedule, which multiplies the rounding of x_t: atol 1e-9 there, 1e-12 times that factor."""
    schedule, x, t, eps = batch
    d = GaussianDiffusion(schedule)
    x_t = d.q_sample(x, t, eps)
    amplification = float(schedule.sqrt_recip_alphas_cumprod[t].max())
    assert_close(d.predict_x_start_from_eps(x_t, t, eps), x, rtol=0, atol=1e-12 * max(1.0, amplification))
    recovered = d.predict_eps_from_x_start(x_t, t, x)
    scale = float((1 / schedule.sqrt_one_minus_alphas_cumprod[t]).max())  # 1 / sqrt(1 - alpha_bar_t)
    assert_close(recovered, eps, rtol=0, atol=1e-12 * max(1.0, scale * amplification))


@given(batches())
def test_posterior_mean_of_the_true_x0_is_eq_11_of_the_true_eps(batch):
    """mu_tilde(x_0, x_t) (eq. (7)) = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) (eq. (11))."""
    schedule, x, t, eps = batch
    d = GaussianDiffusion(schedule)
    x_t = d.q_sample(x, t, eps)
    mean, variance, _ = d.q_posterior_mean_variance(x, x_t, t)
    scale = float((schedule.betas / schedule.sqrt_one_minus_alphas_cumprod)[t].max())
    assert_close(mean, d.mean_from_eps(x_t, t, eps), rtol=0, atol=1e-12 * max(1.0, scale) * 10)
    assert variance.shape == (x.shape[0], *[1] * (x.ndim - 1))


@given(batches())
def test_any_t_outside_the_range_is_refused(batch):
    schedule, x, t, eps = batch
    d = GaussianDiffusion(schedule)
    for shift in (-schedule.num_timesteps, schedule.num_timesteps):  # all below 0, or all >= T
        with pytest.raises(ValueError, match="0 ... T-1"):
            d.q_sample(x, t + shift, eps)
