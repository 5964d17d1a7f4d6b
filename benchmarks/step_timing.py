"""Seconds per training step of the digits U-Net: the one timing loop of bench_threads.py and bench_recipe.py.

Each benchmark calls it in a fresh process (thread settings and OpenMP's environment are read once, at start).
"""
from __future__ import annotations

import time

import torch

import ddpm_lite as dl
from ddpm_lite.training import make_ema, make_optimizer, train_step


def seconds_per_train_step(model_config, diffusion_config, config: dl.TrainConfig, warmup: int, steps: int, *,
                           validate: bool = True) -> float:
    """Build the network (seed 0) and its diffusion, take ``warmup`` steps of Algorithm 1 on the training digits
    (batch ``config.batch_size``, the optimizer and EMA of ``config``), then time ``steps`` more: seconds per step."""
    torch.manual_seed(0)
    model, diffusion = dl.UNet(model_config), dl.GaussianDiffusion.from_config(diffusion_config)
    optimizer, scheduler = make_optimizer(model, config)
    ema = make_ema(model, config.ema_decay)
    data = dl.load_dataset("digits")
    generator = torch.Generator().manual_seed(0)

    def run(n: int) -> None:
        for _ in range(n):
            batch = data[torch.randint(len(data), (config.batch_size,), generator=generator)]
            train_step(model, diffusion, optimizer, scheduler, ema, batch, generator=generator, validate=validate)

    run(warmup)
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps
