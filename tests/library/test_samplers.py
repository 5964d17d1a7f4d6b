"""DPM-Solver++(2M), SDE-DPM-Solver++(2M) and the churn sampler: contracts, exact identities with DDIM and DDPM,
step for step against diffusers, and the known distribution with the exact eps* (CONVENTIONS.md, tests 1-4)."""

import pytest
import torch
from scipy import stats
from torch.testing import assert_close

from ddpm_lite import GaussianDiffusion, GaussianMixture, GaussianMixtureOracle, NoiseSchedule, respace, sample
from ddpm_lite.schedules import logsnr_timesteps
from ddpm_lite.sampling import (
    SAMPLERS, SpacedModel, _vp_levels, ddim_sample, dpm_solver_pp_update, p_sample,
    sample_loop_progressive, sampler_timesteps,
)

NEW = ("dpmpp_2m", "dpmpp_2m_sde", "churn")
ALPHA = 0.001  # KS significance level: a correct sampler fails one of these tests with probability 0.1 %


class RecordingModel:
    """A fixed, t-dependent eps-predictor that records every t it is called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t):
        self.calls.append(t.clone())
        return 0.1 * x * (1 + t.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1)) / 1000)


@pytest.mark.parametrize("sampler", NEW)
@pytest.mark.parametrize("steps", [1, 2, 5, 20, None])
def test_new_samplers_start_at_T_reach_index_0_and_keep_the_budget(sampler, steps):
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100))
    model = RecordingModel()
    x = sample(d, model, (3, 1, 2, 2), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 2, 2) and torch.isfinite(x).all()
    seen = [int(t[0]) for t in model.calls]
    levels = sampler_timesteps(d, sampler, steps)
    assert seen[0] == 99 and seen[-1] == levels[0]  # starts at the paper's t = T ...
    assert levels[0] == (99 if steps == 1 else 0)  # ... and, given two steps or more, ends at t = 1
    # churn: two evaluations per level (Heun) but one at the first and at the last (Euler)
    expected = max(2 * len(levels) - 2, 1) if sampler == "churn" else len(levels)
    assert len(seen) == expected <= (steps or 2 * d.num_timesteps)
    if steps is not None:
        assert expected <= steps


def test_spacings_keep_both_ends_and_are_sorted():
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 1000))
    for k in (2, 10, 50):
        levels = logsnr_timesteps(d.schedule, k)
        assert levels[0] == 0 and levels[-1] == 999 and levels == sorted(set(levels)) and len(levels) <= k
    # uniform in lambda: the kept levels' lambda steps are all close to the even step (before rounding to indices)
    ab = d.schedule.alphas_cumprod
    lam = 0.5 * (ab / (1 - ab)).log()[logsnr_timesteps(d.schedule, 10)]
    even = (lam[0] - lam[-1]) / 9
    assert ((lam[:-1] - lam[1:]) / even - 1).abs().max() < 0.2


@pytest.mark.parametrize("sampler, stochastic", [
    ("ddpm", True), ("ddim", False), ("dpmpp_2m", False), ("dpmpp_2m_sde", True), ("churn", True)])
def test_the_generator_drives_exactly_the_stochastic_samplers(sampler, stochastic):
    """Given x_T, a seed reproduces every sampler bit for bit; another seed changes only the stochastic ones."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 50))
    x_T = torch.randn(4, 2)
    run = lambda seed: sample(d, RecordingModel(), (4, 2), sampler=sampler, steps=10, noise=x_T,
                              generator=torch.Generator().manual_seed(seed))
    assert_close(run(3), run(3), rtol=0, atol=0)
    assert torch.equal(run(3), run(4)) is not stochastic


def _one_step_pair(float_model=RecordingModel):
    """A diffusion respaced to the two indices (300, 600), a state x_s at 600, and the pieces both updates need."""
    d = GaussianDiffusion(NoiseSchedule.from_name("cosine", 1000))
    kept = [300, 600]
    spaced, model = respace(d, kept), SpacedModel(float_model(), torch.as_tensor(kept))
    x_s = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    t = torch.ones(5, dtype=torch.long)  # respaced index 1 = original 600
    x0 = spaced.p_mean_variance(model, x_s, t, clip_denoised=True)["pred_x_start"]
    s, u = _vp_levels(d, 600), _vp_levels(d, 300)
    coefficients = {"alpha_t": u["alpha"], "sigma_t": u["sigma"], "sigma_s": s["sigma"], "h": u["lambda"] - s["lambda"]}
    return spaced, model, x_s, t, x0, coefficients


