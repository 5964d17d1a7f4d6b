"""The `ddpm-lite` command, run as `python -m ddpm_lite` in a subprocess, as users and benchmarks run it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_lite.cli import main

ROOT = Path(__file__).resolve().parents[1]


def ddpm_lite(*args, cwd, module=("-m", "ddpm_lite"), timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 5-step run of the default digits model, shared by the sampling tests."""
    work = tmp_path_factory.mktemp("cli")
    done = ddpm_lite("train", "--dataset", "digits", "--steps", 5, "--batch-size", 8, "--out", "run",
                     "--no-progress", cwd=work)
    assert done.returncode == 0, done.stderr
    return work


def test_train_writes_a_checkpoint_and_a_log(trained):
    checkpoint = torch.load(trained / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 5 and checkpoint["train_config"]["batch_size"] == 8
    records = [json.loads(line) for line in (trained / "run" / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 5


def test_sample_npy(trained):
    done = ddpm_lite("sample", "--checkpoint", "run", "--num", 4, "--sampler", "ddim", "--steps", 10,
                     "--seed", 1, "--out", "samples.npy", "--no-progress", cwd=trained)
    assert done.returncode == 0, done.stderr
    x = np.load(trained / "samples.npy")
    assert x.shape == (4, 1, 8, 8) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "dpmpp_2m_sde", "churn"])
def test_sample_with_the_new_samplers(trained, sampler, monkeypatch, capsys):
    """In-process, a few evaluations each: every name in --sampler reaches the sampler and writes images."""
    monkeypatch.chdir(trained)
    assert main(["sample", "--checkpoint", "run", "--num", "3", "--sampler", sampler, "--steps", "4", "--seed", "2",
                 "--out", f"{sampler}.npy", "--no-progress", "--device", "cpu"]) == 0
    x = np.load(trained / f"{sampler}.npy")
    assert x.shape == (3, 1, 8, 8) and np.isfinite(x).all() and f"({sampler}, 4 steps)" in capsys.readouterr().out


def test_sample_png(trained):
    done = ddpm_lite("sample", "--checkpoint", "run/checkpoint.pt", "--num", 4, "--steps", 20, "--out", "grid.png",
                     "--no-progress", cwd=trained)
    assert done.returncode == 0, done.stderr
    assert (trained / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, fix", [
    (["train", "--dataset", "faces", "--steps", "1", "--out", "x"], "--dataset"),
    (["train", "--steps", "-3", "--out", "x"], "--steps"),
    (["train", "--steps", "two", "--out", "x"], "--steps"),
    (["train", "--out", "x"], "--steps N, --time-budget"),
    (["train", "--steps", "1"], "--out"),
    (["train", "--steps", "1", "--out", "run"], "--resume"),  # refuses to overwrite the trained run
    (["train", "--steps", "1", "--out", "nothing_here", "--resume"], "drop --resume"),
    (["train", "--steps", "9", "--out", "run", "--resume", "--lr", "0.1"], "lr"),
    (["train", "--dataset", "mnist", "--steps", "1", "--out", "m"], "--dataset digits"),  # not on disk, offline
    (["train", "--time-budget", "0", "--out", "x"], "--time-budget"),
    (["train", "--steps", "1", "--out", "x", "--bogus"], "--bogus"),
    (["sample", "--checkpoint", "missing", "--out", "a.npy"], "ddpm-lite train"),
    (["sample", "--checkpoint", "run", "--out", "a.jpg"], ".npy or .png"),
    (["sample", "--checkpoint", "run", "--steps", "1001", "--out", "a.npy"], "1 to 1000"),
    (["sample", "--checkpoint", "run", "--eta", "0.5", "--out", "a.npy"], "--sampler ddim"),
    (["sample", "--checkpoint", "run", "--sampler", "churn", "--eta", "0.5", "--out", "a.npy"], "drop it"),
    (["sample", "--checkpoint", "run", "--sampler", "ddim", "--eta", "1.5", "--out", "a.npy"], "use 0 to 1"),
    (["sample", "--checkpoint", "run", "--num", "0", "--out", "a.npy"], "--num"),
    (["sample", "--checkpoint", "run", "--sampler", "euler", "--out", "a.npy"], "ddim"),
    ([], "train"),
])
def test_bad_arguments_give_one_line_and_exit_2(trained, args, fix, monkeypatch, capsys):
    """In-process (main(argv) is what the console script calls), to spare a Python start per case."""
    monkeypatch.chdir(trained)
    monkeypatch.setenv("DDPM_LITE_DATA", str(trained / "no_data_here"))
    assert main(args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm-lite: error: "), err
    assert fix in lines[0]
    assert out == ""


@pytest.mark.parametrize("args", [["train", "--dataset", "faces", "--steps", "1", "--out", "x"],
                                  ["sample", "--checkpoint", "missing", "--out", "a.npy"]])
def test_bad_arguments_through_python_dash_m(tmp_path, args):
    done = ddpm_lite(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("ddpm-lite: error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_run_survived_the_bad_arguments(trained):
    """Refused commands (overwrite, resume with another lr) changed nothing."""
    assert torch.load(trained / "run" / "checkpoint.pt", weights_only=True)["step"] == 5


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0 and "--time-budget" in capsys.readouterr().out


def test_torchrun_two_processes_on_cpu(tmp_path):
    """DistributedDataParallel over gloo: both ranks train on different batches and rank 0 writes.

    At the end train() checks that the ranks hold identical weights (and fails otherwise).
    """
    done = ddpm_lite("--standalone", "--nproc_per_node", 2, "-m", "ddpm_lite", "train", "--dataset", "digits",
                     "--steps", 3, "--batch-size", 8, "--log-every", 1, "--out", "ddp", "--no-progress",
                     module=("-m", "torch.distributed.run"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 3 and checkpoint["world_size"] == 2
    ranks = checkpoint["rng"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["generator"], ranks[1]["generator"])  # seed + rank
    records = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # written once, by rank 0 alone
    assert all(r["world_size"] == 2 for r in records)
    assert "trained to step 3" in done.stdout and done.stdout.count("trained to step") == 1
