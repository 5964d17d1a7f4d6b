"""Samplers: they reach the last step, Algorithm 2 holds line by line, respacing keeps alpha_bar."""
import pytest
import torch
from torch.testing import assert_close

from ddpm_lite import GaussianDiffusion, NoiseSchedule, respace, sample, sample_trajectory, space_timesteps
from ddpm_lite.sampling import (
    DEFAULT_SAMPLER, DEFAULT_STEPS, SpacedModel, default_steps, p_sample, sampler_timesteps,
)


class RecordingModel:
    """A fixed, t-dependent eps-predictor that records every t it is called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t):
        self.calls.append(t.clone())
        return 0.1 * x * (1 + t.float().reshape(-1, *[1] * (x.ndim - 1)) / 1000)


@pytest.mark.parametrize("sampler,steps,expected_calls", [("ddpm", None, 100), ("ddpm", 10, 10), ("ddim", 7, 7)])
def test_samplers_walk_from_T_to_the_last_step(sampler, steps, expected_calls):
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100))
    model = RecordingModel()
    x = sample(d, model, (3, 2), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 2) and torch.isfinite(x).all()
    seen = [int(t[0]) for t in model.calls]
    assert len(seen) == expected_calls
    assert seen[0] == 99 and seen[-1] == 0  # starts at the paper's t = T, ends at t = 1
    assert seen == sorted(seen, reverse=True)


def test_one_ddpm_step_is_algorithm_2(float64):
    """x_{t-1} = (x_t - (1 - alpha_t) / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t) + sigma_t z."""
    s = NoiseSchedule.from_name("linear", 1000)
    d = GaussianDiffusion(s, model_var_type="fixed_large")
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 1, 3, 3, generator=g)
    t = torch.tensor([999, 500, 10, 1])
    model = RecordingModel()
    out = p_sample(d, model, x_t, t, clip_denoised=False, generator=torch.Generator().manual_seed(7))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))
    eps = model(x_t, t)
    a, ab, b = (v[t].reshape(-1, 1, 1, 1) for v in (s.alphas, s.alphas_cumprod, s.betas))
    expected = (x_t - (1 - a) / (1 - ab).sqrt() * eps) / a.sqrt() + b.sqrt() * z  # sigma_t^2 = beta_t
    assert_close(out["sample"], expected, rtol=0, atol=1e-12)


def test_last_step_adds_no_noise():
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100))
    x_t = torch.randn(5, 2)
    t = torch.zeros(5, dtype=torch.long)
    a = p_sample(d, RecordingModel(), x_t, t, generator=torch.Generator().manual_seed(1))["sample"]
    b = p_sample(d, RecordingModel(), x_t, t, generator=torch.Generator().manual_seed(2))["sample"]
    assert_close(a, b, rtol=0, atol=0)


def test_space_timesteps_keeps_both_ends():
    assert space_timesteps(1000, 1000) == list(range(1000))
    steps = space_timesteps(1000, 50)
    assert len(steps) == 50 and steps[0] == 0 and steps[-1] == 999
    assert space_timesteps(10, 1) == [9]
    with pytest.raises(ValueError, match="between 1 and"):
        space_timesteps(10, 11)


def test_respacing_keeps_alpha_bar_at_the_kept_steps(float64):
    d = GaussianDiffusion(NoiseSchedule.from_name("cosine", 1000))
    kept = space_timesteps(1000, 25)
    spaced = respace(d, kept)
    assert spaced.num_timesteps == 25
    assert_close(spaced.schedule.alphas_cumprod, d.schedule.alphas_cumprod[kept], rtol=1e-10, atol=0)  # a product of 25 ratios
    full = respace(d, list(range(1000)))
    assert_close(full.schedule.betas, d.schedule.betas, rtol=1e-9, atol=0)
    model = RecordingModel()
    SpacedModel(model, torch.as_tensor(kept))(torch.zeros(2, 1), torch.tensor([0, 24]))
    assert model.calls[0].tolist() == [0, 999]


def test_a_respaced_diffusion_has_a_config_that_rebuilds_it():
    """respace records the kept steps in the config (dataclasses.replace), also through a second respacing."""
    from ddpm_lite import DiffusionConfig

    d = GaussianDiffusion.from_config(DiffusionConfig(schedule="cosine", num_timesteps=100, data_bins=17))
    kept = space_timesteps(100, 10)
    spaced = respace(d, kept)
    assert spaced.config == DiffusionConfig(schedule="cosine", num_timesteps=100, data_bins=17, timesteps=tuple(kept))
    rebuilt = GaussianDiffusion.from_config(spaced.config)
    assert torch.equal(rebuilt.schedule.betas, spaced.schedule.betas) and rebuilt.data_bins == 17
    # the betas of the old formula, bit for bit (the chapters' respaced samplers are unchanged)
    ab = d.schedule.alphas_cumprod[kept]
    assert torch.equal(spaced.schedule.betas, 1.0 - ab / torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]]))
    twice = respace(spaced, [0, 4, 9])  # indices of the respaced chain -> those of the original
    assert twice.config.timesteps == (kept[0], kept[4], kept[9])
    # absolute: 1 - beta' near t = T is a ratio of two small alpha_bar and keeps only their absolute precision
    assert_close(twice.schedule.alphas_cumprod, d.schedule.alphas_cumprod[[kept[0], kept[4], kept[9]]],
                 rtol=0, atol=1e-15)
    raw = GaussianDiffusion([0.1, 0.2, 0.3], model_var_type="fixed_large")  # no config: none after respacing
    assert respace(raw, [0, 2]).config is None and respace(raw, [0, 2]).model_var_type == "fixed_large"
    with pytest.raises(ValueError, match="rising"):
        respace(d, [5, 3])


def test_trajectory_shapes():
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100))
    traj = sample_trajectory(d, RecordingModel(), (3, 1, 4, 4), sampler="ddpm", every=25,
                             generator=torch.Generator().manual_seed(0))
    assert traj["timesteps"] == [99, 74, 49, 24, 0]
    assert traj["x_t"].shape == (5, 3, 1, 4, 4) and traj["pred_x_start"].shape == (5, 3, 1, 4, 4)
    assert_close(traj["x_t"][-1], traj["sample"])
    # by default: the default sampler's 20 levels, about ten of them kept (every second), and the last
    traj = sample_trajectory(d, RecordingModel(), (3, 2), generator=torch.Generator().manual_seed(0))
    levels = sampler_timesteps(d, DEFAULT_SAMPLER, None)[::-1]
    assert traj["timesteps"] == levels[::2] + [0] and traj["x_t"].shape == (11, 3, 2)
    with pytest.raises(ValueError, match="every must be a positive int"):
        sample_trajectory(d, RecordingModel(), (3, 2), every=0)


def test_one_default_sampler_and_its_default_budget():
    """sample() without sampler or steps is DEFAULT_SAMPLER with default_steps evaluations, the CLI's default;
    sampler="ddpm" without steps is Algorithm 2's whole chain."""
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100))
    assert DEFAULT_SAMPLER == "dpmpp_2m" and default_steps("dpmpp_2m", 100) == DEFAULT_STEPS == 20
    assert default_steps("ddpm", 100) == 100 and default_steps("churn", 10) == 10  # never more than T
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    model = RecordingModel()
    x = sample(d, model, (4, 2), noise=x_T)
    assert len(model.calls) == DEFAULT_STEPS
    assert torch.equal(x, sample(d, RecordingModel(), (4, 2), sampler="dpmpp_2m", steps=20, noise=x_T))
    # steps=None means the same budget everywhere: in sample() and in sampler_timesteps()
    for sampler in ("ddpm", "ddim", "dpmpp_2m", "churn"):
        assert sampler_timesteps(d, sampler, None) == sampler_timesteps(d, sampler, default_steps(sampler, 100))
    assert sampler_timesteps(d, "ddpm", None) == list(range(100))
    with pytest.raises(ValueError, match="ddpm.*ddim"):
        default_steps("euler", 100)
    with pytest.raises(ValueError, match="an int between 1 and T = 100"):
        sample(d, model, (4, 2), steps=True)


