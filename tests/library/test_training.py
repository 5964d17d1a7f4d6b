"""Training (Algorithm 1): exact resume, the EMA formula, safe checkpoints, and a loss that goes down."""
import json
import os
import threading
import time
from dataclasses import replace

import pytest
import torch

from ddpm_lite.diffusion import DiffusionConfig
from ddpm_lite._io import save_atomic
from ddpm_lite.checkpoints import CHECKPOINT_NAME, LOG_NAME, load_checkpoint, read_log
from ddpm_lite.training import NUM_T_BINS, TrainConfig, train
from ddpm_lite.unet import UNet, UNetConfig

# A tiny U-Net (a few thousand weights) with dropout, so that resuming must also restore the global RNG.
TINY = UNetConfig(base_channels=8, channel_mult=(1,), attention_resolutions=(), num_heads=1, dropout=0.1)
SHORT = DiffusionConfig(num_timesteps=100, data_bins=17)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig(**{"batch_size": 16, "warmup_steps": 4, "log_every": 2, "checkpoint_every": 3,
                          "device": "cpu", **changes})


def run(out_dir=None, resume=False, **changes):
    return train(TINY, SHORT, tiny_config(**changes), out_dir=out_dir, resume=resume, progress=False)


def state(path) -> dict:
    return torch.load(path / CHECKPOINT_NAME, weights_only=True)


def assert_state_dicts_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_is_bit_identical(tmp_path):
    """N steps straight == N/2 steps, stop, resume for N/2: weights, EMA and optimizer state, bit for bit."""
    straight = run(tmp_path / "straight", steps=8)
    run(tmp_path / "halves", steps=4)
    resumed = run(tmp_path / "halves", resume=True, steps=8)
    assert resumed.step == straight.step == 8
    assert_state_dicts_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert_state_dicts_equal(straight.ema_model.state_dict(), resumed.ema_model.state_dict())
    a, b = state(tmp_path / "straight"), state(tmp_path / "halves")
    for name in ("model", "ema"):
        assert_state_dicts_equal(a[name], b[name])
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert torch.equal(a["rng"][0]["generator"], b["rng"][0]["generator"])
    # The log of the resumed run continues the first half's: the same steps and (bit-identical) losses.
    strip = lambda records: [{k: r[k] for k in ("step", "loss", "lr", "loss_by_t")} for r in records]  # noqa: E731
    assert strip(read_log(tmp_path / "halves")) == strip(read_log(tmp_path / "straight"))


def test_a_different_seed_trains_differently(tmp_path):
    """Guards the resume test against passing trivially (e.g. if training changed nothing)."""
    a, b = run(steps=3), run(steps=3, seed=1)
    assert not torch.equal(a.model.input_conv.weight, b.model.input_conv.weight)


def test_ema_is_torch_averaged_model_formula(tmp_path):
    """After step 1 the EMA is a copy of the weights w1; after step 2 it is decay * w1 + (1 - decay) * w2."""
    decay = 0.9
    run(tmp_path, steps=1, ema_decay=decay)
    w1 = state(tmp_path)["model"]
    assert_state_dicts_equal(state(tmp_path)["ema"], w1)
    run(tmp_path, resume=True, steps=2, ema_decay=decay)
    after = state(tmp_path)
    w2, ema = after["model"], after["ema"]
    assert after["ema_num_averaged"] == 2
    changed = 0
    for name in w1:
        torch.testing.assert_close(ema[name], decay * w1[name] + (1 - decay) * w2[name], rtol=0, atol=1e-7)
        changed += not torch.equal(ema[name], w2[name])
    assert changed > 0  # the EMA is not the raw weights


def test_checkpoint_holds_plain_data_and_loads_with_weights_only(tmp_path):
    result = run(tmp_path, steps=2)
    checkpoint = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)  # raises if it pickled any class
    assert checkpoint["step"] == 2 and checkpoint["world_size"] == 1
    assert isinstance(checkpoint["model_config"], dict) and isinstance(checkpoint["train_config"], dict)
    assert checkpoint["diffusion_config"]["num_timesteps"] == 100
    model, diffusion, configs = load_checkpoint(tmp_path)
    assert isinstance(model, UNet) and not model.training
    assert configs["model_config"] == TINY and configs["diffusion_config"] == SHORT and configs["step"] == 2
    assert diffusion.num_timesteps == 100
    assert_state_dicts_equal(model.state_dict(), result.ema_model.state_dict())
    raw, _, _ = load_checkpoint(tmp_path / CHECKPOINT_NAME, ema=False)
    assert_state_dicts_equal(raw.state_dict(), result.model.state_dict())


def test_writes_leave_no_temporary_files(tmp_path):
    run(tmp_path, steps=7)  # checkpoints at steps 3, 6 and 7
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME, LOG_NAME]