def test_first_order_dpm_solver_pp_is_ddim(float64):
    """Lu et al. 2022: DPM-Solver++(1) is DDIM with eta = 0, for the same (clipped) x_0 prediction."""
    spaced, model, x_s, t, x0, coefficients = _one_step_pair()
    ddim = ddim_sample(spaced, model, x_s, t, eta=0.0)["sample"]
    assert_close(dpm_solver_pp_update(x_s, x0, coefficients), ddim, rtol=0, atol=1e-12)


def test_first_order_sde_dpm_solver_pp_is_the_ddpm_step(float64):
    """SDE-DPM-Solver++(1) is Algorithm 2's step with sigma_t^2 = beta_tilde_t, given the same z."""
    spaced, model, x_s, t, x0, coefficients = _one_step_pair()
    ddpm = p_sample(spaced, model, x_s, t, generator=torch.Generator().manual_seed(5))["sample"]
    z = torch.randn(x_s.shape, generator=torch.Generator().manual_seed(5))
    assert_close(dpm_solver_pp_update(x_s, x0, coefficients, z), ddpm, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ against diffusers, step for step
def _mixture_oracle(schedule_name="linear", dims=2):
    schedule = NoiseSchedule.from_name(schedule_name, 1000)
    means = [[-0.8] * dims, [0.6] * dims]
    return GaussianMixtureOracle(schedule, GaussianMixture([0.4, 0.6], means, 0.3))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 and diffusers 0.42, not ours
@pytest.mark.parametrize("sampler,algorithm", [("dpmpp_2m", "dpmsolver++"), ("dpmpp_2m_sde", "sde-dpmsolver++")])
@pytest.mark.parametrize("steps,clip", [(8, True), (20, False), (20, True)])
def test_dpm_solver_pp_matches_diffusers_step_for_step(float64, sampler, algorithm, steps, clip):
    """diffusers' DPMSolverMultistepScheduler(solver_order=2) on our time steps, betas and (float64) noise levels.

    diffusers rounds x_s (and the SDE noise) to float32 inside every step, so the two chains differ by float32
    rounding: about 2^-24 |x| per step, amplified by at most a few per step and summed over K <= 20 steps, < 1e-5.
    Clipping x_0 to [-1, 1] is diffusers' thresholding with sample_max_value = 1 (its percentile s is clamped to 1).
    """
    diffusers = pytest.importorskip("diffusers")
    points = _mixture_oracle()
    oracle = lambda x, t: points(x.flatten(1), t).reshape(x.shape)  # 2-D points as (B, 2, 1, 1) "images":
    d = GaussianDiffusion(points.schedule)  # diffusers' thresholding needs spatial dimensions
    timesteps = sampler_timesteps(d, sampler, steps)[::-1]  # descending, ends at 0
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=d.schedule.betas.numpy(), algorithm_type=algorithm, solver_order=2,
        prediction_type="epsilon", thresholding=clip, sample_max_value=1.0, lower_order_final=True,
        final_sigmas_type="zero")
    scheduler.set_timesteps(timesteps=timesteps)
    ab = d.schedule.alphas_cumprod
    scheduler.sigmas = torch.cat([((1 - ab) / ab).sqrt()[timesteps], torch.zeros(1)])  # float64, not float32

    g = torch.Generator().manual_seed(0)
    x_T = 1.5 * torch.randn(64, 2, 1, 1, generator=g)
    ours = [out["sample"] for out in sample_loop_progressive(
        d, oracle, x_T.shape, sampler=sampler, steps=steps, clip_denoised=clip, noise=x_T,
        generator=torch.Generator().manual_seed(1))]
    noise = torch.Generator().manual_seed(1)  # our loop draws one z per step, after the model call
    x = x_T
    for k, t in enumerate(scheduler.timesteps):
        eps = oracle(x, torch.full((x.shape[0],), int(t)))
        z = torch.randn(x.shape, generator=noise) if algorithm.startswith("sde") else None
        x = scheduler.step(eps, t, x, variance_noise=z).prev_sample
        assert_close(ours[k], x, rtol=0, atol=1e-5)
    assert len(ours) == len(scheduler.timesteps)


