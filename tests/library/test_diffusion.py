"""GaussianDiffusion: exact float64 identities, Monte Carlo checks with tolerances from the standard error."""
import math

import pytest
import torch
from torch.testing import assert_close

from ddpm_lite import DiffusionConfig, GaussianDiffusion, NoiseSchedule, get_beta_schedule
from ddpm_lite.losses import normal_kl

K_SE = 4.5  # Monte Carlo tolerance in standard errors: a false alarm has probability < 1e-5 per comparison


def _batch(shape=(6, 1, 4, 4), T=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_start = torch.rand(shape, generator=g) * 2 - 1
    noise = torch.randn(shape, generator=g)
    t = torch.randint(0, T, (shape[0],), generator=g)
    t[0], t[-1] = 0, T - 1
    return x_start, noise, t


def test_q_sample_is_the_closed_form(float64):
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100))
    x_start, noise, t = _batch()
    ab = d.schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    assert_close(d.q_sample(x_start, t, noise), ab.sqrt() * x_start + (1 - ab).sqrt() * noise, rtol=0, atol=1e-15)
    mean, var, _ = d.q_mean_variance(x_start, t)
    assert_close(mean, ab.sqrt() * x_start, rtol=0, atol=1e-15)
    assert_close(var, 1 - ab, rtol=0, atol=1e-15)


@pytest.mark.parametrize("steps", [1, 50, 300, 1000])
def test_iterating_the_one_step_forward_matches_q_xt_given_x0(float64, steps):
    """Compose q(x_t|x_{t-1}) `steps` times from a fixed x_0; compare mean and variance with eq. (4)."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 1000))
    n = 20000
    g = torch.Generator().manual_seed(steps)
    x0 = torch.tensor([-0.8, 0.0, 0.9]).repeat(n, 1)  # (n, 3): three data values, n chains each
    x = x0
    for i in range(steps):
        x = d.q_sample_step(x, torch.full((n,), i), noise=torch.randn(x.shape, generator=g))
    t = torch.full((n,), steps - 1)
    mean, var, _ = d.q_mean_variance(x0, t)
    var = var[0, 0].item()
    se_mean = math.sqrt(var / n)
    se_var = var * math.sqrt(2 / (n - 1))  # standard error of a Gaussian sample variance
    assert (x.mean(0) - mean[0]).abs().max().item() < K_SE * se_mean
    assert (x.var(0) - var).abs().max().item() < K_SE * se_var


def test_posterior_equals_bayes_rule_for_two_gaussians(float64):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): precisions add, means are precision-weighted."""
    d = GaussianDiffusion(NoiseSchedule.from_name("cosine", 200))
    s = d.schedule
    g = torch.Generator().manual_seed(1)
    x_start, x_t = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    t = torch.tensor([1, 2, 5, 50, 100, 150, 198, 199])
    prior_mean = s.alphas_cumprod_prev[t, None].sqrt() * x_start  # q(x_{t-1}|x_0)
    prior_var = 1 - s.alphas_cumprod_prev[t, None]
    lik_scale, lik_var = s.alphas[t, None].sqrt(), s.betas[t, None]  # q(x_t|x_{t-1}) = N(lik_scale x_{t-1}, lik_var)
    post_var = 1 / (1 / prior_var + lik_scale**2 / lik_var)
    post_mean = post_var * (prior_mean / prior_var + lik_scale * x_t / lik_var)
    mean, var, log_var = d.q_posterior_mean_variance(x_start, x_t, t)
    assert_close(mean, post_mean, rtol=0, atol=1e-12)
    assert_close(var, post_var, rtol=1e-12, atol=0)
    assert_close(log_var, post_var.log(), rtol=0, atol=1e-12)
    # At index 0 (the paper's t = 1) x_{t-1} = x_0 exactly: mean x_0, variance 0.
    t0 = torch.zeros(8, dtype=torch.long)
    mean0, var0, _ = d.q_posterior_mean_variance(x_start, x_t, t0)
    assert_close(mean0, x_start, rtol=0, atol=1e-15)
    assert (var0 == 0).all()


