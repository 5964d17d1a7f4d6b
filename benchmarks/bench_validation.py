"""What the input checks of issue 11 cost: checked vs. unchecked paths, timed in the same process.

    OMP_NUM_THREADS=1 python benchmarks/bench_validation.py [--device cpu|cuda] [--repeats 200]

1. q_sample (B, 1, 8, 8): the public method (data check: one |x| <= 1 reduction; t check: one range reduction)
   against validate=False with t already known to be in range (the trainer's path).
2. train_step of the default digits U-Net, batch 128: validate=True (training_losses checks the batch) against
   validate=False (what train() uses, having checked its dataset once).
Prints the median time per call of each and their ratio. Not a test: timings depend on the machine and on what
else it runs.
"""
from __future__ import annotations

import argparse
import statistics
import time
import weakref

import torch

from ddpm_lite.diffusion import GaussianDiffusion
from ddpm_lite.training import TrainConfig, default_configs, make_ema, make_optimizer, train_step
from ddpm_lite.unet import UNet


def median_time(fn, repeats: int, device: torch.device) -> float:
    for _ in range(max(3, repeats // 10)):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model_config, diffusion_config = default_configs("digits")
    diffusion = GaussianDiffusion.from_config(diffusion_config)

    x = torch.rand(128, 1, 8, 8, device=device) * 2 - 1
    noise = torch.randn_like(x)
    t = torch.randint(0, diffusion.num_timesteps, (128,), device=device)

    def checked():
        diffusion._checked_t = None  # as for a new t each call (the range test is cached per t tensor)
        return diffusion.q_sample(x, t, noise)

    def unchecked():
        diffusion._checked_t = (weakref.ref(t), t._version)  # t known to be in range: no range test
        return diffusion.q_sample(x, t, noise, validate=False)

    rows = [("q_sample (B=128, 1x8x8)", median_time(checked, args.repeats * 10, device),
             median_time(unchecked, args.repeats * 10, device))]

    model = UNet(model_config).to(device)
    optimizer, scheduler = make_optimizer(model, TrainConfig(steps=1))
    ema = make_ema(model, 0.99)
    generator = torch.Generator(device).manual_seed(0)

    def step(validate):
        return lambda: train_step(model, diffusion, optimizer, scheduler, ema, x, generator=generator,
                                  validate=validate)

    # Interleave the two, so that a change in the machine's load hits both alike.
    with_checks, without = [], []
    for _ in range(5):
        with_checks.append(median_time(step(True), args.repeats // 5, device))
        without.append(median_time(step(False), args.repeats // 5, device))
    rows.append(("train_step (digits U-Net, B=128)", statistics.median(with_checks), statistics.median(without)))

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'':34s} {'checked':>12s} {'unchecked':>12s} {'ratio':>7s}")
    for name, a, b in rows:
        print(f"{name:34s} {a * 1e6:10.1f}us {b * 1e6:10.1f}us {a / b:7.3f}")


if __name__ == "__main__":
    main()