# ------------------------------------------------------------------ against the known distribution (exact eps*)
W, MEANS, STD = [0.3, 0.7], [[-0.6], [0.5]], 0.2


def _mixture_cdf(x):
    return sum(w * stats.norm(m[0], STD).cdf(x) for w, m in zip(W, MEANS))


@pytest.mark.parametrize("sampler,steps,spacing", [("dpmpp_2m", 20, "logsnr"), ("dpmpp_2m_sde", 30, "logsnr"),
                                                   ("churn", 100, "linspace"), ("pc", 200, "linspace"),
                                                   ("annealed_langevin", 1000, "logsnr")])
def test_new_samplers_with_the_oracle_recover_a_bimodal_mixture(float64, sampler, steps, spacing):
    """KS test at alpha = 0.001 with n = 2000 (critical D = 0.044), a second or two each.

    Discretisation error at these settings, measured as the KS distance of n = 100,000 samples (sampling noise
    about 0.004; linear schedule): dpmpp_2m ~0.010, dpmpp_2m_sde ~0.010, churn ~0.015, a third of what the test can
    see or less; pc at 200 evaluations (100 levels) ~0.011-0.015 (n = 20,000, two seeds), 0.029 at 100;
    annealed_langevin at 1000 (199 levels of 5 Langevin steps from sigma^KE = 16, then one denoising step)
    0.008-0.013 (n = 50,000, two seeds), 0.011-0.016 at 501 (one seed failed here at n = 2000) and 0.026-0.027 at
    201, its finite steps leaving the right mode's weight short there (0.675 of 0.7): Langevin needs many more
    evaluations than the solvers for the same accuracy. Fewer
    steps would not do: dpmpp_2m_sde at 20 ~0.023, churn at 50 ~0.031, and with even-t spacing
    (the default, chosen on the digits model) the solvers are at 0.21 (2M) and 0.18 (SDE) at 20 steps and
    0.026 / 0.064 at 50, their long last lambda step into index 0 showing.
    """
    oracle = GaussianMixtureOracle(NoiseSchedule.from_name("linear", 1000), GaussianMixture(W, MEANS, STD))
    d = GaussianDiffusion(oracle.schedule)
    g = torch.Generator().manual_seed(21)
    x = sample(d, oracle, (2000, 1), sampler=sampler, steps=steps, spacing=spacing, clip_denoised=False, generator=g,
               noise=torch.randn(2000, 1, generator=g))
    assert stats.kstest(x[:, 0].numpy(), _mixture_cdf).pvalue > ALPHA


# ------------------------------------------------------------------ errors that name the fix
@pytest.mark.parametrize("kwargs,fix", [
    ({"sampler": "euler"}, "dpmpp_2m"),
    ({"sampler": "dpmpp_2m", "steps": 0}, "between 1 and T = 10"),
    ({"sampler": "churn", "steps": 11}, "between 1 and T = 10"),
    ({"sampler": "ddim", "eta": 1.5}, r"in \[0, 1\]"),
    ({"sampler": "ddim", "eta": -0.1}, r"in \[0, 1\]"),
    ({"sampler": "dpmpp_2m", "eta": 0.5}, "sampler='ddim'"),
    ({"sampler": "churn", "s_churn": -1.0}, "s_churn"),
    ({"sampler": "pc", "snr": 0.0}, "snr must be positive"),
    ({"sampler": "annealed_langevin", "step_ratio": 4.0}, r"in \(0, 4\)"),
    ({"sampler": "annealed_langevin", "steps": 5}, "steps >= 6"),
    ({"sampler": "dpmpp_2m", "spacing": "quadratic"}, "logsnr"),
])
def test_bad_arguments_name_the_fix(kwargs, fix):
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 10))
    with pytest.raises(ValueError, match=fix):
        sample(d, RecordingModel(), (1, 2), **kwargs)


