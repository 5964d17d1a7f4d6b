"""ddpm_lite.reconstruction: the exact identities, the Gaussian oracle, the trained digits model, and bad input.

Tolerances follow CONVENTIONS.md: float64 identities with atol at rounding level; Monte Carlo comparisons in
standard errors (K_SE = 4: a correct method fails with probability < 1e-4 per comparison).
"""
import math

import pytest
import torch
from torch.testing import assert_close

import ddpm_lite as dl
from ddpm_lite import reconstruction as R
from ddpm_lite.oracles import GaussianMixtureOracle, GaussianOracle

K_SE = 4.0


@pytest.fixture
def linear():
    return dl.GaussianDiffusion(dl.NoiseSchedule.from_name("linear", 1000))


def _shrink(x_t, t):
    """A stand-in network with a non-trivial output (eps_hat = 0.5 x_t) for tests of the mechanics."""
    return 0.5 * x_t


# ---------------------------------------------------------------------------------------------- denoising maps
def test_sigma_maps_to_its_own_step_and_q_sample_exactly(linear, float64):
    levels = linear.schedule.noise_level
    assert (levels[1:] > levels[:-1]).all()
    g = torch.Generator().manual_seed(0)
    x_start = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    n = torch.randn(x_start.shape, generator=g)
    for t in (0, 10, 250, 999):
        sigma = float(levels[t])
        assert R.timestep_for_sigma(linear, sigma) == t
        # y = x_0 + sigma_t n, scaled, IS q_sample with noise n (no extra noise is needed at a grid level)
        x_t, start = R.noisy_to_x_t(linear, x_start + sigma * n, sigma, extra_noise=torch.randn(x_start.shape))
        assert start == t
        assert_close(x_t, linear.q_sample(x_start, torch.full((3,), t), noise=n), rtol=0, atol=1e-12)


def test_sigma_between_levels_gets_the_exact_noise_variance(linear, float64):
    """Off the grid: the extra noise tops sigma^2 up to sigma_t^2, so Var(x_t - sqrt(ab) x_0) = 1 - ab."""
    levels = linear.schedule.noise_level
    sigma = float(levels[100] + levels[101]) / 2
    t = R.timestep_for_sigma(linear, sigma)
    assert t == 101 and levels[100] < sigma <= levels[t]
    n = 200_000
    g = torch.Generator().manual_seed(1)
    x_start = torch.full((n, 1), 0.25)
    x_t, _ = R.noisy_to_x_t(linear, x_start + sigma * torch.randn(n, 1, generator=g), sigma, generator=g)
    alpha_bar = float(linear.schedule.alphas_cumprod[t])
    residual = x_t - math.sqrt(alpha_bar) * x_start
    var, expected = residual.var().item(), 1 - alpha_bar
    assert abs(var - expected) < K_SE * expected * math.sqrt(2 / (n - 1))  # SE of a Gaussian sample variance
    assert abs(residual.mean().item()) < K_SE * math.sqrt(expected / n)


@pytest.mark.parametrize("sigma", [0.0, -0.1, float("nan"), float("inf"), 1e6])
def test_bad_sigma_is_one_clear_error(linear, sigma):
    with pytest.raises(ValueError, match="sigma") as info:
        R.timestep_for_sigma(linear, sigma)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- inpainting mechanics
def _digits_batch(n=4):
    return dl.load_dataset("digits", train=False)[:n]


@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_replacement_keeps_the_known_pixels_exactly(linear, method):
    x = _digits_batch()
    mask = torch.zeros(1, 8, 8)
    mask[..., :4] = 1  # left half known
    g = torch.Generator().manual_seed(0)
    out = R.inpaint(linear, _shrink, x, mask, method=method, steps=20, jump=5, resample=3, generator=g)
    assert out.shape == x.shape
    assert torch.equal(out[..., :4], x[..., :4])
    assert not torch.equal(out[..., 4:], x[..., 4:])


