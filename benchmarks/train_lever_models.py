"""Issue 12, item 3: is the model, not the sampler, the lever? Trains two variants of the book's digits model.

Both keep everything of :func:`ddpm_lite.book.pretrained_digits_configs` (network, cosine schedule, 128 images
per step, seed 0, two threads, the 1,437 training digits) and change one thing:

- ``eps-3x``: three times the optimizer steps (2,100 instead of 700): the 3x budget.
- ``v-1x``: the same 700 steps, the network predicting v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022).

Then measure each with the sampler benchmark, e.g.

    python benchmarks/train_lever_models.py --out /tmp/lever
    PYTHONPATH=. python benchmarks/bench_samplers.py --checkpoint /tmp/lever/eps-3x --name lever_eps-3x ...

Not run in CI (several minutes of training each).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

VARIANTS = {"eps-3x": {"steps_factor": 3, "model_mean_type": "eps"},
            "v-1x": {"steps_factor": 1, "model_mean_type": "v"}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="parent folder; each variant trains into OUT/NAME")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)

    from ddpm_lite import train
    from ddpm_lite.book.pretrained import PRETRAINED_THREADS, pretrained_digits_configs

    torch.set_num_threads(PRETRAINED_THREADS)
    for name in args.variants:
        variant = VARIANTS[name]
        model_config, diffusion_config, train_config = pretrained_digits_configs("cpu")
        diffusion_config = dataclasses.replace(diffusion_config, model_mean_type=variant["model_mean_type"])
        train_config = dataclasses.replace(train_config, steps=train_config.steps * variant["steps_factor"])
        start = time.perf_counter()
        train(model_config, diffusion_config, train_config, out_dir=Path(args.out) / name, progress=False)
        print(f"{name}: {train_config.steps} steps, {diffusion_config.model_mean_type}-prediction, "
              f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
