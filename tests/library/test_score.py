"""The score-based view (ddpm_lite.score): exact float64 identities with the eps-parametrisation, and Langevin
dynamics against distributions whose answer is known (CONVENTIONS.md: identities; Monte Carlo within standard
errors)."""
import math

import pytest
import torch
from torch.testing import assert_close

from ddpm_lite import GaussianDiffusion, GaussianMixture, GaussianMixtureOracle, NoiseSchedule
from ddpm_lite.sampling import p_sample
from ddpm_lite.score import (
    annealed_langevin_dynamics, annealed_step_sizes, corrector_step, ddpm_step_from_score,
    denoising_score_matching_loss, kernel_score, langevin_dynamics, langevin_step, score_from_eps, snr_step_size,
)

MIXTURE = GaussianMixture([0.3, 0.7], [[-0.5, 0.2], [0.6, -0.1]], 0.3)


@pytest.fixture
def diffusion():
    return GaussianDiffusion(NoiseSchedule.from_name("cosine", 100))


def _batch(n=64, dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_start = torch.randn(n, dim, generator=g, dtype=torch.float64)
    noise = torch.randn(n, dim, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (n,), generator=g)
    t[0], t[-1] = 0, 99
    return x_start, noise, t


def test_the_score_of_eps_star_is_the_noised_mixtures_score(diffusion):
    oracle = GaussianMixtureOracle(diffusion.schedule, MIXTURE)
    x_t, _, t = _batch()
    score = score_from_eps(diffusion, x_t, t, oracle(x_t, t))
    alpha_bar = diffusion.schedule.alphas_cumprod
    expected = torch.stack([MIXTURE.noised(alpha_bar[k].item()).score(x_t[i:i + 1])[0] for i, k in enumerate(t)])
    assert_close(score, expected, rtol=1e-10, atol=1e-10)


def test_the_kernel_score_is_minus_eps_over_sigma(diffusion):
    x_start, noise, t = _batch()
    x_t = diffusion.q_sample(x_start, t, noise=noise, validate=False)
    sigma = diffusion.schedule.sqrt_one_minus_alphas_cumprod[t][:, None]
    assert_close(kernel_score(diffusion, x_start, x_t, t), -noise / sigma, rtol=1e-10, atol=1e-12)


def test_dsm_is_l_simple_over_one_minus_alpha_bar_term_by_term(diffusion):
    oracle = GaussianMixtureOracle(diffusion.schedule, MIXTURE)  # any eps-model will do; this one is fixed
    x_start, noise, t = _batch()
    dsm = denoising_score_matching_loss(diffusion, oracle, x_start, t, noise)
    mse = diffusion.training_losses(oracle, x_start, t, noise=noise, validate=False)["mse"]
    one_minus = 1 - diffusion.schedule.alphas_cumprod[t]
    assert_close(dsm, mse / one_minus, rtol=1e-10, atol=0)
    assert_close(one_minus * dsm, mse, rtol=1e-10, atol=0)  # lambda(t) = 1 - alpha_bar_t: L_simple exactly


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large"])
def test_algorithm_2s_step_is_the_score_step(var_type):
    diffusion = GaussianDiffusion(NoiseSchedule.from_name("linear", 100), model_var_type=var_type)
    oracle = GaussianMixtureOracle(diffusion.schedule, MIXTURE)
    x_t, _, t = _batch(seed=3)
    out = p_sample(diffusion, oracle, x_t, t, clip_denoised=False, generator=torch.Generator().manual_seed(5))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # p_sample's z
    by_score = ddpm_step_from_score(diffusion, x_t, t, score_from_eps(diffusion, x_t, t, oracle(x_t, t)), z)
    assert_close(by_score, out["sample"], rtol=1e-10, atol=1e-12)


def test_langevin_step_is_the_equation():
    x, s, z = (torch.tensor([[1.0, -2.0]], dtype=torch.float64) * k for k in (1, 3, 5))
    assert_close(langevin_step(x, s, 0.04, z), x + 0.02 * s + 0.2 * z, rtol=0, atol=1e-15)


def test_langevin_with_a_gaussian_score_reaches_its_known_stationary_law():
    """For p = N(mu, s^2), a Langevin step is x' = a x + (1 - a) mu + sqrt(eta) z with a = 1 - eta / (2 s^2): an
    AR(1) chain whose stationary law is N(mu, s^2 / (1 - eta / (4 s^2))) exactly (the O(eta) bias of a finite
    step). From a start far away (x = 10) with 200 steps, a^200 = 0.8^200 < 1e-19: the start is forgotten. Tolerances: 5
    standard errors of the mean and the variance of n = 20,000 independent chains."""
    mu, s, eta, n = 0.7, 0.5, 0.1, 20_000
    x = langevin_dynamics(lambda x: -(x - mu) / s**2, torch.full((n, 1), 10.0, dtype=torch.float64),
                          step_size=eta, num_steps=200, generator=torch.Generator().manual_seed(0))
    variance = s**2 / (1 - eta / (4 * s**2))
    assert abs(x.mean().item() - mu) < 5 * math.sqrt(variance / n)
    assert abs(x.var().item() - variance) < 5 * variance * math.sqrt(2 / (n - 1))
    assert abs(variance - s**2) > 5 * variance * math.sqrt(2 / (n - 1))  # the bias is real, and resolved here


def test_annealed_step_sizes_are_eps_sigma_squared_over_the_last():
    sigmas = torch.tensor([4.0, 1.0, 0.5])
    assert_close(annealed_step_sizes(sigmas, 1e-3), 1e-3 * torch.tensor([64.0, 4.0, 1.0], dtype=torch.float64))
    for bad in ([1.0, 2.0], [], [1.0, -0.5]):
        with pytest.raises(ValueError, match="decreasing"):
            annealed_step_sizes(torch.tensor(bad), 1e-3)
    with pytest.raises(ValueError, match="positive number"):
        annealed_step_sizes(sigmas, 0.0)


# Song & Ermon 2019, Sec. 3.2: two modes with unequal weights, separated by a low-density gap.
WEIGHTS, MEANS, STD = [0.2, 0.8], [[-3.0], [3.0]], 0.3


def _mixture_score(sigma: float):
    """grad log p_sigma for p_sigma = the mixture convolved with N(0, sigma^2) (the same weights and means)."""
    noised = GaussianMixture(WEIGHTS, MEANS, math.sqrt(STD**2 + sigma**2))
    return lambda x: noised.score(x).to(x.dtype)


def test_plain_langevin_gets_the_weights_wrong_and_annealing_recovers_them():
    """From a uniform start on [-8, 8], Langevin with the exact score at the data's own level cannot cross the gap
    in 500 steps: each chain stays in the mode it fell into, about half in each, against the true 0.2 / 0.8.
    Annealed over sigma from 20 down to 0.05, the chains mix while the modes still overlap and the fraction in the
    right mode is 0.8 within 4 standard errors (n = 4,000: SE 0.0063) plus 0.02 for the bias of a finite Langevin
    step (unadjusted Langevin's stationary law is not p_sigma): measured at these settings, seeds 0-3, the fraction
    fell 0.010-0.022 short of 0.8, and by 0.006-0.012 with twice the levels (n = 8,000)."""
    n, g = 4000, torch.Generator().manual_seed(0)
    start = 16 * torch.rand(n, 1, generator=g, dtype=torch.float64) - 8
    plain = langevin_dynamics(_mixture_score(0.0), start, step_size=0.01, num_steps=500, generator=g)
    se = math.sqrt(0.8 * 0.2 / n)
    assert abs((plain > 0).double().mean().item() - 0.8) > 20 * se

    sigmas = torch.logspace(math.log10(20.0), math.log10(0.05), 20, dtype=torch.float64)
    levels = list(annealed_langevin_dynamics(lambda x, i: _mixture_score(sigmas[i].item())(x), start, sigmas,
                                             eps=2e-4, steps_per_level=100, generator=g))
    assert len(levels) == len(sigmas)
    fraction = (levels[-1] > 0).double().mean().item()
    assert abs(fraction - 0.8) < 4 * se + 0.02
    right = levels[-1][levels[-1] > 0]
    assert abs(right.mean().item() - 3.0) < 0.05  # and each mode sits where it should


def test_the_corrector_step_makes_its_noise_r_times_its_drift():
    """Song et al. 2021, Algorithm 3: epsilon = 2 alpha (r ||z|| / ||s||)^2 with batch-mean norms, so that the
    step's noise sqrt(2 epsilon) mean||z|| over its drift epsilon mean||s|| is 1 / (r sqrt(alpha)), exactly."""
    g = torch.Generator().manual_seed(0)
    score, z = (torch.randn(16, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    r, alpha = 0.16, 0.98
    epsilon = snr_step_size(score, z, r, alpha)
    z_norm, s_norm = z.flatten(1).norm(dim=1).mean(), score.flatten(1).norm(dim=1).mean()
    assert_close(epsilon, 2 * alpha * (r * z_norm / s_norm) ** 2, rtol=1e-12, atol=0)
    assert_close((2 * epsilon).sqrt() * z_norm / (epsilon * s_norm), torch.tensor(1 / (r * math.sqrt(alpha)), dtype=torch.float64),
                 rtol=1e-12, atol=0)
    x = torch.randn(16, 1, 4, 4, generator=g, dtype=torch.float64)
    assert_close(corrector_step(x, score, z, r, alpha), x + epsilon * score + (2 * epsilon).sqrt() * z,
                 rtol=1e-12, atol=1e-15)