def test_eps_x0_v_mu_round_trips(float64):
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100))
    x_start, noise, t = _batch()
    x_t = d.q_sample(x_start, t, noise)
    assert_close(d.predict_x_start_from_eps(x_t, t, noise), x_start, rtol=0, atol=1e-10)
    assert_close(d.predict_eps_from_x_start(x_t, t, x_start), noise, rtol=0, atol=1e-10)
    v = d.get_v(x_start, t, noise)
    assert_close(d.predict_x_start_from_v(x_t, t, v), x_start, rtol=0, atol=1e-12)
    mu = d.q_posterior_mean_variance(x_start, x_t, t)[0]
    assert_close(d.predict_x_start_from_mu(x_t, t, mu), x_start, rtol=0, atol=1e-9)
    # Ho et al. eq. (11) (the line of Algorithm 2) is the posterior mean of the implied x_0.
    assert_close(d.mean_from_eps(x_t, t, noise), mu, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mean_type", ["eps", "x_start", "v", "mu"])
def test_every_parameterisation_gives_the_same_reverse_mean(float64, mean_type):
    """A model that outputs the true target for its parameterisation must give pred_x_start = x_0, mean = mu_tilde."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100), model_mean_type=mean_type)
    x_start, noise, t = _batch(seed=3)
    x_t = d.q_sample(x_start, t, noise)
    target = d.training_target(x_start, x_t, t, noise)
    out = d.p_mean_variance(lambda x, tt: target, x_t, t)
    assert_close(out["pred_x_start"], x_start, rtol=0, atol=1e-9)
    assert_close(out["mean"], d.q_posterior_mean_variance(x_start, x_t, t)[0], rtol=0, atol=1e-9)
    assert_close(out["pred_eps"][1:], noise[1:], rtol=0, atol=1e-8)  # eps is recoverable where t > 0 ...
    loss = d.training_losses(lambda x, tt: target, x_start, t=t, noise=noise)
    assert loss["loss"].shape == (6,)
    assert_close(loss["loss"], torch.zeros(6), rtol=0, atol=1e-20)


@pytest.mark.parametrize("mean_type", ["eps", "x_start", "v", "mu"])
def test_with_eps_false_leaves_out_only_pred_eps(mean_type):
    """Algorithm 2's path (with_eps=False) computes the same mean, variance and x_0, bit for bit, without pred_eps."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100), model_mean_type=mean_type)
    x_start, noise, t = _batch(seed=4)
    x_t = d.q_sample(x_start.float(), t, noise.float())
    model = lambda x, tt: torch.sin(3 * x) + tt[:, None, None, None] / 100  # noqa: E731 (a fixed, non-trivial output)
    full = d.p_mean_variance(model, x_t, t, clip_denoised=True)
    lean = d.p_mean_variance(model, x_t, t, clip_denoised=True, with_eps=False)
    assert set(full) - set(lean) == {"pred_eps"}
    for key, value in lean.items():
        assert torch.equal(value, full[key]), key


def test_variance_choices(float64):
    sched = NoiseSchedule.from_name("linear", 100)
    x_t = torch.zeros(4, 2)
    t = torch.tensor([0, 1, 50, 99])
    small = GaussianDiffusion(sched, model_var_type="fixed_small").p_variance(x_t, t)[0]
    large = GaussianDiffusion(sched, model_var_type="fixed_large").p_variance(x_t, t)[0]
    assert_close(small[1:, 0], sched.posterior_variance[t[1:]], rtol=0, atol=0)
    assert_close(large[1:, 0], sched.betas[t[1:]], rtol=1e-12, atol=0)
    assert_close(large[0, 0], sched.posterior_variance[1], rtol=1e-12, atol=0)  # beta_tilde_2 at t = 1
    learned = GaussianDiffusion(sched, model_var_type="learned_range", loss_type="hybrid")
    assert_close(learned.p_variance(x_t, t, torch.ones(4, 2))[1], large.log().expand(4, 2), rtol=1e-12, atol=0)
    assert_close(learned.p_variance(x_t, t, -torch.ones(4, 2))[1], sched.posterior_log_variance_clipped[t, None].expand(4, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large"])
def test_weighted_eps_loss_equals_the_kl_term(float64, var_type):
    """Ho et al. eq. (12): L_{t-1} = lambda_t ||eps - eps_theta||^2 + C_t, where C_t is the variance mismatch."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 1000), model_var_type=var_type)
    g = torch.Generator().manual_seed(4)
    x_start, noise = torch.rand(5, 1, 4, 4, generator=g) * 2 - 1, torch.randn(5, 1, 4, 4, generator=g)
    t = torch.tensor([1, 10, 300, 700, 999])
    x_t = d.q_sample(x_start, t, noise)
    eps_theta = noise + 0.3 * torch.randn(noise.shape, generator=g)  # an imperfect model
    out = d.p_mean_variance(lambda x, tt: eps_theta, x_t, t)
    true_mean, true_var, true_log_var = d.q_posterior_mean_variance(x_start, x_t, t)
    kl = normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"]).flatten(1).mean(1)
    c_t = normal_kl(0, true_log_var, 0, out["log_variance"]).flatten()
    weighted = d.eps_loss_weight(t) * ((noise - eps_theta) ** 2).flatten(1).mean(1)
    assert_close(kl - c_t, weighted, rtol=1e-9, atol=0)
    vb = d.vb_terms_bpd(lambda x, tt: eps_theta, x_start, x_t, t)["output"]
    assert_close(vb, kl / math.log(2), rtol=1e-12, atol=0)


def test_training_losses_shapes_and_both_ends_of_t():
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 50))
    g = torch.Generator().manual_seed(0)
    t = d.sample_timesteps(4000, generator=g)
    assert t.dtype == torch.int64 and t.min() == 0 and t.max() == 49  # Algorithm 1 draws t = 1 and t = T
    x_start = torch.rand(8, 1, 8, 8) * 2 - 1
    model = lambda x, tt: torch.zeros_like(x)
    out = d.training_losses(model, x_start, generator=g)
    assert out["loss"].shape == (8,) and out["t"].shape == (8,)
    assert_close(out["loss"], out["mse"])
    # The zero model's eps-MSE is the mean of eps^2: about 1 for 8 x 64 draws.
    assert abs(out["loss"].mean().item() - 1) < K_SE * math.sqrt(2 / 512)


def test_vlb_and_hybrid_losses():
    d_vlb = GaussianDiffusion(NoiseSchedule.from_name("linear", 50), loss_type="vlb")
    d_hyb = GaussianDiffusion(NoiseSchedule.from_name("linear", 50), model_var_type="learned_range", loss_type="hybrid")
    x_start, noise, t = _batch(T=50)
    out = d_vlb.training_losses(lambda x, tt: torch.zeros_like(x), x_start, t=t, noise=noise)
    assert_close(out["loss"], out["vlb"] * 50)
    assert bool((out["vlb"] >= 0).all())
    var_param = torch.zeros(6, 1, 4, 4, requires_grad=True)
    mean_param = torch.zeros(6, 1, 4, 4, requires_grad=True)
    out = d_hyb.training_losses(lambda x, tt: torch.cat([mean_param, var_param], 1), x_start, t=t, noise=noise)
    out["vlb"].sum().backward()  # the bound alone trains only the variance (mean frozen)
    assert (mean_param.grad == 0).all() and var_param.grad.abs().sum() > 0


def test_bpd_loop_decomposes_the_bound(float64):
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 20), data_bins=17)
    x_start = (torch.randint(0, 17, (3, 1, 2, 2)) / 8.0 - 1).double()
    out = d.calc_bpd_loop(lambda x, tt: torch.zeros_like(x), x_start, generator=torch.Generator().manual_seed(0))
    assert out["vb"].shape == (3, 20)
    assert_close(out["total_bpd"], out["vb"].sum(1) + out["prior_bpd"], rtol=0, atol=1e-12)
    assert bool((out["vb"] >= 0).all())


def test_bad_choices_name_the_options():
    with pytest.raises(ValueError, match="eps.*x_start.*v.*mu"):
        GaussianDiffusion([0.1, 0.2], model_mean_type="epsilon")
    with pytest.raises(ValueError, match="fixed_small"):
        DiffusionConfig(model_var_type="learned")
    with pytest.raises(ValueError, match="hybrid"):
        DiffusionConfig(model_var_type="learned_range", loss_type="simple")
    d = GaussianDiffusion([0.1, 0.2])
    with pytest.raises(ValueError, match="output"):
        d.p_mean_variance(lambda x, t: torch.zeros(2, 5), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def test_from_config():
    d = GaussianDiffusion.from_config(DiffusionConfig(schedule="cosine", num_timesteps=10, model_mean_type="v"))
    assert d.num_timesteps == 10 and d.model_mean_type == "v"


def _same_diffusion(a: GaussianDiffusion, b: GaussianDiffusion) -> bool:
    """Bit for bit the same schedule and the same settings."""
    fields = ("model_mean_type", "model_var_type", "loss_type", "data_bins")
    return torch.equal(a.schedule.betas, b.schedule.betas) and all(getattr(a, f) == getattr(b, f) for f in fields)


def test_the_config_is_the_one_source_of_the_settings():
    """diffusion.config rebuilds the diffusion; the settings are read from it; raw betas have none."""
    config = DiffusionConfig(schedule="cosine", num_timesteps=50, model_var_type="fixed_large", data_bins=17)
    d = GaussianDiffusion.from_config(config)
    assert d.config is config and d.model_var_type == "fixed_large" and d.data_bins == 17
    assert _same_diffusion(GaussianDiffusion.from_config(d.config), d)
    # a named schedule's betas, however they are passed, are described by the config of that name
    named = GaussianDiffusion(NoiseSchedule.from_name("cosine", 50), model_var_type="fixed_large", data_bins=17)
    assert named.config == config
    assert GaussianDiffusion(get_beta_schedule("linear", 20)).config == DiffusionConfig(num_timesteps=20)
    # betas that no config names: no config, the settings all the same
    raw = GaussianDiffusion([0.1, 0.2], model_mean_type="v")
    assert raw.config is None and raw.model_mean_type == "v" and raw.num_timesteps == 2
    assert GaussianDiffusion(NoiseSchedule.from_name("linear", 20).betas * 0.5).config is None


@pytest.mark.parametrize("field, value, fix", [
    ("schedule", "quadratic", "linear.*cosine"),
    ("num_timesteps", 0, "int >= 1"),
    ("num_timesteps", True, "int >= 1"),
    ("num_timesteps", 100.0, "int >= 1"),
    ("data_bins", 1, "int >= 2"),
    ("data_bins", True, "int >= 2"),
    ("model_mean_type", "epsilon", "eps.*x_start.*v.*mu"),
    ("loss_type", "l2", "simple.*vlb.*hybrid"),
    ("timesteps", (3, 2), "rising"),
    ("timesteps", (0, 1000), "rising indices in 0 ... T-1 = 999"),
    ("timesteps", (), "rising"),
])
def test_a_bad_config_is_one_line_naming_the_valid_values(field, value, fix):
    with pytest.raises(ValueError, match=fix) as info:
        DiffusionConfig(**{field: value})
    assert "\n" not in str(info.value)


def test_config_timesteps_from_json_are_stored_as_a_tuple():
    """A checkpoint's JSON gives a list; the config keeps the tuple (it stays hashable and compares equal)."""
    assert DiffusionConfig(timesteps=[0, 499, 999]) == DiffusionConfig(timesteps=(0, 499, 999))
    assert DiffusionConfig(timesteps=torch.tensor([0, 999])).timesteps == (0, 999)


@pytest.mark.parametrize("mean_type", ["eps", "x_start", "v"])
@pytest.mark.parametrize("gamma", [None, 0.5, 5.0])
def test_min_snr_weight_is_min_snr_times_the_x0_error_in_every_parametrisation(float64, mean_type, gamma):
    """Hang et al. 2023: the loss is min(SNR_t, gamma) ||x_0 - x0_theta||^2 whatever the network predicts (eps, x_0
    or v), and L_simple itself when gamma is None. Exact in float64 for an arbitrary model output."""
    config = DiffusionConfig(schedule="cosine", num_timesteps=100, model_mean_type=mean_type, min_snr_gamma=gamma)
    d = GaussianDiffusion.from_config(config)
    x_start, noise, t = _batch()
    output = torch.randn(x_start.shape, generator=torch.Generator().manual_seed(1))
    terms = d.training_losses(lambda x, t: output, x_start, t=t, noise=noise)
    x_t = d.q_sample(x_start, t, noise)
    x0_hat = {"eps": d.predict_x_start_from_eps, "v": d.predict_x_start_from_v}.get(
        mean_type, lambda x_t, t, out: out)(x_t, t, output)
    snr = d.schedule.snr[t]
    x0_error = ((x_start - x0_hat) ** 2).mean(dim=(1, 2, 3))
    if gamma is None:
        assert torch.equal(terms["loss"], terms["mse"])
        weight_in_x0 = {"eps": snr, "x_start": torch.ones_like(snr), "v": snr + 1}[mean_type]
    else:
        weight_in_x0 = snr.clamp(max=gamma)
    assert_close(terms["loss"], weight_in_x0 * x0_error, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "5"])
def test_min_snr_gamma_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="min_snr_gamma must be a positive number"):
        DiffusionConfig(min_snr_gamma=bad)


@pytest.mark.parametrize("changes", [{"loss_type": "vlb"}, {"model_mean_type": "mu"}])
def test_min_snr_gamma_weights_l_simple_only(changes):
    with pytest.raises(ValueError, match="min_snr_gamma weights L_simple"):
        DiffusionConfig(min_snr_gamma=5.0, **changes)
