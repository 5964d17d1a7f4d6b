"""ddpm_lite against Hugging Face diffusers (UNet2DModel + DDPMScheduler) on the embedded digits, in one run.

Every number is a ratio measured in this run, on this machine, so the machine's speed cancels out:

1. training throughput (images/s): ddpm_lite with bf16 autocast vs diffusers as a user runs it (fp32),
   and both in fp32, at a matched parameter count;
2. sample quality after the same wall-clock training budget: the Frechet distance of 500 samples in the
   feature space of ddpm_lite's digit classifier (lower is better), beside the real-vs-real floor at n = 500;
3. time per sampling step (batch 500).

Run by hand (not in CI):  .venv/bin/pip install -e ".[bench]" && .venv/bin/python benchmarks/bench_vs_diffusers.py
Options: --part all|speed|quality-ours|quality-diffusers, --budget SECONDS (default 180), --bf16, --threads N,
--device cpu|cuda, --out FILE.json. benchmarks/run_device.sh runs the parts side by side on pinned cores.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import ddpm_lite as dl
from ddpm_lite.book import digits_fd, real_vs_real_floor
from ddpm_lite.training import TrainConfig, default_configs, make_ema, make_optimizer, train, train_step

N_SAMPLES = 500
BATCH = 128


def diffusers_unet(target_params: int):
    """A UNet2DModel shaped like ddpm_lite's digits U-Net (two levels, attention at 4x4), width matched."""
    from diffusers import UNet2DModel

    best = None
    for width in range(16, 97, 8):
        model = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                            block_out_channels=(width, 2 * width), norm_num_groups=8,
                            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "UpBlock2D"))
        gap = abs(dl.count_parameters(model) - target_params)
        if best is None or gap < best[0]:
            best = (gap, width, model)
    return best[2]


class DiffusersTrainer:
    """The training step of diffusers' train_unconditional example, fp32, with the same AdamW settings and EMA."""

    def __init__(self, model, config: TrainConfig, device):
        from diffusers import DDPMScheduler

        self.model = model.to(device)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.optimizer, self.lr_schedule = make_optimizer(self.model, config)
        self.ema = make_ema(self.model, config.ema_decay)
        self.grad_clip = config.grad_clip

    def step(self, x_start, generator):
        noise = torch.randn(x_start.shape, generator=generator, device=x_start.device)
        t = torch.randint(0, 1000, (x_start.shape[0],), generator=generator, device=x_start.device)
        noisy = self.scheduler.add_noise(x_start, noise, t)
        loss = F.mse_loss(self.model(noisy, t).sample, noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.lr_schedule.step()
        self.ema.update_parameters(self.model)

    @torch.no_grad()
    def sample(self, n, generator, device, steps=1000):
        model = self.ema.module.eval()
        self.scheduler.set_timesteps(steps)
        x = torch.randn((n, 1, 8, 8), generator=generator, device=device)
        for t in self.scheduler.timesteps:
            x = self.scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
        return x


class OursTrainer:
    def __init__(self, config: TrainConfig, device, bf16: bool):
        model_config, diffusion_config = default_configs("digits")
        self.diffusion = dl.GaussianDiffusion.from_config(diffusion_config)
        self.model = dl.UNet(model_config).to(device)
        self.optimizer, self.lr_schedule = make_optimizer(self.model, config)
        self.ema = make_ema(self.model, config.ema_decay)
        self.config, self.bf16 = config, bf16

    def step(self, x_start, generator):
        train_step(self.model, self.diffusion, self.optimizer, self.lr_schedule, self.ema, x_start,
                   generator=generator, grad_clip=self.config.grad_clip, bf16=self.bf16)


def throughput(trainers: dict, data, device, rounds=5, steps=20) -> dict:
    """Images/s of each trainer: rounds interleaved so that drifts in machine load hit every trainer alike."""
    generator = torch.Generator(device).manual_seed(0)
    batch = lambda: data[torch.randint(0, len(data), (BATCH,), generator=generator, device=device)]
    for trainer in trainers.values():  # warm-up
        for _ in range(3):
            trainer.step(batch(), generator)
    times = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step(batch(), generator)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: steps * BATCH / statistics.median(ts) for name, ts in times.items()}