@pytest.mark.parametrize(
    "operator, shape",
    [(R.Inpainting(torch.bernoulli(torch.full((1, 8, 8), 0.5), generator=torch.Generator().manual_seed(3))), (2, 1, 8, 8)),
     (R.SuperResolution(2), (2, 1, 8, 8)), (R.SuperResolution(4), (2, 3, 16, 16)), (R.Colorization(), (2, 3, 8, 8))],
    ids=["inpainting", "superres-2", "superres-4-rgb", "colorization"],
)
def test_ddnm_result_satisfies_the_observation(linear, operator, shape):
    g = torch.Generator().manual_seed(0)
    x_true = torch.rand(shape, generator=g) * 1.6 - 0.8
    y = operator.A(x_true)
    assert_close(operator.A(operator.A_pinv(y)), y, rtol=0, atol=1e-6)  # A A^+ = I on the range
    out = R.ddnm(linear, _shrink, y, operator, steps=10, generator=g)
    assert out.shape == x_true.shape
    assert_close(operator.A(out), y, rtol=0, atol=1e-5)


def test_repaint_schedule_walks_one_level_at_a_time():
    assert R.repaint_schedule(5) == [4, 3, 2, 1, 0, -1]  # resample = 1: the plain chain
    walk = R.repaint_schedule(20, jump=5, resample=3)
    moves = [b - a for a, b in zip(walk[:-1], walk[1:])]
    assert walk[0] == 19 and walk[-1] == -1 and set(moves) == {-1, 1}
    # jump points at levels 0, 5, 10 (not 15: none above the last block), each revisited twice by 5 levels
    assert moves.count(1) == 3 * 2 * 5 and moves.count(-1) == 20 + 3 * 2 * 5


# ---------------------------------------------------------------------------------------------- the Gaussian oracle
def _correlated(dim=4, rho=0.8, variance=1.0):
    i = torch.arange(dim, dtype=torch.float64)
    return variance * rho ** (i[:, None] - i[None]).abs()


def test_gaussian_oracle_matches_the_mixture_oracle_for_isotropic_data(float64):
    schedule = dl.NoiseSchedule.from_name("cosine", 1000)
    mean = torch.tensor([0.3, -0.2, 0.1])
    full = GaussianOracle(schedule, mean, 0.25 * torch.eye(3))
    mixture = GaussianMixtureOracle(schedule, dl.GaussianMixture([1.0], mean[None], 0.5))
    x_t, t = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 50, 500, 900, 999])
    assert_close(full(x_t, t), mixture(x_t, t), rtol=0, atol=1e-12)


def test_gaussian_oracle_is_the_posterior_mean_of_the_noise(float64):
    """E[eps | x_t] from the joint Gaussian of (x_t, eps), computed independently with a linear solve."""
    schedule = dl.NoiseSchedule.from_name("linear", 1000)
    cov, mean = _correlated(), torch.tensor([0.1, 0.0, -0.3, 0.2])
    oracle = GaussianOracle(schedule, mean, cov)
    x_t = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    for t in (0, 300, 999):
        ab = schedule.alphas_cumprod[t]
        cov_x = ab * cov + (1 - ab) * torch.eye(4)  # Cov(x_t); Cov(eps, x_t) = sqrt(1 - ab) I
        expected = (1 - ab).sqrt() * torch.linalg.solve(cov_x, (x_t - ab.sqrt() * mean).T).T
        assert_close(oracle(x_t, torch.full((5,), t)), expected, rtol=0, atol=1e-12)


def _inpaint_gaussian(method, n, **kwargs):
    """Complete coordinates 2 and 4 of N(0, Sigma) data given x_1 = 0.9, x_3 = -0.6 with the exact eps*.

    Returns the error of the sample mean of the missing coordinates in units of the exact conditional shift
    (M,), the same error in standard errors (M,), and the ratio of sample to exact conditional variance (M,).
    """
    schedule = dl.NoiseSchedule.from_name("linear", 1000)
    oracle = GaussianOracle(schedule, torch.zeros(4, dtype=torch.float64), _correlated())
    known = torch.tensor([True, False, True, False])
    values = torch.tensor([0.9, -0.6], dtype=torch.float64)
    x_known = torch.zeros(n, 4, dtype=torch.float64)
    x_known[:, known] = values
    out = R.inpaint(dl.GaussianDiffusion(schedule), oracle, x_known, known.double(), method=method,
                    clip_denoised=False, generator=torch.Generator().manual_seed(1),
                    noise=torch.randn(n, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64), **kwargs)
    exact_mean, exact_cov = oracle.conditional(known, values)
    missing = out[:, ~known]
    error = missing.mean(0) - exact_mean
    se = (exact_cov.diagonal() / n).sqrt()  # standard error of each missing coordinate's sample mean
    return error / exact_mean.abs(), error / se, missing.var(0) / exact_cov.diagonal()


