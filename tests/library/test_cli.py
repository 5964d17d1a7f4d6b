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
from ddpm_lite.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """A 2-step class-conditional digits run, "c"."""
    work = tmp_path_factory.mktemp("conditional")
    done = ddpm_lite("train", "--dataset", "digits", "--steps", 2, "--batch-size", 8, "--conditional",
                     "--label-dropout", "0.2", "--out", "c", "--no-progress", cwd=work)
    assert done.returncode == 0, done.stderr
    return work


def test_train_conditional_writes_a_class_conditional_checkpoint(conditional):
    checkpoint = torch.load(conditional / "c" / "checkpoint.pt", weights_only=True)
    assert checkpoint["model_config"]["num_classes"] == 10 and "class_embed.weight" in checkpoint["ema"]
    assert checkpoint["train_config"]["conditional"] and checkpoint["train_config"]["label_dropout"] == 0.2


def test_sample_one_class_with_guidance_and_every_class_in_a_grid(conditional, monkeypatch, capsys):
    monkeypatch.chdir(conditional)
    assert main(["sample", "--checkpoint", "c", "--num", "3", "--steps", "3", "--class", "7", "--guidance", "2",
                 "--out", "sevens.npy", "--no-progress"]) == 0
    assert np.load(conditional / "sevens.npy").shape == (3, 1, 8, 8)
    assert "class 7, guidance 2" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", "c", "--num", "20", "--steps", "2", "--class", "all", "--out",
                 "grid.png", "--no-progress"]) == 0
    assert (conditional / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_classes_reads_each_class(conditional, trained, monkeypatch, capsys):
    import re

    monkeypatch.chdir(conditional)
    assert main(["eval", "--checkpoint", "c", "--metric", "classes", "--num", "3", "--steps", "2", "--guidance",
                 "1", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()
    assert len(re.findall(r"\b\d:\d+%", line)) == 10 and "floor at n = 30" in line and "guidance 1" in line
    monkeypatch.chdir(trained)  # an unconditional checkpoint: one line naming the fix
    assert main(["eval", "--checkpoint", "run", "--metric", "classes"]) == 2
    assert "--conditional" in capsys.readouterr().err


@pytest.mark.parametrize("args, fix", [
    (["--checkpoint", "c", "--class", "12"], "0 ... 9"),
    (["--checkpoint", "c", "--class", "seven"], "0 ... 9"),
    (["--checkpoint", "c", "--class", "all", "--num", "15"], "divisible by 10"),
    (["--checkpoint", "c", "--guidance", "1"], "give --class"),
    (["--checkpoint", "c", "--class", "3", "--guidance", "-2"], ">= -1"),
    (["--checkpoint", "u", "--class", "3"], "unconditional"),
])
def test_bad_class_arguments_name_the_fix(conditional, trained, args, fix, monkeypatch, capsys):
    monkeypatch.chdir(conditional)
    if not (conditional / "u").exists():
        (conditional / "u").symlink_to(trained / "run")  # an unconditional run beside the conditional one
    assert main(["sample", *args, "--out", "x.npy", "--steps", "2"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fix in lines[0], lines
    assert not (conditional / "x.npy").exists()


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


def test_sample_default_steps(trained, monkeypatch, capsys):
    """Without --steps: the default sampler with DEFAULT_STEPS evaluations; ddpm with all T (Algorithm 2)."""
    from ddpm_lite.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS

    monkeypatch.chdir(trained)
    assert main(["sample", "--checkpoint", "run", "--num", "2", "--out", "default.npy", "--no-progress",
                 "--device", "cpu"]) == 0
    assert f"({DEFAULT_SAMPLER}, {DEFAULT_STEPS} steps)" in capsys.readouterr().out
    T = load_checkpoint("run")[1].num_timesteps
    assert main(["sample", "--checkpoint", "run", "--num", "1", "--sampler", "ddpm", "--out", "ddpm.npy",
                 "--no-progress", "--device", "cpu"]) == 0
    assert f"(ddpm, {T} steps)" in capsys.readouterr().out


def test_sample_png(trained):
    done = ddpm_lite("sample", "--checkpoint", "run/checkpoint.pt", "--num", 4, "--steps", 20, "--out", "grid.png",
                     "--no-progress", cwd=trained)
    assert done.returncode == 0, done.stderr
    assert (trained / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def inputs(trained):
    """Files for `reconstruct`: two held-out digits, a noisy copy, a mask, a 4x4 version, and bad ones."""
    from PIL import Image

    from ddpm_lite import load_dataset
    from ddpm_lite.reconstruction import SuperResolution

    x = load_dataset("digits", train=False)[:2]
    np.save(trained / "digits.npy", x.numpy())
    np.save(trained / "noisy.npy", (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).numpy())
    np.save(trained / "small.npy", SuperResolution(2).A(x).numpy())
    np.save(trained / "pixels.npy", ((x + 1) * 127.5).numpy())  # 0 ... 255: not scaled
    mask = np.ones((8, 8), dtype=np.float32)
    mask[:, 4:] = 0
    np.save(trained / "mask.npy", mask)
    np.save(trained / "mask7.npy", mask[:7, :7])
    Image.fromarray((mask * 255).astype("uint8")).save(trained / "mask.png")
    Image.fromarray(((x[0, 0].numpy() + 1) * 127.5).round().astype("uint8")).save(trained / "digit.png")
    (trained / "broken.npy").write_bytes(b"not an array")
    return x


@pytest.mark.parametrize("task, extra", [
    ("denoise", ["--input", "noisy.npy", "--sigma", "0.2"]),
    ("inpaint", ["--input", "digits.npy", "--mask", "mask.npy", "--method", "replace"]),
    ("inpaint", ["--input", "digit.png", "--mask", "mask.png", "--method", "repaint", "--jump", "2", "--resample", "2"]),
    ("inpaint", ["--input", "digits.npy", "--mask", "mask.npy", "--method", "ddnm"]),
    ("superres", ["--input", "small.npy", "--scale", "2"]),
    ("sdedit", ["--input", "digits.npy", "--t", "300"]),
], ids=["denoise", "inpaint-replace", "inpaint-repaint-png", "inpaint-ddnm", "superres", "sdedit"])
def test_reconstruct_tasks(trained, inputs, task, extra, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    assert main(["reconstruct", "--checkpoint", "run", "--task", task, *extra, "--steps", "6", "--out",
                 f"{task}.npy"]) == 0, capsys.readouterr().err
    out = np.load(trained / f"{task}.npy")
    n = 1 if "digit.png" in extra else 2
    assert out.shape == (n, 1, 8, 8) and np.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
    if task == "inpaint":  # the known left half is the input's (the PNG's grey levels: within rounding)
        known = np.load(trained / "digits.npy")[:n, :, :, :4]
        np.testing.assert_allclose(out[..., :4], known, rtol=0, atol=1 / 127.5 if n == 1 else 0)
    if task == "superres":  # the result averages back to the low-resolution input (ddnm stops its alternating
        # projections 1e-4 outside [-1, 1]; the command's clipping to [-1, 1] moves the averages by at most that)
        pooled = out.reshape(2, 1, 4, 2, 4, 2).mean(axis=(3, 5))
        np.testing.assert_allclose(pooled, np.load(trained / "small.npy"), rtol=0, atol=1e-4)


def test_reconstruct_png_output(trained, inputs, monkeypatch):
    monkeypatch.chdir(trained)
    assert main(["reconstruct", "--checkpoint", "run", "--task", "sdedit", "--input", "digits.npy", "--t", "10",
                 "--steps", "3", "--out", "sdedit.png"]) == 0
    assert (trained / "sdedit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_fd_prints_the_floor(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    assert main(["eval", "--checkpoint", "run", "--metric", "fd", "--num", "20", "--steps", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("FD ") and "held-out" in line and "floor at n = 20" in line


def test_eval_bpd_on_heldout_beside_the_uniform_reference(trained, monkeypatch, capsys):
    """The 5-step model's bound is printed beside log2(17) = 4.087, the uniform distribution over the 17 levels,
    with the verdict that the two numbers imply."""
    import math
    import re

    monkeypatch.chdir(trained)
    assert main(["eval", "--checkpoint", "run", "--metric", "bpd", "--num", "4", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("bits/dim ") and "4 test images of digits" in line
    bpd, uniform = float(line.split()[1]), float(re.search(r"17 grey levels scores ([0-9.]+)", line).group(1))
    assert uniform == round(math.log2(17), 3) and bpd > 0
    assert ("above it: the model is untrained, too small or broken" in line) == (bpd > uniform)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_eval_nll_is_the_odes_bits_per_dim_beside_the_uniform_reference(trained, monkeypatch, capsys, divergence):
    """--metric nll: the probability-flow ODE's likelihood in bits/dim with the bound's decoder, 3 Heun steps."""
    import re

    from ddpm_lite import load_checkpoint, load_dataset
    from ddpm_lite.evaluation import ode_bits_per_dim

    monkeypatch.chdir(trained)
    assert main(["eval", "--checkpoint", "run", "--metric", "nll", "--num", "3", "--ode-steps", "3", "--divergence",
                 divergence, "--no-progress", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("bits/dim ") and "3 test images of digits" in line and "probability-flow ODE" in line
    assert f"{divergence} divergence" in line and re.search(r"\(probability-flow ODE, \d+ evaluations", line)
    if divergence == "exact":  # the same number as the package's function, seed 0
        model, diffusion, _ = load_checkpoint(trained / "run", device="cpu")
        expected = ode_bits_per_dim(diffusion, model, load_dataset("digits", train=False)[:3],
                                    steps=3, generator=torch.Generator("cpu").manual_seed(0))
        assert float(line.split()[1]) == pytest.approx(expected["bpd"], abs=5e-4)


RECONSTRUCT = ["reconstruct", "--checkpoint", "run", "--out", "r.npy"]


@pytest.mark.parametrize("args, fix", [
    (RECONSTRUCT + ["--task", "inpaint", "--input", "digits.npy", "--mask", "mask7.npy"], "--mask"),
    (RECONSTRUCT + ["--task", "inpaint", "--input", "digits.npy"], "needs --mask"),
    (RECONSTRUCT + ["--task", "sdedit", "--input", "pixels.npy", "--t", "10"], "[-1, 1]"),
    (RECONSTRUCT + ["--task", "denoise", "--input", "noisy.npy", "--sigma", "0"], "--sigma"),
    (RECONSTRUCT + ["--task", "denoise", "--input", "noisy.npy", "--sigma", "-1"], "--sigma"),
    (RECONSTRUCT + ["--task", "denoise", "--input", "noisy.npy", "--sigma", "1e9"], "largest noise level"),
    (RECONSTRUCT + ["--task", "sdedit", "--input", "digits.npy", "--t", "1000"], "0 ... 999"),
    (RECONSTRUCT + ["--task", "sdedit", "--input", "digits.npy", "--t", "-1"], "--t"),
    (RECONSTRUCT + ["--task", "superres", "--input", "small.npy", "--scale", "3"], "does not divide"),
    (RECONSTRUCT + ["--task", "superres", "--input", "digits.npy", "--scale", "2"], "(1, 4, 4)"),
    (RECONSTRUCT + ["--task", "sdedit", "--input", "missing.npy", "--t", "3"], "no such file"),
    (RECONSTRUCT + ["--task", "sdedit", "--input", "broken.npy", "--t", "3"], "not a readable"),
    (RECONSTRUCT + ["--task", "sdedit", "--input", "digits.npy", "--t", "3", "--steps", "2000"], "1 to 1000"),
    (["reconstruct", "--checkpoint", "run", "--task", "sdedit", "--input", "digits.npy", "--t", "3", "--out", "r.jpg"],
     ".npy or .png"),
    (["reconstruct", "--checkpoint", "run", "--task", "sdedit", "--input", "digits.npy", "--t", "3", "--out", "run"],
     "is a directory"),
    (["eval", "--checkpoint", "run", "--metric", "fd", "--num", "5000"], "1437"),
    (["eval", "--checkpoint", "run", "--metric", "kl"], "--metric"),
    (["eval", "--checkpoint", "run", "--metric", "nll", "--ode-steps", "1000"], "--ode-steps must be below T"),
    (["eval", "--checkpoint", "run", "--metric", "nll", "--divergence", "trace"], "--divergence"),
    (["eval", "--checkpoint", "missing", "--metric", "bpd"], "ddpm-lite train"),
])
def test_bad_reconstruct_and_eval_arguments(trained, inputs, args, fix, monkeypatch, capsys):
    """Every refusal comes before any sampling starts (the output file is never written)."""
    monkeypatch.chdir(trained)
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm-lite: error: ") and fix in lines[0], lines
    assert not (trained / "r.npy").exists()


@pytest.mark.parametrize("args, fix", [
    (["train", "--dataset", "faces", "--steps", "1", "--out", "x"], "--dataset"),
    (["train", "--steps", "-3", "--out", "x"], "--steps"),
    (["train", "--steps", "1", "--conditional", "--label-dropout", "-0.1", "--out", "x"], "--label-dropout"),
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
    (["sample", "--checkpoint", "run", "--sampler", "ddim", "--eta", "1.5", "--out", "a.npy"], "<= 1"),
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


def test_training_into_a_pipe_prints_a_few_progress_lines(tmp_path):
    """stderr is a pipe here: 60 steps redraw the bar at most PIPE_LINES + 3 times, not once per step."""
    from ddpm_lite._progress import PIPE_LINES

    done = ddpm_lite("train", "--steps", 60, "--batch-size", 4, "--log-every", 10, "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    draws = done.stderr.count("/60 [")  # one per drawing of the bar, whatever separates them
    assert 2 <= draws <= PIPE_LINES + 3, done.stderr
    assert "60/60" in done.stderr