def test_a_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "file.pt"
    save_atomic({"a": torch.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_atomic({"a": lambda: None}, path)  # a lambda cannot be pickled: the write fails half-way
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["file.pt"]


def test_refuses_to_overwrite_a_run(tmp_path):
    run(tmp_path, steps=2)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes(), (tmp_path / LOG_NAME).read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        run(tmp_path, steps=2)
    assert ((tmp_path / CHECKPOINT_NAME).read_bytes(), (tmp_path / LOG_NAME).read_bytes()) == before


def test_resume_needs_a_checkpoint_and_the_same_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run(tmp_path, resume=True, steps=2)
    run(tmp_path, steps=2)
    with pytest.raises(ValueError, match="lr"):
        run(tmp_path, resume=True, steps=4, lr=1e-4)
    with pytest.raises(ValueError, match="diffusion config differs"):
        train(TINY, DiffusionConfig(num_timesteps=50), tiny_config(steps=4), out_dir=tmp_path, resume=True,
              progress=False)


def test_loss_decreases_on_digits(tmp_path):
    result = run(tmp_path, steps=100, log_every=1, lr=3e-3, warmup_steps=10, checkpoint_every=1000)
    losses = [record["loss"] for record in result.history]
    assert len(losses) == 100
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    # At initialisation the U-Net outputs zero, so L_simple = E||eps||^2 / D = 1; a working loop goes well below.
    assert first > 0.8
    assert last < 0.5 * first, (first, last)
    assert read_log(tmp_path) == result.history  # log.jsonl holds exactly the history


def test_log_records(tmp_path):
    result = run(tmp_path, steps=5, log_every=2)
    records = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 5]  # every log_every steps, and the last one
    for record in records:
        assert set(record) == {"step", "loss", "lr", "elapsed", "images_per_s", "loss_by_t", "world_size"}
        assert len(record["loss_by_t"]) == NUM_T_BINS and record["images_per_s"] > 0
    lrs = [r["lr"] for r in records]
    assert lrs == sorted(lrs) and lrs[-1] == pytest.approx(2e-3)  # linear warm-up over 4 steps, then constant
    assert result.history == records


def test_time_budget_stops_training(tmp_path):
    result = run(tmp_path, steps=None, time_budget=0.5, log_every=1000)
    assert result.step >= 1
    assert result.history[-1]["elapsed"] >= 0.5
    assert state(tmp_path)["step"] == result.step


@pytest.mark.parametrize("changes, match", [
    ({"steps": None}, "steps, time_budget"),
    ({"steps": 0}, "steps"),
    ({"dataset": "faces"}, "dataset .faces. is not one of"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"batch_size": 0}, "batch_size"),
])
def test_train_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"steps": 10, **changes})


def test_model_must_fit_the_dataset():
    with pytest.raises(ValueError, match="expects"):
        train(replace(TINY, image_size=16), SHORT, tiny_config(steps=1), progress=False)


# ---------------------------------------------------------------------------------------------- pretrained cache
@pytest.fixture
def tiny_pretrained(monkeypatch):
    """load_pretrained_digits with the tiny model (3 steps), counting how often it trains."""
    from ddpm_lite.book import pretrained

    monkeypatch.setattr(pretrained, "pretrained_digits_configs", lambda device=None, conditional=False: (TINY, SHORT, tiny_config(steps=3)))
    calls = []
    real_train = pretrained.train

    def counting_train(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)  # widen the window in which a second process could start training too
        return real_train(*args, **kwargs)

    monkeypatch.setattr(pretrained, "train", counting_train)
    return pretrained, calls


def test_pretrained_trains_once_then_loads_from_the_cache(tmp_path, tiny_pretrained, monkeypatch):
    pretrained, calls = tiny_pretrained
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model, diffusion = pretrained.load_pretrained_digits(cache_dir=tmp_path)
    assert torch.equal(torch.rand(3), expected)  # training left the caller's random state alone
    assert calls == [1] and not model.training and diffusion.num_timesteps == 100
    again, _ = pretrained.load_pretrained_digits(cache_dir=tmp_path)
    assert calls == [1]  # loaded, not retrained
    assert_state_dicts_equal(model.state_dict(), again.state_dict())
    suffixes = sorted(name.split(".", 1)[1] for name in os.listdir(tmp_path / "pretrained"))
    assert suffixes == ["lock", "log.jsonl", "pt"]  # no temporary files left behind
    assert [r["step"] for r in pretrained.pretrained_digits_log(tmp_path)][-1] == 3
    # Another config is another cache entry.
    monkeypatch.setattr(pretrained, "pretrained_digits_configs", lambda device=None, conditional=False: (TINY, SHORT, tiny_config(steps=4)))
    pretrained.load_pretrained_digits(cache_dir=tmp_path)
    assert calls == [1, 1]
    monkeypatch.setenv("DDPM_LITE_CACHE", str(tmp_path / "elsewhere"))
    assert pretrained.pretrained_digits_path().parent == tmp_path / "elsewhere" / "pretrained"


def test_pretrained_cache_is_trained_once_by_concurrent_callers(tmp_path, tiny_pretrained):
    """Two callers at once (threads here; the file lock works the same between processes): one trains."""
    pretrained, calls = tiny_pretrained
    barrier = threading.Barrier(2)
    results = []

    def load():
        barrier.wait()
        results.append(pretrained.load_pretrained_digits(cache_dir=tmp_path)[0])

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and len(results) == 2
    assert_state_dicts_equal(results[0].state_dict(), results[1].state_dict())


def test_a_respaced_diffusion_is_for_sampling_not_training():
    from ddpm_lite.diffusion import GaussianDiffusion
    from ddpm_lite.sampling import respace

    short = respace(GaussianDiffusion.from_config(SHORT), [0, 49, 99])
    with pytest.raises(ValueError, match="respaced to 3 of its steps.*full chain"):
        train(TINY, short, tiny_config(steps=1), progress=False)
