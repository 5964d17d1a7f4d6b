"""The sampling loop's own cost: ddpm_lite's Algorithm 2 against diffusers' DDPMScheduler, network taken out.

Both loops run the 1000-step ancestral sampler (Algorithm 2) of the same schedule (linear betas, variance
beta_tilde, x_0 clipped to [-1, 1]) with a "network" that returns zeros, so that what is timed is the loop: the
coefficient look-ups, the arithmetic on x_t and the noise draws. The two take the same path on the same generator
state, so they end on the same samples (checked, to float32 rounding) before they are timed.

Each (library, batch) pair is timed ROUNDS times, interleaved, and the median kept; the ratio is ddpm_lite's time
per step over diffusers' at the same batch, in the same run. Run alone (nothing else running):

    .venv/bin/pip install -e ".[bench]" && .venv/bin/python benchmarks/bench_sampling_loop.py   # ~2 minutes (CPU)
    --device cuda on a GPU machine (benchmarks/run_device.sh); --profile prints torch.profiler's table instead.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import ddpm_lite as dl

RESULTS = Path(__file__).parent / "results"
T, ROUNDS, BATCHES = 1000, 5, (1, 500)
SHAPE = (1, 8, 8)


def zeros(x, t):
    """The network taken out: eps_theta = 0."""
    return torch.zeros_like(x)


def ours(batch: int, device, seed: int = 0) -> torch.Tensor:
    diffusion = dl.GaussianDiffusion.from_config(dl.DiffusionConfig(num_timesteps=T))  # linear, fixed_small
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn((batch, *SHAPE), generator=generator, device=device)
    return dl.sample(diffusion, zeros, noise.shape, sampler="ddpm", noise=noise, generator=generator)


def theirs(batch: int, device, seed: int = 0) -> torch.Tensor:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=True,
                              variance_type="fixed_small")
    scheduler.set_timesteps(T)
    generator = torch.Generator(device).manual_seed(seed)
    x = torch.randn((batch, *SHAPE), generator=generator, device=device)
    for t in scheduler.timesteps:
        x = scheduler.step(zeros(x, t), t, x, generator=generator).prev_sample
    return x


LOOPS = {"ddpm_lite": ours, "diffusers": theirs}


def seconds_per_step(loop, batch: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loop(batch, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / T


def profile(batch: int, device) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for name, loop in LOOPS.items():
        loop(batch, device)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            loop(batch, device)
        print(f"--- {name}, batch {batch}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: the loop's ops are small)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", default=None, help="default benchmarks/results/sampling_loop_<device>.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.profile:
        for batch in BATCHES:
            profile(batch, device)
        return
    for batch in BATCHES:  # the same samples, and a warm-up of both
        a, b = ours(batch, device), theirs(batch, device)
        assert torch.allclose(a, b, atol=1e-4), f"batch {batch}: the loops disagree by {(a - b).abs().max():.2e}"
    times = {(name, batch): [] for name in LOOPS for batch in BATCHES}
    for _ in range(ROUNDS):
        for batch in BATCHES:
            for name, loop in LOOPS.items():
                times[name, batch].append(seconds_per_step(loop, batch, device))
    rows = {}
    for batch in BATCHES:
        mine, yours = (statistics.median(times[name, batch]) for name in LOOPS)
        rows[str(batch)] = {"ddpm_lite_us_per_step": 1e6 * mine, "diffusers_us_per_step": 1e6 * yours,
                            "ratio": mine / yours, "runs_us": {n: [1e6 * s for s in times[n, batch]] for n in LOOPS}}
    goal = 1.2 if device.type == "cuda" else 1.1
    import diffusers

    results = {"device": str(device), "threads": args.threads, "machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "diffusers": diffusers.__version__, "steps": T, "rounds": ROUNDS,
               "batches": rows, "goal_ratio": goal, "goal_met": all(r["ratio"] <= goal for r in rows.values())}
    out = Path(args.out or RESULTS / f"sampling_loop_{device.type}.json")
    out.write_text(json.dumps(results, indent=1) + "\n")
    lines = ["| batch | ddpm_lite µs/step | diffusers µs/step | ratio |", "|---|---|---|---|"]
    lines += [f"| {b} | {r['ddpm_lite_us_per_step']:.0f} | {r['diffusers_us_per_step']:.0f} | {r['ratio']:.2f} |"
              for b, r in rows.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), f"\ngoal <= {goal}: {results['goal_met']}")


if __name__ == "__main__":
    main()
