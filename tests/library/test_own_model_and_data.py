"""Coursework: a student's own network and own images through the public API, and on the command line.

An MLP (not a U-Net) trained on a tensor, a Dataset, a DataLoader and a folder of PNGs; checkpointed, resumed bit
for bit, reloaded, sampled and scored; the MNIST test split from the offline copy; and the one-line errors.
"""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ddpm_lite as dl
from ddpm_lite.checkpoints import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
MNIST_ROOT = Path(os.environ.get("DDPM_LITE_MNIST_TEST", ROOT.parent / "shared" / "data" / "mnist"))
SHORT = dl.DiffusionConfig(num_timesteps=50, data_bins=17)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class MLP(nn.Module):
    """A student's eps-model: flatten x_t, append a sinusoidal embedding of t, two hidden layers, reshape back."""

    def __init__(self, pixels: int = 64, hidden: int = 64, embedding: int = 16):
        super().__init__()
        self.embedding = embedding
        self.net = nn.Sequential(nn.Linear(pixels + embedding, hidden), nn.SiLU(), nn.Linear(hidden, pixels))

    def forward(self, x, t):
        h = torch.cat([x.flatten(1), dl.timestep_embedding(t, self.embedding)], dim=1)
        return self.net(h).view_as(x)


def config(**changes) -> dl.TrainConfig:
    return dl.TrainConfig(**{"steps": 6, "batch_size": 16, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 3,
                             "device": "cpu", **changes})


@pytest.fixture(scope="module")
def digits():
    return dl.load_dataset("digits")[:200]  # (200, 1, 8, 8) in [-1, 1]: "the student's tensor"


def fresh_mlp(seed: int = 0, **options) -> MLP:
    """The student seeds their own module (the trainer seeds only the U-Nets it builds)."""
    torch.manual_seed(seed)
    return MLP(**options)


