"""A small time-conditioned MLP for 2-D data, and a training loop for data held in one tensor.

The U-Net of :mod:`ddpm_lite.unet` is built for images; points in the plane need no convolutions. ``ToyMLP`` is
the same design reduced to vectors, so that ablations run in seconds on a CPU:

    x (B, D) -> Linear -> ToyResidualBlock x num_blocks -> LayerNorm -> SiLU -> Linear -> (B, D or 2D)
    t (B,)   -> TimeEmbedding (sinusoid of :func:`~ddpm_lite.unet.timestep_embedding` -> MLP) -> every block

Every block injects t the way a U-Net ResidualBlock does ("additive", "scale_shift" or "none"), its last layer
and the output layer are zero-initialised (a fresh network outputs 0), and with ``learn_sigma`` the output has
2D columns: the mean output, then the variance interpolation v of Nichol & Dhariwal 2021, as the U-Net's
channels do.

:func:`train_toy` runs Algorithm 1 on such a network with the package's own :func:`~ddpm_lite.training.train_step`,
optimizer, warm-up and EMA; :func:`~ddpm_lite.training.train` is the loop for the image datasets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._random import randint
from .diffusion import GaussianDiffusion
from .unet import INJECTIONS, Injection, TimeEmbedding, zero_module


@dataclass(frozen=True)
class ToyMLPConfig:
    """Hyper-parameters of :class:`ToyMLP`. Defaults suit 2-D toy data."""

    data_dim: int = 2  # D of the points
    width: int = 128  # hidden units of every layer
    num_blocks: int = 3  # ToyResidualBlocks
    time_channels: int = 32  # size of the sinusoidal embedding; the time MLP is 4x wider
    injection: Injection = "scale_shift"  # how t enters a block; "none" = no time input
    learn_sigma: bool = False  # also output v for Sigma_theta (model_var_type "learned_range")

    def __post_init__(self):
        if self.injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {INJECTIONS}, got {self.injection!r}")
        for name in ("data_dim", "width", "num_blocks", "time_channels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")

    @property
    def time_dim(self) -> int:
        """Width of the time embedding fed to every block (4 x time_channels)."""
        return 4 * self.time_channels

    @property
    def out_dim(self) -> int:
        """D (predict eps, x_0 or mu) or 2D (then v) with learn_sigma."""
        return self.data_dim * (2 if self.learn_sigma else 1)


class ToyResidualBlock(nn.Module):
    """h: (B, width), temb: (B, time_dim) -> (B, width).

    LayerNorm -> SiLU -> Linear -> [inject t] -> LayerNorm -> SiLU -> Linear (zero-initialised), plus h.
    "additive" adds Linear(SiLU(temb)) before the second norm, "scale_shift" applies
    norm(z) * (1 + scale) + shift after it, "none" ignores t — as in :class:`~ddpm_lite.unet.ResidualBlock`.
    """

    def __init__(self, width: int, time_dim: int, injection: Injection = "scale_shift"):
        super().__init__()
        self.injection = injection
        self.norm1, self.linear1 = nn.LayerNorm(width), nn.Linear(width, width)
        if injection != "none":
            per_unit = 2 if injection == "scale_shift" else 1
            self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, per_unit * width))
        self.norm2 = nn.LayerNorm(width)
        self.linear2 = zero_module(nn.Linear(width, width))

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        z = self.linear1(F.silu(self.norm1(h)))  # (B, width)
        if self.injection == "additive":
            z = self.norm2(z + self.time_proj(temb))
        elif self.injection == "scale_shift":
            scale, shift = rearrange(self.time_proj(temb), "b (two w) -> two b w", two=2)
            z = self.norm2(z) * (1 + scale) + shift
        else:
            z = self.norm2(z)
        return h + self.linear2(F.silu(z))


class ToyMLP(nn.Module):
    """eps_theta for points: x (B, D), t (B,) or scalar -> (B, config.out_dim)."""

    def __init__(self, config: ToyMLPConfig = ToyMLPConfig()):
        super().__init__()
        self.config = config
        self.input = nn.Linear(config.data_dim, config.width)
        self.time_embed = (TimeEmbedding(config.time_channels, config.time_dim)
                           if config.injection != "none" else None)
        self.blocks = nn.ModuleList(ToyResidualBlock(config.width, config.time_dim, config.injection)
                                    for _ in range(config.num_blocks))
        self.out = nn.Sequential(nn.LayerNorm(config.width), nn.SiLU(),
                                 zero_module(nn.Linear(config.width, config.out_dim)))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.config.data_dim:
            raise ValueError(f"x must be (B, {self.config.data_dim}), got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        temb = self.time_embed(t) if self.time_embed is not None else None  # (B, time_dim)
        h = self.input(x)  # (B, width)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)  # (B, out_dim)


def train_toy(model_config: ToyMLPConfig, diffusion: GaussianDiffusion, data: torch.Tensor, train_config) -> dict:
    """Algorithm 1 on points held in one tensor: a :class:`ToyMLP` trained with the package's training step.

    data: (N, D) training points. train_config: a :class:`~ddpm_lite.training.TrainConfig`; its ``steps``,
    ``batch_size``, ``lr``, ``weight_decay``, ``warmup_steps``, ``grad_clip``, ``ema_decay`` and ``seed`` are used
    (``dataset``, ``time_budget``, logging, checkpoints and ``device`` are not: this loop runs on data's device for
    a fixed number of steps). As :func:`~ddpm_lite.training.train` does, the weights are initialised from
    ``torch.manual_seed(seed)`` and batches, t and eps are drawn from a generator seeded with ``seed``.

    Returns {"model": raw weights, "ema_model": the EMA (eval mode, what to sample from),
    "loss": (steps,) mean loss of every step, "t": (steps, batch_size) the time steps drawn}.
    """
    from .training import make_ema, make_optimizer, train_step

    if train_config.steps is None:
        raise ValueError("train_toy runs a fixed number of steps: set train_config.steps")
    if data.ndim != 2 or data.shape[1] != model_config.data_dim:
        raise ValueError(f"data must be (N, {model_config.data_dim}), got {tuple(data.shape)}")
    if diffusion.learns_sigma != model_config.learn_sigma:
        raise ValueError(f"the diffusion's model_var_type {diffusion.model_var_type!r} needs "
                         f"learn_sigma={diffusion.learns_sigma} in the model config")
    torch.manual_seed(train_config.seed)
    model = ToyMLP(model_config).to(data.device)
    optimizer, scheduler = make_optimizer(model, train_config)
    ema = make_ema(model, train_config.ema_decay)
    generator = torch.Generator(data.device).manual_seed(train_config.seed)
    losses, times = [], []
    model.train()
    for _ in range(train_config.steps):
        index = randint(0, len(data), (train_config.batch_size,), generator, data.device)
        terms = train_step(model, diffusion, optimizer, scheduler, ema, data[index], generator=generator,
                           grad_clip=train_config.grad_clip)
        losses.append(terms["loss"].mean())
        times.append(terms["t"])
    return {"model": model, "ema_model": ema.module.eval(), "loss": torch.stack(losses), "t": torch.stack(times)}
