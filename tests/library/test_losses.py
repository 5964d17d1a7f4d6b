"""The pieces of the bound: KL against torch.distributions, the decoder sums to one."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from torch.testing import assert_close

from ddpm_lite.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl


def test_normal_kl_matches_torch_distributions(float64):
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(50, generator=g), torch.randn(50, generator=g)
    lv1, lv2 = torch.randn(50, generator=g), torch.randn(50, generator=g)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=0, atol=1e-12)
    assert_close(normal_kl(m1, lv1, m1, lv1), torch.zeros(50), rtol=0, atol=1e-15)


@pytest.mark.parametrize("num_bins", [256, 17, 2])
def test_decoder_probabilities_sum_to_one_over_the_bins(float64, num_bins):
    levels = torch.linspace(-1, 1, num_bins)
    for mean, log_scale in [(0.0, math.log(0.01)), (0.3, math.log(0.5)), (-0.99, math.log(0.1)), (2.0, 0.0)]:
        logp = discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(log_scale), num_bins)
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_decoder_interior_bin_is_the_normal_cdf_difference(float64):
    # Independent reference: torch.distributions.Normal's cdf over [x - 1/255, x + 1/255].
    x = torch.tensor([-0.5, 0.0, 128 / 127.5 - 1])
    mean, std = torch.tensor(0.1), torch.tensor(0.2)
    expected = (Normal(mean, std).cdf(x + 1 / 255) - Normal(mean, std).cdf(x - 1 / 255)).log()
    assert_close(discretized_gaussian_log_likelihood(x, mean, std.log()), expected, rtol=1e-10, atol=0)


def test_decoder_end_bins_own_the_tails(float64):
    mean, std = torch.tensor(0.0), torch.tensor(0.3)
    low = discretized_gaussian_log_likelihood(torch.tensor(-1.0), mean, std.log())
    assert low.exp().item() == pytest.approx(Normal(mean, std).cdf(torch.tensor(-1 + 1 / 255)).item(), rel=1e-10)


def test_mean_flat():
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert_close(mean_flat(x), torch.tensor([5.5, 17.5]))