def test_replacement_is_biased_and_repaint_converges(one_thread):
    """With the exact eps*, sampling the missing coordinates of N(0, Sigma) data given the known ones.

    The exact conditional mean of coordinate 4 is -0.48. Measured (250 respaced steps, jump 1): the replacement
    method misses 60-65 % of that shift (15 standard errors at n = 1000 below, 23 at n = 2000 in the chapter),
    with a variance 33-44 % too large; RePaint misses about 30 % with 3 resamplings and 10-20 % with 10 (2.5
    standard errors here, 6.6 at n = 2000), its variance within 10 %. RePaint is not exact at a finite
    number of resamplings: the test asserts that its bias is far smaller than replacement's and falls as it
    resamples more, not that it vanishes.
    """
    n = 1000
    rel_replace, z_replace, var_replace = _inpaint_gaussian("replace", n, steps=250)
    rel_3, z_3, _ = _inpaint_gaussian("repaint", n, steps=250, jump=1, resample=3)
    rel_10, z_10, var_10 = _inpaint_gaussian("repaint", n, steps=250, jump=1, resample=10)
    worst = 1  # coordinate 4, next to the observed -0.6 (coordinate 2's shift is small: its relative error is noise)
    assert z_replace[worst].abs() > 3 * K_SE and rel_replace[worst].abs() > 0.5  # a bias, not Monte Carlo noise
    assert var_replace.max() > 1.15  # and too wide
    assert z_replace[worst].abs() > z_3[worst].abs() + K_SE * 2**0.5  # resampling helps, beyond the noise of the
    assert z_3[worst].abs() > z_10[worst].abs()  # difference of two independent estimates; more helps more
    assert rel_10[worst].abs() < 0.3 and (var_10 - 1).abs().max() < 0.25


# ---------------------------------------------------------------------------------------------- the trained model
@pytest.fixture(scope="module")
def digits_model():
    model, diffusion = dl.book.load_pretrained_digits(device="cpu")
    return model, diffusion


def test_reconstruction_from_small_t_returns_the_image(digits_model):
    """Held-out digits noised to t and denoised with 20 DDPM steps.

    Measured on the 64 held-out digits below (pretrained v4): PSNR 38 dB at t = 10, 15.8 dB at t = 400, and
    9.2 dB at t = 999 (an unrelated digit). The thresholds sit well inside those.
    """
    model, diffusion = digits_model
    x = dl.load_dataset("digits", train=False)[:64]
    g = torch.Generator().manual_seed(0)
    scores = {t: R.psnr(R.sdedit(diffusion, model, x, t, steps=20, generator=g), x).mean().item() for t in (10, 400, 999)}
    assert scores[10] > 22, scores
    assert scores[10] > scores[400] > scores[999], scores


def test_ddim_inversion_reconstructs_the_digit(digits_model):
    """x_0 -> x_900 -> x_0 with deterministic DDIM (cosine alpha_bar_900 = 0.024; see ddim_invert on why not T-1).

    Measured RMSE on these 32 held-out digits (pixels span 2): 0.102 at K = 10, 0.0087 at K = 100. The test allows
    0.03 at K = 100 and asserts that more steps help.
    """
    model, diffusion = digits_model
    x = dl.load_dataset("digits", train=False)[:32]
    errors = {}
    for K in (10, 100):
        x_T = R.ddim_invert(diffusion, model, x, steps=K, t_end=900)
        errors[K] = (R.ddim_decode(diffusion, model, x_T, steps=K, t_end=900) - x).pow(2).mean().sqrt().item()
    assert errors[100] < 0.03 and errors[100] < errors[10], errors


