"""benchmarks/bench_samplers.py: the chapter's quality-versus-evaluations function, on a tiny stand-in model."""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from ddpm_lite import GaussianDiffusion, NoiseSchedule
from ddpm_lite.sampling import sampler_timesteps

_spec = importlib.util.spec_from_file_location(
    "bench_samplers", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_samplers.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def shrink(x, t):
    """A stand-in eps-predictor: (B, 1, 8, 8) -> (B, 1, 8, 8)."""
    return 0.5 * x


@pytest.fixture
def diffusion():
    return GaussianDiffusion(NoiseSchedule.from_name("linear", 50))


def test_every_sampler_starts_from_the_same_x_T(diffusion, one_thread):
    """One step of DDIM (eta = 0) and of DPM-Solver++ both return x0_theta(x_T, T): equal only for the same x_T."""
    ddim, nfe_ddim = bench.draw(shrink, diffusion, {"sampler": "ddim"}, 1, 10, seed=3, batch_size=4)
    dpm, nfe_dpm = bench.draw(shrink, diffusion, {"sampler": "dpmpp_2m"}, 1, 10, seed=3, batch_size=4)
    assert ddim.shape == (10, 1, 8, 8) and nfe_ddim == nfe_dpm == 1
    assert_close(ddim, dpm, rtol=0, atol=1e-6)
    other, _ = bench.draw(shrink, diffusion, {"sampler": "ddim"}, 1, 10, seed=4, batch_size=4)
    assert not torch.equal(ddim, other)


def test_quality_vs_nfe_records(diffusion, one_thread):
    samplers = {"ddpm": {"sampler": "ddpm"}, "churn": {"sampler": "churn"}}
    result = bench.quality_vs_nfe(shrink, diffusion, samplers, nfes=(4, 7), n=12, seeds=(0, 1), batch_size=5,
                                  reference_seeds=(0,))
    assert [(r["sampler"], r["nfe_budget"]) for r in result["records"]] == [
        ("ddpm", 4), ("churn", 4), ("ddpm", 7), ("churn", 7)]
    for r in result["records"]:
        levels = sampler_timesteps(diffusion, r["options"]["sampler"], r["nfe_budget"])
        assert r["nfe"] == (2 * len(levels) - 2 if r["sampler"] == "churn" else len(levels)) <= r["nfe_budget"]
        assert len(r["fd"]) == 2 and r["fd_sd"] is not None and r["fd_mean"] >= 0
    assert result["reference"]["nfe"] == 50 and len(result["reference"]["fd"]) == 1 and result["floor"] > 0
    goal = result["goal"]
    assert goal["threshold"] == pytest.approx(1.25 * result["reference"]["fd_mean"])
    assert set(goal["at_goal_nfe"]) == set()  # no record at 20 NFE in this run
    table = bench.markdown_table(result)
    assert table.count("\n| ") == 2 and "churn" in table and "(6)" in table  # churn spends 6 of 7: four levels


def test_goal_summary_breaks_ties_by_fd():
    """Two samplers meet the goal at the same evaluations: the lower FD is named, not the first label."""
    record = lambda label, nfe, fd: {"sampler": label, "nfe_budget": nfe, "nfe": nfe, "fd_mean": fd}
    result = {"reference": {"fd_mean": 10.0},
              "records": [record("churn", 10, 12.0), record("dpmpp_2m", 10, 11.0), record("ddpm", 20, 9.0),
                          record("ddim", 5, 40.0)]}
    goal = bench.goal_summary(result)
    assert goal["threshold"] == pytest.approx(12.5)
    assert goal["fewest"] == ["dpmpp_2m", 10] and goal["met_at_goal_nfe"] == ["ddpm"]