def test_an_mlp_on_a_tensor_trains_checkpoints_resumes_samples_and_evaluates(digits, tmp_path):
    straight = dl.train(fresh_mlp(), SHORT, config(), data=digits, out_dir=tmp_path / "straight", progress=False)
    assert straight.step == 6 and isinstance(straight.ema_model, MLP) and straight.configs["model_config"] is None
    assert [r["step"] for r in straight.history] == [2, 4, 6]

    dl.train(fresh_mlp(), SHORT, config(steps=3), data=digits, out_dir=tmp_path / "halves", progress=False)
    # resume into a differently initialised module: the checkpoint's weights replace its own
    resumed = dl.train(fresh_mlp(seed=7), SHORT, config(), data=digits, out_dir=tmp_path / "halves", resume=True,
                       progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)

    with pytest.raises(CheckpointError, match=r"model of your own \(.*MLP\).*model=YourNet"):
        dl.load_checkpoint(tmp_path / "halves")
    model, diffusion, configs = dl.load_checkpoint(tmp_path / "halves", model=MLP())
    assert configs["step"] == 6 and configs["data"]["shape"] == [200, 1, 8, 8]
    for a, b in zip(model.state_dict().values(), straight.ema_model.state_dict().values()):
        assert torch.equal(a, b)

    x = dl.sample(diffusion, model, (5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 8, 8) and bool(torch.isfinite(x).all())
    scores = dl.bits_per_dim(diffusion, model, dl.load_dataset("digits", train=False)[:4])
    assert scores["num"] == 4 and scores["bpd"] > 0 and scores["uniform"] == pytest.approx(4.0874628, abs=1e-6)


def test_resume_refuses_other_data_or_a_module_that_does_not_fit(digits, tmp_path):
    dl.train(fresh_mlp(), SHORT, config(steps=3), data=digits, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="training data differ"):
        dl.train(fresh_mlp(), SHORT, config(), data=digits[:100], out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="do not fit the given MLP"):
        dl.train(MLP(hidden=32), SHORT, config(), data=digits, out_dir=tmp_path, resume=True, progress=False)


def test_dataset_dataloader_and_folder_give_the_same_images(digits, tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    labels = torch.zeros(len(digits), dtype=torch.long)
    assert torch.equal(dl.as_images(TensorDataset(digits, labels)), digits)
    assert torch.equal(dl.as_images(DataLoader(TensorDataset(digits, labels), batch_size=64)), digits)
    assert torch.equal(dl.as_images(digits[:, 0].numpy()[:, None]), digits)
    folder = tmp_path / "pngs"
    for i in range(12):  # one PNG per image, at its own size
        dl.save_images(digits[i:i + 1], folder / f"{i:03d}.png", scale=1, padding=0)
    loaded = dl.load_images(folder)
    # 17 grey levels written as 8-bit pixels: each value within half a step of 8 bits
    assert loaded.shape == (12, 1, 8, 8) and (loaded - digits[:12]).abs().max() <= 1 / 255 + 1e-6
    result = dl.train(fresh_mlp(), SHORT, config(steps=2), data=folder, progress=False)
    assert result.configs["train_config"].data == str(folder) and result.configs["train_config"].dataset is None


def test_a_torchvision_dataset_of_pil_images():
    torchvision = pytest.importorskip("torchvision")
    fake = torchvision.datasets.FakeData(size=6, image_size=(3, 8, 8), num_classes=2)  # (PIL image, label) items
    images = dl.as_images(fake)
    assert images.shape == (6, 3, 8, 8) and images.min() >= -1 and images.max() <= 1
    pixels = torch.as_tensor(np.array(fake[0][0]), dtype=torch.float32).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    torch.testing.assert_close(images[0], pixels / 127.5 - 1)


@pytest.mark.parametrize("bad, message", [
    (lambda x: x * 8 + 8, r"values from 0 to 16; .*x / 127.5 - 1"),
    (lambda x: x[:, 0], r"channel axis.*x\[:, None\]"),
    (lambda x: (x * 8 + 8).long(), r"integer dtype.*\[-1, 1\]"),
])
def test_bad_data_is_one_line_naming_the_fix(digits, bad, message):
    with pytest.raises(ValueError, match=message) as info:
        dl.train(fresh_mlp(), SHORT, config(), data=bad(digits), progress=False)
    assert "\n" not in str(info.value)


def test_images_in_zero_one_are_warned_about(digits):
    with pytest.warns(UserWarning, match=r"x \* 2 - 1"):
        dl.as_images((digits + 1) / 2)


def test_mixed_sizes_and_a_model_of_the_wrong_output_are_one_line(digits, tmp_path):
    dl.save_images(digits[:1], tmp_path / "a.png", scale=1, padding=0)
    dl.save_images(digits[:1], tmp_path / "b.png", scale=2, padding=0)
    with pytest.raises(ValueError, match=r"2 sizes .*a.png is 8x8, b.png is 16x16.*resize"):
        dl.load_images(tmp_path)

    class Flat(MLP):
        def forward(self, x, t):
            return super().forward(x, t).flatten(1)

    with pytest.raises(ValueError, match=r"maps x_t \(2, 1, 8, 8\) to \(2, 64\).*view_as"):
        dl.train(Flat(), SHORT, config(), data=digits, progress=False)


@pytest.mark.skipif(not (MNIST_ROOT / "MNIST" / "raw").is_dir(), reason="the offline MNIST test split is not here")
def test_an_mlp_on_the_mnist_test_split_trains_resumes_samples_and_evaluates(monkeypatch, tmp_path):
    """Offline, only MNIST's test split exists: its first 9,000 images train, the last 1,000 are held out."""
    monkeypatch.setenv("DDPM_LITE_DATA", str(MNIST_ROOT))
    with pytest.raises(dl.data.DatasetNotFoundError, match=r"MNIST training split is not under .*the test split is"):
        dl.load_dataset("mnist", train=True)
    mnist = dl.load_dataset("mnist", train=False)  # (10000, 1, 28, 28)
    train_images, heldout = mnist[:9000], mnist[9000:]
    diffusion_config = dl.DiffusionConfig(num_timesteps=50)
    straight = dl.train(fresh_mlp(pixels=784), diffusion_config, config(steps=4, checkpoint_every=2), data=train_images,
                        out_dir=tmp_path / "a", progress=False)
    dl.train(fresh_mlp(pixels=784), diffusion_config, config(steps=2), data=train_images, out_dir=tmp_path / "b",
             progress=False)
    dl.train(MLP(pixels=784), diffusion_config, config(steps=4), data=train_images, out_dir=tmp_path / "b",
             resume=True, progress=False)
    model, diffusion, configs = dl.load_checkpoint(tmp_path / "b", model=MLP(pixels=784))
    for a, b in zip(model.state_dict().values(), straight.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert configs["data"]["shape"] == [9000, 1, 28, 28]
    x = dl.sample(diffusion, model, (2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 28, 28) and bool(torch.isfinite(x).all())
    scores = dl.bits_per_dim(diffusion, model, heldout[:3])
    assert scores["num"] == 3 and scores["uniform"] == 8.0 and scores["bpd"] > 0


# ---------------------------------------------------------------------------------------------- the command line
def ddpm_lite(*args, cwd, env=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "ddpm_lite", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_command_trains_on_a_folder_and_resumes(digits, tmp_path):
    for i in range(20):
        dl.save_images(digits[i:i + 1], tmp_path / "digits" / f"{i:02d}.png", scale=1, padding=0)
    done = ddpm_lite("train", "--data", "digits", "--steps", 2, "--batch-size", 4, "--out", "run", "--no-progress",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = ddpm_lite("train", "--steps", 3, "--out", "run", "--resume", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trained to step 3" in done.stdout
    _, _, configs = dl.load_checkpoint(tmp_path / "run")
    assert configs["train_config"].data == str(tmp_path / "digits") and configs["data"]["shape"] == [20, 1, 8, 8]
    done = ddpm_lite("eval", "--checkpoint", "run", "--metric", "bpd", "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "--data" in done.stderr


def test_the_command_refuses_a_checkpoint_of_your_own_network(digits, tmp_path):
    dl.train(fresh_mlp(), SHORT, config(steps=1), data=digits, out_dir=tmp_path / "mlp", progress=False)
    done = ddpm_lite("sample", "--checkpoint", "mlp", "--num", 2, "--out", "x.npy", cwd=tmp_path)
    assert done.returncode == 2
    assert "network of your own" in done.stderr and "model=YourNet" in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.skipif(not (MNIST_ROOT / "MNIST" / "raw").is_dir(), reason="the offline MNIST test split is not here")
def test_the_command_trains_on_a_chosen_split(tmp_path):
    env = {"DDPM_LITE_DATA": str(MNIST_ROOT)}
    done = ddpm_lite("train", "--dataset", "mnist", "--steps", 1, "--out", "a", "--no-progress", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "training split is not under" in done.stderr and "--split test" in done.stderr
    done = ddpm_lite("train", "--dataset", "mnist", "--split", "test", "--steps", 1, "--batch-size", 2, "--out", "b",
                     "--no-progress", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    _, _, configs = dl.load_checkpoint(tmp_path / "b")
    assert configs["train_config"].split == "test" and configs["data"]["shape"] == [10000, 1, 28, 28]


@pytest.mark.skipif(not (MNIST_ROOT / "MNIST" / "raw").is_dir(), reason="the offline MNIST test split is not here")
def test_a_conditional_unet_on_the_mnist_test_split_trains_and_draws_a_class(monkeypatch, tmp_path):
    """Offline: MNIST's test split with its labels, a class-conditional U-Net, guided samples of one class."""
    from ddpm_lite.guidance import ClassifierFreeGuidance

    monkeypatch.setenv("DDPM_LITE_DATA", str(MNIST_ROOT))
    model_config, diffusion_config = dl.default_configs("mnist")
    small = dataclasses.replace(model_config, base_channels=16, channel_mult=(1, 2), attention_resolutions=(),
                                num_classes=10)
    result = dl.train(small, dataclasses.replace(diffusion_config, num_timesteps=50),
                      dl.TrainConfig(dataset="mnist", split="test", steps=2, batch_size=8, conditional=True,
                                     threads=1), out_dir=tmp_path / "c", progress=False)
    model, diffusion, configs = dl.load_checkpoint(tmp_path / "c")
    assert configs["model_config"].num_classes == 10 and configs["data"]["label_checksum"] > 0
    shape = (2, small.image_channels, small.image_size, small.image_size)
    with torch.no_grad():
        x = dl.sample(diffusion, ClassifierFreeGuidance(model, 3, 1.0), shape, steps=3,
                      generator=torch.Generator().manual_seed(0))
    assert x.shape == shape and bool(torch.isfinite(x).all()) and result.step == 2
