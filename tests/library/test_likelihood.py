"""The probability-flow ODE and its exact likelihood (ddpm_lite.likelihood): the divergence against autograd's full
Jacobian, Hutchinson's estimate within its standard error, the ODE likelihood against the closed form within the
solver's own error, and DDIM as Euler's method on the same ODE (CONVENTIONS.md: identities; Monte Carlo within
standard errors)."""
import math

import pytest
import torch
from torch.testing import assert_close

from ddpm_lite import GaussianDiffusion, GaussianMixture, GaussianMixtureOracle, NoiseSchedule, quantize, respace
from ddpm_lite.evaluation import bits_per_dim, ode_bits_per_dim
from ddpm_lite.likelihood import divergence, ode_log_likelihood, probability_flow_drift, probability_flow_step
from ddpm_lite.sampling import SpacedModel, ddim_sample

MIXTURE = GaussianMixture([0.3, 0.7], [[-0.5, 0.3], [0.5, -0.2]], 0.2)


def _mlp(dim: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, dim)).double()


def test_the_exact_divergence_is_the_trace_of_autograds_full_jacobian():
    net = _mlp(5)
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    traces = torch.stack([torch.autograd.functional.jacobian(lambda v: net(v[None])[0], row).trace() for row in x])
    for max_batch in (4096, 14):  # one pass, and two coordinates per pass (three passes)
        value, div = divergence(net, x, method="exact", max_batch=max_batch)
        assert_close(div, traces, rtol=1e-12, atol=1e-12)
        assert_close(value, net(x))


