"""Thread settings: the "auto" rule, the /proc/stat reading, set/restore, and --threads / TrainConfig.threads.

What each setting costs in time is measured in benchmarks/bench_threads.py, never here.
"""
import pytest
import torch

import ddpm_lite as dl
from ddpm_lite import _threads
from ddpm_lite.cli import main


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "two", "Auto"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be 'auto' or a whole number >= 1"):
        dl.set_threads(bad)
    with pytest.raises(ValueError, match="threads must be"):
        dl.TrainConfig(steps=1, threads=bad)


def test_set_threads_and_num_threads_restore():
    torch.set_num_threads(2)
    assert dl.set_threads(1) == 1 == torch.get_num_threads()
    assert dl.set_threads(None) == 1  # None leaves the setting alone
    with dl.num_threads(2) as n:
        assert n == 2 == torch.get_num_threads()
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("busy, default, expected", [
    (0.0, 2, 2),  # idle: torch's default, as before
    (1.0, 2, 1),  # one core busy: one thread
    (0.6, 2, 1),  # less than half a core free counts as none
    (0.4, 2, 2),  # more than half a core free counts as one
    (2.0, 2, 1),  # every core busy: still one
    (0.0, 1, 1),  # never above torch's default (OMP_NUM_THREADS=1)
    (None, 2, 2),  # no counters (not Linux): torch's default
])
def test_auto_counts_the_free_cores(monkeypatch, busy, default, expected):
    monkeypatch.setattr(_threads, "busy_cores", lambda seconds=0.2: busy)
    monkeypatch.setattr(_threads, "TORCH_DEFAULT", default)
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert _threads.auto_threads() == expected


STAT = """cpu  300 0 100 1500 100 0 0 0 0 0
cpu0 {a} 0 0 {ia} 0 0 0 0 0 0
cpu1 {b} 0 0 {ib} 0 0 0 0 0 0
cpu2 999 0 0 1 0 0 0 0 0 0
intr 12345
"""


def test_cpu_times_reads_the_cores_of_this_process(tmp_path):
    path = tmp_path / "stat"
    path.write_text(STAT.format(a=30, ia=70, b=5, ib=95))
    assert _threads._cpu_times({0, 1}, str(path)) == (35.0, 200.0)  # cpu2 is not ours; the total line is skipped
    assert _threads._cpu_times({0, 1}, str(tmp_path / "missing")) is None


def test_busy_cores_subtracts_this_process(monkeypatch):
    """Other programs' load = all busy time on our cores minus our own CPU time, over the interval."""
    readings = iter([(100.0, 1000.0), (200.0, 1200.0)])  # half the jiffies busy on 2 cores: 1.0 core busy
    clock = iter([0.0, 0.05])  # of which this process used 0.05 s of the 0.2 s: 0.25 core
    monkeypatch.setattr(_threads, "_cpu_times", lambda cpus: next(readings))
    monkeypatch.setattr(_threads.time, "process_time", lambda: next(clock))
    monkeypatch.setattr(_threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert _threads.busy_cores(0.2) == pytest.approx(0.75, abs=1e-12)


def test_busy_cores_reads_this_machine():
    busy = _threads.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= len(_threads.os.sched_getaffinity(0)) + 0.5


def test_train_uses_its_threads_and_restores_them(monkeypatch):
    seen = []
    real_step = __import__("ddpm_lite.training", fromlist=["train_step"]).train_step

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_step(*args, **kwargs)

    monkeypatch.setattr("ddpm_lite.training.train_step", spy)
    torch.set_num_threads(2)
    data = torch.rand(16, 1, 8, 8) * 2 - 1
    dl.train(dl.UNetConfig(base_channels=8, num_heads=1), None, dl.TrainConfig(steps=2, batch_size=4, threads=1),
             data=data, progress=False)
    assert seen == [1, 1]
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("command", ["sample", "eval", "reconstruct"])
def test_the_commands_refuse_a_bad_thread_count(command, capsys):
    assert main([command, "--checkpoint", "x", "--out", "y.npy", "--threads", "0"] if command == "sample" else
                [command, "--threads", "none"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_train_refuses_a_bad_thread_count(tmp_path, capsys):
    assert main(["train", "--steps", "1", "--out", str(tmp_path / "run"), "--threads", "-2"]) == 2
    assert "expected auto or a whole number >= 1" in capsys.readouterr().err


def test_sample_and_bits_per_dim_run_with_the_threads_asked_for_and_restore_the_setting(monkeypatch):
    """threads= on dl.sample and dl.bits_per_dim: set for the call (seen by the model), then put back."""
    diffusion = dl.GaussianDiffusion.from_config(dl.DiffusionConfig(num_timesteps=10))
    seen = []

    def model(x, t):
        seen.append(torch.get_num_threads())
        return torch.zeros_like(x)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # so that threads=1 is a change to see, on any machine
    before = torch.get_num_threads()
    images = torch.zeros(2, 1, 2, 2)
    try:
        _run_with_threads(diffusion, model, images, seen, before)
    finally:
        torch.set_num_threads(previous)


def _run_with_threads(diffusion, model, images, seen, before):
    dl.sample(diffusion, model, (2, 1, 2, 2), sampler="ddpm", steps=3, threads=1)
    dl.bits_per_dim(diffusion, model, images, threads=1)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    seen.clear()
    dl.sample(diffusion, model, (2, 1, 2, 2), sampler="ddpm", steps=3)  # None: torch's setting untouched
    assert set(seen) == {before}
    with pytest.raises(ValueError, match="threads must be"):
        dl.sample(diffusion, model, (2, 1, 2, 2), threads=0)
