"""The exact oracle: for Gaussian (mixture) data the optimal eps-predictor is known in closed form.

Feeding it to the samplers must reproduce the data distribution, and the bound computed with it must not
exceed the exact log-likelihood (CONVENTIONS.md, "Tests of mathematics", 2 and 3).
"""
import math

import pytest
import torch
from scipy import stats
from torch.testing import assert_close

from ddpm_lite import GaussianDiffusion, GaussianMixture, GaussianMixtureOracle, NoiseSchedule, quantize, sample

ALPHA = 0.001  # KS significance level: a correct sampler fails one of these tests with probability 0.1 %
K_SE = 4.0  # standard errors allowed for a one-sided Monte Carlo inequality (false alarm < 3.2e-5)
MU, STD = 0.3, 0.5


@pytest.fixture
def gaussian():
    return GaussianMixtureOracle(NoiseSchedule.from_name("linear", 1000), GaussianMixture([1.0], [[MU]], STD))


def test_oracle_score_is_the_gradient_of_the_noised_density(float64):
    """eps* = -sqrt(1 - alpha_bar) grad log q(x_t): check against autograd of the closed-form marginal."""
    sched = NoiseSchedule.from_name("linear", 1000)
    oracle = GaussianMixtureOracle(sched, GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [0.8, -0.2]], 0.2))
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(6, 2, generator=g).requires_grad_()
    t = torch.tensor([0, 3, 100, 400, 800, 999])
    ab = sched.alphas_cumprod[t][:, None, None]
    var = ab * 0.2**2 + 1 - ab
    comp = -0.5 * ((x_t[:, None] - ab.sqrt() * oracle.mixture.means[None]) ** 2).sum(-1) / var[..., 0] - var[..., 0].log()
    log_q = torch.logsumexp(oracle.mixture.weights.log()[None] + comp, 1)
    (grad,) = torch.autograd.grad(log_q.sum(), x_t)
    assert_close(oracle.score(x_t.detach(), t), grad, rtol=1e-10, atol=1e-12)
    # ... and, per time step, the score of the noised mixture that ddpm_lite.data computes independently.
    for i in range(6):
        noised = oracle.mixture.noised(sched.alphas_cumprod[t[i]].item())
        assert_close(oracle.score(x_t[i : i + 1].detach(), t[i : i + 1]), noised.score(x_t[i : i + 1].detach()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large"])
def test_ancestral_sampling_with_the_oracle_recovers_the_data(float64, gaussian, var_type):
    d = GaussianDiffusion(gaussian.schedule, model_var_type=var_type)
    g = torch.Generator().manual_seed(11)
    x = sample(d, gaussian, (2000, 1), sampler="ddpm", clip_denoised=False, generator=g,
               noise=torch.randn(2000, 1, generator=g))  # Algorithm 2, all T steps
    assert stats.kstest(x[:, 0].numpy(), stats.norm(MU, STD).cdf).pvalue > ALPHA


def test_ddim_with_the_oracle_recovers_the_data(float64, gaussian):
    d = GaussianDiffusion(gaussian.schedule)
    g = torch.Generator().manual_seed(12)
    x = sample(d, gaussian, (2000, 1), sampler="ddim", steps=100, clip_denoised=False, generator=g,
               noise=torch.randn(2000, 1, generator=g))
    assert stats.kstest(x[:, 0].numpy(), stats.norm(MU, STD).cdf).pvalue > ALPHA


def test_bound_never_exceeds_the_exact_log_likelihood(float64, gaussian):
    """E[-ELBO] >= E[-log p_theta] >= E[-log q] (Gibbs): the bound in bits/dim is at least the exact NLL."""
    d = GaussianDiffusion(gaussian.schedule, data_bins=256)
    g = torch.Generator().manual_seed(13)
    x0 = quantize(gaussian.mixture.sample(400, generator=g).double(), 256)  # 8-bit data: exact probabilities are bin masses
    bound = d.calc_bpd_loop(gaussian, x0, generator=torch.Generator().manual_seed(99))["total_bpd"]
    exact = -gaussian.discretized_log_prob(x0, 256) / math.log(2)  # D = 1
    gap = bound - exact
    assert gap.mean().item() > -K_SE * gap.std().item() / math.sqrt(len(gap))
    # ... and the oracle is a good model: a wrong mean makes the bound clearly worse, with the same noise draws.
    wrong = GaussianMixtureOracle(gaussian.schedule, GaussianMixture([1.0], [[MU + 0.3]], STD))
    worse = d.calc_bpd_loop(wrong, x0, generator=torch.Generator().manual_seed(99))["total_bpd"]
    diff = worse - bound
    assert diff.mean().item() > K_SE * diff.std().item() / math.sqrt(len(diff))