def test_the_exact_divergence_of_an_image_function_sums_its_diagonal():
    """(B, C, H, W) inputs: the trace runs over all C H W coordinates. f = conv(x) has the constant trace
    D * (the kernel's centre weight), summed over channels."""
    conv = torch.nn.Conv2d(2, 2, 3, padding=1).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, div = divergence(conv, x)
    centre = conv.weight[0, 0, 1, 1] + conv.weight[1, 1, 1, 1]
    assert_close(div, torch.full((3,), 16 * centre.item(), dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_hutchinsons_estimate_is_unbiased_within_its_standard_error():
    """The mean of v^T J v over 4000 Rademacher probes, one sample: within 4 standard errors of the trace (a
    false alarm about once in 16,000 runs); the standard error comes from the probes' own spread."""
    net = _mlp(6, seed=3)
    x = torch.randn(1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, exact = divergence(net, x)
    g = torch.Generator().manual_seed(5)
    singles = torch.stack([divergence(net, x, method="hutchinson", generator=g)[1][0] for _ in range(4000)])
    se = singles.std() / math.sqrt(len(singles))
    assert abs(singles.mean() - exact[0]) < 4 * se
    assert se > 0  # the estimate does vary: the test could fail


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_ode_likelihood_of_mixture_data_is_the_closed_form(float64, schedule):
    """log p(x_1) of a Gaussian mixture's forward marginal at index 0 is known exactly; with the exact eps* the ODE
    gives it up to the solver's error and the prior's mismatch at T (q(x_T) is not exactly N(0, I)).

    Tolerance from the solver itself: a convergent method of order p has error(2N) ~ |ll(N) - ll(2N)| / (2^p - 1),
    at most |ll(N) - ll(2N)| for p >= 1 (Heun's p is 2); the prior's mismatch is computed exactly. Measured (n =
    200): mean |error| 0.002-0.003 nats at 100 steps, against a tolerance of about 0.01."""
    d = GaussianDiffusion(NoiseSchedule.from_name(schedule, 1000))
    oracle = GaussianMixtureOracle(d.schedule, MIXTURE)
    g = torch.Generator().manual_seed(0)
    x_start = MIXTURE.sample(200, generator=g)
    index = torch.zeros(200, dtype=torch.long)
    x_1 = d.q_sample(x_start, index, noise=torch.randn(x_start.shape, generator=g), validate=False)
    exact = MIXTURE.noised(d.schedule.alphas_cumprod[0].item()).log_prob(x_1)
    coarse, fine = (ode_log_likelihood(d, oracle, x_1, steps=k) for k in (50, 100))
    prior_gap = (MIXTURE.noised(d.schedule.alphas_cumprod[-1].item()).log_prob(fine["x_T"]) - fine["prior"]).abs()
    error = (fine["log_likelihood"] - exact).abs()
    assert error.mean() <= (coarse["log_likelihood"] - fine["log_likelihood"]).abs().mean() + prior_gap.mean()
    assert error.mean() < 0.01 and fine["nfe"] <= 200


def test_a_heun_step_of_the_drift_is_the_trapezoid_rule(float64):
    """probability_flow_step against the formula, with the drift of eq. (13) in u = log sigma^KE."""
    d = GaussianDiffusion(NoiseSchedule.from_name("cosine", 100))
    oracle = GaussianMixtureOracle(d.schedule, MIXTURE)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    s, t = torch.full((5,), 10), torch.full((5,), 30)
    h = (d.schedule.noise_level[30] / d.schedule.noise_level[10]).log().item()
    f0 = probability_flow_drift(d, oracle(x, s), x, s)
    x_euler = x + h * f0
    expected = x + 0.5 * h * (f0 + probability_flow_drift(d, oracle(x_euler, t), x_euler, t))
    assert_close(probability_flow_step(d, oracle, x, 10, 30)[0], expected, rtol=1e-12, atol=1e-12)
    # eq. (13) for the VP SDE, dx/dt = -beta/2 (x - eps / sqrt(1 - alpha_bar)), over du/dt = beta / (2 (1 - alpha_bar))
    alpha_bar = d.schedule.alphas_cumprod[10]
    assert_close(f0, (1 - alpha_bar) * (oracle(x, s) / (1 - alpha_bar).sqrt() - x), rtol=1e-12, atol=1e-12)


def test_ddim_is_eulers_method_on_the_probability_flow_ode(float64):
    """A DDIM step (eta = 0) from index t to s is Euler's step on dy/dsigma = eps in y = x / sqrt(alpha_bar) and
    sigma = sigma^KE: y_s = y_t + (sigma_s - sigma_t) eps_theta(x_t, t), exactly (Song et al. 2021, DDIM Sec. 4.3)."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 1000))
    oracle = GaussianMixtureOracle(d.schedule, MIXTURE)
    kept = [200, 700]
    spaced = respace(d, kept)
    x_t = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    step = ddim_sample(spaced, SpacedModel(oracle, torch.tensor(kept)), x_t, torch.ones(6, dtype=torch.long),
                       eta=0.0, clip_denoised=False)
    alpha_bar, sigma = d.schedule.alphas_cumprod, d.schedule.noise_level
    y_s = x_t / alpha_bar[700].sqrt() + (sigma[200] - sigma[700]) * oracle(x_t, torch.full((6,), 700))
    assert_close(step["sample"], alpha_bar[200].sqrt() * y_s, rtol=1e-12, atol=1e-12)


def test_ode_bits_per_dim_lies_between_the_datas_entropy_and_the_bound(float64):
    """Quantized mixture data (17 levels, the exact log P known) and the exact eps* of the continuous mixture. Both
    numbers share L_0; the ODE's exact KL(q(x_1 | x_0) || p(x_1)) is at most the bound's L_T + sum L_{t-1}
    (data processing: the chain's KL bounds its marginal's), and any model's cross-entropy is at least the
    data's entropy, E[-log2 P(x_0)] / D. Means of 300 images, within 4 standard errors."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100), data_bins=17)
    oracle = GaussianMixtureOracle(d.schedule, MIXTURE)
    x = quantize(MIXTURE.sample(300, generator=torch.Generator().manual_seed(0)).clamp(-1, 1), 17)
    ode = ode_bits_per_dim(d, oracle, x, steps=40, generator=torch.Generator().manual_seed(1))
    elbo = bits_per_dim(d, oracle, x, generator=torch.Generator().manual_seed(1))
    assert ode["num"] == elbo["num"] == 300 and ode["nfe"] <= 81
    assert ode["bpd"] < elbo["bpd"] + 4 * math.hypot(ode["se"], elbo["se"])
    exact = -oracle.discretized_log_prob(x, 17) / (2 * math.log(2.0))  # bits/dim, (300,)
    assert ode["bpd"] > exact.mean() - 4 * math.hypot(ode["se"], exact.std() / math.sqrt(300))
    assert ode["decoder"] + ode["kl"] == pytest.approx(ode["bpd"])
