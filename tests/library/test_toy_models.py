"""Tests for ddpm_lite.toy_models: the 2-D time-conditioned MLP and its training loop."""
import math

import pytest
import torch
from torch import nn

from ddpm_lite.data import GaussianMixture
from ddpm_lite.diffusion import DiffusionConfig, GaussianDiffusion
from ddpm_lite.toy_models import ToyMLP, ToyMLPConfig, ToyResidualBlock, train_toy
from ddpm_lite.training import TrainConfig
from ddpm_lite.unet import TimeEmbedding, timestep_embedding


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


SMALL = dict(width=32, num_blocks=2, time_channels=8)


def randomize_zero_init(model: nn.Module) -> nn.Module:
    """Undo the zero initialisation, so that the output depends on the input and on t."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    return model


@pytest.mark.parametrize("learn_sigma, dim", [(False, 2), (True, 2), (False, 3)])
def test_output_shape_and_zero_init(learn_sigma, dim):
    model = ToyMLP(ToyMLPConfig(data_dim=dim, learn_sigma=learn_sigma, **SMALL))
    x = torch.randn(5, dim)
    out = model(x, torch.arange(5))
    assert out.shape == (5, dim * (2 if learn_sigma else 1)) == (5, model.config.out_dim)
    assert torch.equal(out, torch.zeros_like(out))  # the output layer starts at zero
    assert model(x, 7).shape == out.shape  # one scalar t for the batch


def test_bad_inputs_raise():
    model = ToyMLP(ToyMLPConfig(**SMALL))
    with pytest.raises(ValueError, match=r"x must be \(B, 2\)"):
        model(torch.randn(4, 3), 0)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
        model(torch.randn(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"'additive', 'scale_shift', 'none'"):
        ToyMLPConfig(injection="film")
    with pytest.raises(ValueError, match="width"):
        ToyMLPConfig(width=0)


def test_time_embedding_is_the_unets():
    """The MLP reuses the U-Net's sinusoidal embedding and time MLP; it does not define its own."""
    model = ToyMLP(ToyMLPConfig(**SMALL))
    assert isinstance(model.time_embed, TimeEmbedding)
    t = torch.tensor([0, 5, 99])
    first = model.time_embed.mlp[0]
    torch.testing.assert_close(first(timestep_embedding(t, 8)), model.time_embed.mlp[0](timestep_embedding(t, 8)))
    assert first.in_features == 8 and model.time_embed.mlp[-1].out_features == 32


@pytest.mark.parametrize("injection", ["additive", "scale_shift", "none"])
def test_network_uses_t(injection):
    model = randomize_zero_init(ToyMLP(ToyMLPConfig(injection=injection, **SMALL))).eval()
    x = torch.randn(1, 2).expand(2, -1)  # the same point twice
    with torch.no_grad():
        out = model(x, torch.tensor([3, 150]))
    if injection == "none":
        assert model.time_embed is None  # rows of one matmul may round differently: equal to float32 precision
        torch.testing.assert_close(out[0], out[1], rtol=1e-6, atol=1e-7)
    else:
        assert (out[0] - out[1]).abs().max() > 1e-3


@pytest.mark.parametrize("injection", ["additive", "scale_shift", "none"])
def test_fresh_block_is_identity(injection):
    block = ToyResidualBlock(16, 32, injection)
    h = torch.randn(4, 16)
    assert torch.equal(block(h, torch.randn(4, 32)), h)


def _mixture_data(n=4096):
    mixture = GaussianMixture.circle(k=4, radius=0.6, std=0.1)
    return mixture.sample(n, generator=torch.Generator().manual_seed(0))


def test_train_toy_is_deterministic_and_learns():
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(num_timesteps=100))
    data = _mixture_data()
    config = TrainConfig(steps=150, batch_size=128, warmup_steps=10, seed=3)
    first = train_toy(ToyMLPConfig(**SMALL), diffusion, data, config)
    second = train_toy(ToyMLPConfig(**SMALL), diffusion, data, config)
    assert torch.equal(first["loss"], second["loss"]) and first["loss"].shape == (150,)
    assert first["t"].shape == (150, 128)
    # A fresh network outputs 0, so its L_simple is E||eps||^2 / D = 1. On one fixed evaluation batch, the
    # trained EMA model must be lower by far more than the batch's standard error.
    g = torch.Generator().manual_seed(1)
    x_start = data[:2048]
    t = diffusion.sample_timesteps(len(x_start), generator=g)
    noise = torch.randn(x_start.shape, generator=g)
    with torch.no_grad():
        trained = diffusion.training_losses(first["ema_model"], x_start, t=t, noise=noise)["loss"]
        fresh = diffusion.training_losses(ToyMLP(ToyMLPConfig(**SMALL)), x_start, t=t, noise=noise)["loss"]
    difference = fresh - trained  # paired: the same x_0, t, eps
    assert difference.mean() > 5 * difference.std() / math.sqrt(len(difference))


def test_train_toy_learned_variance_and_checks():
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(num_timesteps=50, model_var_type="learned_range",
                                                              loss_type="hybrid"))
    data = _mixture_data(512)
    config = TrainConfig(steps=5, batch_size=32)
    result = train_toy(ToyMLPConfig(learn_sigma=True, **SMALL), diffusion, data, config)
    assert result["ema_model"](data[:3], 0).shape == (3, 4) and torch.isfinite(result["loss"]).all()
    with pytest.raises(ValueError, match="learn_sigma=True"):
        train_toy(ToyMLPConfig(**SMALL), diffusion, data, config)
    with pytest.raises(ValueError, match=r"data must be \(N, 2\)"):
        train_toy(ToyMLPConfig(learn_sigma=True, **SMALL), diffusion, data[:, :1], config)
    with pytest.raises(ValueError, match="fixed number of steps"):
        train_toy(ToyMLPConfig(learn_sigma=True, **SMALL), diffusion, data, TrainConfig(time_budget=1.0))