def test_every_sampler_is_offered():
    assert set(NEW) <= set(SAMPLERS)


# ------------------------------------------------------------------ the registry
def test_every_sampler_is_bit_identical_to_the_reference():
    """The samplers' outputs as they were before they became one function each (make_sampler_reference.py)."""
    import importlib.util
    from pathlib import Path

    here = Path(__file__).parent
    spec = importlib.util.spec_from_file_location("make_sampler_reference", here / "make_sampler_reference.py")
    reference_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference_module)
    reference = torch.load(here / "data" / "samplers_reference.pt", weights_only=True)
    now = reference_module.outputs()
    added_since = {"pc", "annealed_langevin"}  # samplers that did not exist when the reference was written
    assert set(now) == set(reference)
    assert {case["sampler"] for case in reference_module.CASES.values()} == set(SAMPLERS) - added_since
    for label in reference:
        assert torch.equal(now[label], reference[label]), f"{label} changed"


def test_the_registry_holds_one_function_per_sampler_with_one_signature():
    import inspect

    from ddpm_lite.sampling import SamplerName, sampler_options
    from typing import get_args

    assert tuple(SAMPLERS) == get_args(SamplerName)
    for name, fn in SAMPLERS.items():
        parameters = inspect.signature(fn).parameters
        assert list(parameters)[:4] == ["diffusion", "model", "x", "timesteps"], name
        assert {"clip_denoised", "generator"} <= set(parameters), name
        assert inspect.isgeneratorfunction(fn), name
    assert {name: sampler_options(name) for name in SAMPLERS} == {
        "ddpm": {}, "ddim": {"eta": 0.0}, "dpmpp_2m": {}, "dpmpp_2m_sde": {}, "churn": {"s_churn": 40.0},
        "pc": {"snr": 0.16}, "annealed_langevin": {"step_ratio": 1.0}}


def test_pc_spends_its_budget_of_evaluations():
    """1 + PC_CORRECTOR_STEPS evaluations per level but the last: a budget of 9 is 5 levels, 9 calls."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 50))
    model = RecordingModel()
    sample(d, model, (3, 2), sampler="pc", steps=9, generator=torch.Generator().manual_seed(0))
    assert len(sampler_timesteps(d, "pc", 9)) == 5 and len(model.calls) == 9


def test_annealed_langevin_spends_its_budget_from_its_top_level():
    """ANNEALED_STEPS_PER_LEVEL evaluations per level and one to denoise: a budget of 21 is 4 levels, 21 calls,
    the highest at the last index whose sigma^KE is at most ANNEALED_SIGMA_MAX."""
    from ddpm_lite.sampling import ANNEALED_SIGMA_MAX, ANNEALED_STEPS_PER_LEVEL

    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 200))
    model = RecordingModel()
    sample(d, model, (3, 2), sampler="annealed_langevin", steps=21, generator=torch.Generator().manual_seed(0))
    levels = sampler_timesteps(d, "annealed_langevin", 21)
    sigma = d.schedule.noise_level
    assert ANNEALED_STEPS_PER_LEVEL == 5 and len(levels) == 4 and len(model.calls) == 21
    assert levels[0] == 0 and sigma[levels[-1]] <= ANNEALED_SIGMA_MAX < sigma[levels[-1] + 1]


@pytest.mark.parametrize("kwargs,fix", [
    ({"sampler": "ddpm", "s_churn": 10.0}, "sampler='churn'"),
    ({"sampler": "ddpm", "eta": 0.0}, "sampler='ddim'"),
])
def test_an_option_of_another_sampler_names_it(kwargs, fix):
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 10))
    with pytest.raises(ValueError, match=fix):
        sample(d, RecordingModel(), (1, 2), **kwargs)


def test_an_option_of_no_sampler_is_a_type_error():
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 10))
    with pytest.raises(TypeError, match="unknown sampling option 'etta'"):
        sample(d, RecordingModel(), (1, 2), sampler="ddim", etta=0.5)