# ---------------------------------------------------------------------------------------------- quality measures
def test_psnr_and_ssim_follow_their_definitions():
    x = _digits_batch(3).double()
    shifted = x.clone()
    shifted[..., :4] += 0.1  # MSE 0.005 over the image, 0.01 over the left half
    assert_close(R.psnr(shifted, x), torch.full((3,), 10 * math.log10(4 / 0.005), dtype=torch.float64), rtol=0, atol=1e-9)
    left = torch.zeros(1, 8, 8)
    left[..., :4] = 1
    assert_close(R.psnr(shifted, x, mask=left), torch.full((3,), 10 * math.log10(4 / 0.01), dtype=torch.float64),
                 rtol=0, atol=1e-9)
    assert_close(R.ssim(x, x), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (R.ssim(shifted, x) < 1).all()


def test_classical_baselines_help_and_keep_known_pixels():
    x = dl.load_dataset("digits", train=False)[:16]
    g = torch.Generator().manual_seed(0)
    sigma = 0.3
    y = x + sigma * torch.randn(x.shape, generator=g)
    # measured on these 16 held-out digits: noisy 16.3 dB, clipped to [-1, 1] 18.1, nl_means 18.8, tv 18.5 dB
    for method in ("nl_means", "tv"):
        assert R.psnr(R.classical_denoise(y, sigma, method), x).mean() > R.psnr(y.clamp(-1, 1), x).mean() + 0.2
    mask = torch.ones(1, 8, 8)
    mask[..., 2:6, 2:6] = 0
    filled = R.classical_inpaint(x * mask, mask)
    assert torch.equal(filled * mask, x * mask)
    assert R.psnr(filled, x).mean() > R.psnr(x * mask, x).mean()  # better than leaving the hole at 0
    up = R.bicubic_upsample(R.SuperResolution(2).A(x), 2)
    assert up.shape == x.shape and up.abs().max() <= 1


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d: R.inpaint(d, _shrink, _digits_batch(), torch.ones(1, 7, 7)), "mask of shape"),
        (lambda d: R.inpaint(d, _shrink, _digits_batch(), torch.full((1, 8, 8), 0.5)), "0 \\(missing\\) or 1"),
        (lambda d: R.inpaint(d, _shrink, _digits_batch() * 100, torch.ones(1, 8, 8)), r"\[-1, 1\]"),
        (lambda d: R.inpaint(d, _shrink, _digits_batch(), torch.ones(1, 8, 8), method="magic"), "replace"),
        (lambda d: R.sdedit(d, _shrink, _digits_batch(), 1000), "0 ... 999"),
        (lambda d: R.sdedit(d, _shrink, _digits_batch(), -1), "0 ... 999"),
        (lambda d: R.sdedit(d, _shrink, _digits_batch(), 5.0), "integer"),
        (lambda d: R.sdedit(d, _shrink, _digits_batch(), 5, steps=0), "steps"),
        (lambda d: R.sdedit(d, _shrink, _digits_batch(), 5, sampler="dpm"), "ddpm"),
        (lambda d: R.denoise(d, _shrink, _digits_batch(), 0.0), "sigma"),
        (lambda d: R.SuperResolution(3).A(_digits_batch()), "does not divide"),
        (lambda d: R.Colorization().A(_digits_batch()), "3-channel"),
        (lambda d: R.SuperResolution(0), "positive integer"),
        (lambda d: R.sdedit(d, _shrink, torch.full((2, 1, 8, 8), float("nan")), 5), "NaN"),
        (lambda d: R.sdedit(d, _shrink, _digits_batch()[:, 0], 5), r"channel axis, \(N, C, H, W\)"),
        (lambda d: R.ddnm(d, _shrink, torch.zeros(2, 1, 4, 4, dtype=torch.long), R.SuperResolution(2)), "integer"),
    ],
    ids=["mask-shape", "mask-values", "range-0-255", "method", "t-is-T", "t-negative", "t-float", "steps-0",
         "sampler", "sigma-0", "scale-divides", "colour-channels", "scale-0", "nan-input", "no-channel-axis",
         "integer-pixels"],
)
def test_bad_input_is_one_clear_error(linear, call, message):
    with pytest.raises(ValueError, match=message) as info:
        call(linear)
    assert "\n" not in str(info.value)