def test_progress_goes_through_the_one_progress_bar(capsys):
    """progress=True draws ddpm_lite._progress's bar: into a pipe (as here) a few lines, not one per step."""
    from ddpm_lite._progress import PIPE_LINES

    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 100))
    sample(d, RecordingModel(), (2, 2), sampler="ddpm", progress=True)
    err = capsys.readouterr().err
    assert "ddpm sampling" in err and "100/100" in err
    assert err.count("ddpm sampling") <= PIPE_LINES + 2
    sample(d, RecordingModel(), (2, 2), sampler="ddpm")
    assert capsys.readouterr().err == ""


def test_unknown_sampler_names_the_options():
    d = GaussianDiffusion(NoiseSchedule.from_name("linear", 10))
    with pytest.raises(ValueError, match="ddpm.*ddim"):
        sample(d, RecordingModel(), (1, 2), sampler="euler")


def test_every_draw_from_an_injected_generator_goes_through_one_helper():
    """A CPU generator cannot fill a CUDA tensor, so ddpm_lite draws on the generator's device and moves the result
    (ddpm_lite._random). No other module passes a generator and a device to one of torch's samplers at once."""
    import ast
    from pathlib import Path

    import ddpm_lite

    package = Path(ddpm_lite.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("rand")
                    and {"generator", "device"} <= {k.arg for k in node.keywords} and path.name != "_random.py"):
                found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert found == []


def test_the_random_helper_draws_what_torch_draws_from_the_same_seed():
    from ddpm_lite._random import randint, randn

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(randn((3, 4), g1, "cpu", torch.float64), torch.randn((3, 4), generator=g2, dtype=torch.float64))
    assert torch.equal(randint(0, 10, (7,), g1, "cpu"), torch.randint(0, 10, (7,), generator=g2))
    assert randn((2,), None, "cpu").shape == (2,) and randn((2,), g1).device == g1.device