def sampling_step_time(fn, repeats=3) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def quality_ours(args, device) -> dict:
    """Train ddpm_lite as its user would (the CLI's defaults, bf16 where faster) for the budget; FD of 500 samples."""
    run = train(train_config=TrainConfig(time_budget=args.budget, bf16=args.bf16, seed=0, device=args.device),
                progress=False)
    g = torch.Generator(device).manual_seed(1)
    samples = dl.sample(run.diffusion, run.ema_model, (N_SAMPLES, 1, 8, 8), sampler="ddpm", generator=g,
                        device=device)  # Algorithm 2, all T steps, as diffusers' DDPMScheduler below
    return {"steps": run.step, "bf16": args.bf16, "fd": digits_fd(samples.cpu())}


def quality_diffusers(args, device, data, target_params) -> dict:
    """Train diffusers' UNet2DModel + DDPMScheduler (fp32) for the budget; FD of 500 samples."""
    torch.manual_seed(0)
    theirs = DiffusersTrainer(diffusers_unet(target_params), TrainConfig(batch_size=BATCH, steps=1), device)
    g = torch.Generator(device).manual_seed(0)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < args.budget:
        theirs.step(data[torch.randint(0, len(data), (BATCH,), generator=g, device=device)], g)
        steps += 1
    samples = theirs.sample(N_SAMPLES, torch.Generator(device).manual_seed(1), device)
    return {"steps": steps, "fd": digits_fd(samples.cpu())}


def speed(args, device, data) -> dict:
    base = TrainConfig(batch_size=BATCH, steps=10**9, device=args.device)
    torch.manual_seed(0)
    ours_fp32 = OursTrainer(base, device, bf16=False)
    target = dl.count_parameters(ours_fp32.model)
    theirs = DiffusersTrainer(diffusers_unet(target), base, device)
    results = {"params": {"ddpm_lite": target, "diffusers": dl.count_parameters(theirs.model)}}
    ips = throughput({"ours_fp32": ours_fp32, "ours_bf16": OursTrainer(base, device, bf16=True),
                      "diffusers_fp32": theirs}, data, device, rounds=args.rounds, steps=args.round_steps)
    results["images_per_s"] = ips
    results["ratio_bf16_vs_diffusers_fp32"] = ips["ours_bf16"] / ips["diffusers_fp32"]
    results["ratio_fp32_vs_diffusers_fp32"] = ips["ours_fp32"] / ips["diffusers_fp32"]
    x = torch.randn(N_SAMPLES, 1, 8, 8, device=device)
    t = torch.full((N_SAMPLES,), 500, device=device)
    from ddpm_lite.sampling import p_sample

    with torch.no_grad():
        ours_step = sampling_step_time(lambda: p_sample(ours_fp32.diffusion, ours_fp32.ema.module, x, t))
        theirs.scheduler.set_timesteps(1000)
        theirs_step = sampling_step_time(lambda: theirs.scheduler.step(theirs.ema.module(x, 500).sample, 500, x))
    results["sampling_step_s"] = {"ddpm_lite": ours_step, "diffusers": theirs_step, "batch": N_SAMPLES}
    return results


def main():
    global N_SAMPLES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "speed", "quality-ours", "quality-diffusers"], default="all",
                        help="run one part (e.g. the two quality runs side by side on separate cores)")
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per model for the quality test")
    parser.add_argument("--bf16", action="store_true", help="train ddpm_lite with bf16 autocast in the quality test")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per trainer")
    parser.add_argument("--round-steps", type=int, default=20, help="training steps per timing round")
    parser.add_argument("--n-samples", type=int, default=N_SAMPLES, help="samples for the Frechet distance")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    N_SAMPLES = args.n_samples
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = dl.load_dataset("digits").to(device)
    results = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, {device}",
               "torch": torch.__version__, "part": args.part}
    if args.part in ("all", "speed"):
        results["speed"] = speed(args, device, data)
        print(json.dumps(results), flush=True)  # the speed results, in case the quality runs are cut short
    target = dl.count_parameters(dl.UNet(default_configs("digits")[0]))
    if args.part in ("all", "quality-ours"):
        results["quality_ddpm_lite"] = quality_ours(args, device)
    if args.part in ("all", "quality-diffusers"):
        results["quality_diffusers"] = quality_diffusers(args, device, data, target)
    if args.part != "speed":
        results["fd_real_vs_real_floor"] = statistics.mean(real_vs_real_floor(N_SAMPLES, seed=s) for s in range(3))
        results["budget_s"], results["n_samples"] = args.budget, N_SAMPLES
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
