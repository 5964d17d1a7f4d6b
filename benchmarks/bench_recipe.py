"""The digits recipe at an equal wall-clock budget: which training settings give the best samples in 180 s?

Every candidate trains the digits U-Net on the training split with ``ddpm_lite.train`` for the same time budget
(default 180 s), then draws NUM samples with the default sampler (ddpm_lite.sampling.DEFAULT_SAMPLER, its default
steps) and scores them twice against the 360 held-out digits, each beside its floor (NUM real training digits scored
the same way): the Fréchet distance of the book's classifier features (``ddpm_lite.book.digits_fd``, the chapters'
score) and that of the raw pixels (a score independent of that classifier). Each candidate runs in a fresh process,
once per seed, one at a time; the table gives the mean and the spread (min-max) across seeds.

The candidates change one thing each from today's default (TrainConfig and default_configs("digits")), with the
published reason for trying it: Min-SNR-gamma weighting (Hang et al. 2023), v-prediction (Salimans & Ho 2022),
the learning rate, the batch size, the EMA decay, the width. Run alone on an idle machine:

    .venv/bin/python benchmarks/bench_recipe.py [--budget 180] [--seeds 0 1] [--only NAME ...]
    # about (budget + 15 s) x candidates x seeds; appends to benchmarks/results/recipe.jsonl, rewrites recipe.md
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
NUM = 1000
# What every candidate changes from: the digits recipe before this benchmark (default_configs("digits") was an
# eps-model then; after it, v-prediction is the default, so the baseline is pinned here).
BASELINE = {"model_mean_type": "eps"}
LABELS = {"default": "default before (eps)"}  # the table's names where the key alone would mislead
CANDIDATES = {  # name: {"diffusion": DiffusionConfig changes, "train": TrainConfig changes, "model": UNetConfig ...}
    "default": {},
    "min-SNR-5": {"diffusion": {"min_snr_gamma": 5.0}},
    "v-prediction": {"diffusion": {"model_mean_type": "v"}},
    "v + min-SNR-5": {"diffusion": {"model_mean_type": "v", "min_snr_gamma": 5.0}},
    "lr 4e-3": {"train": {"lr": 4e-3}},
    "lr 1e-3": {"train": {"lr": 1e-3}},
    "batch 64": {"train": {"batch_size": 64}},
    "batch 256": {"train": {"batch_size": 256}},
    "EMA 0.995": {"train": {"ema_decay": 0.995}},
    "width 24": {"model": {"base_channels": 24}},
    "linear schedule": {"diffusion": {"schedule": "linear"}},
}


def configs(name: str, seed: int, budget: float):
    """(UNetConfig, DiffusionConfig, TrainConfig) of candidate ``name``: BASELINE with the candidate's changes."""
    import ddpm_lite as dl

    changes = CANDIDATES[name]
    model_config, diffusion_config = dl.default_configs("digits")
    model_config = dataclasses.replace(model_config, **changes.get("model", {}))
    diffusion_config = dataclasses.replace(diffusion_config, **BASELINE | changes.get("diffusion", {}))
    return model_config, diffusion_config, dl.TrainConfig(time_budget=budget, seed=seed, **changes.get("train", {}))


def run_one(name: str, seed: int, budget: float) -> dict:
    """Train candidate ``name`` for ``budget`` seconds with ``seed`` and score it (in this process)."""
    import torch

    import ddpm_lite as dl
    from ddpm_lite.book.classifier import digits_fd, real_vs_real_floor
    from ddpm_lite.evaluation import sample_batches

    changes = CANDIDATES[name]
    model_config, diffusion_config, config = configs(name, seed, budget)
    result = dl.train(model_config, diffusion_config, config, progress=False)
    with torch.no_grad():
        samples = torch.cat(list(sample_batches(result.diffusion, result.ema_model, NUM, (1, 8, 8), batch_size=500,
                                                generator=torch.Generator().manual_seed(seed))))
    fd, floor = digits_fd(samples), real_vs_real_floor(NUM, seed=seed)
    pixel, pixel_floor = pixel_fd(samples), pixel_fd(_training_digits(NUM, seed))
    return {"name": name, "seed": seed, "budget_s": budget, "steps": result.step, "threads": torch.get_num_threads(),
            "fd": fd, "floor": floor, "fd_over_floor": fd / floor,
            "pixel_fd": pixel, "pixel_floor": pixel_floor, "pixel_fd_over_floor": pixel / pixel_floor,
            "changes": changes}


def pixel_fd(images):
    """The Fréchet distance of raw pixels (64 numbers per digit) against the 360 held-out digits: a second score
    that shares nothing with the book's classifier (it rewards no feature the classifier happened to learn)."""
    import ddpm_lite as dl
    from ddpm_lite.metrics import feature_statistics, frechet_distance

    heldout = dl.load_dataset("digits", train=False)
    return frechet_distance(*feature_statistics(images.flatten(1)), *feature_statistics(heldout.flatten(1)))


def _training_digits(n: int, seed: int):
    """n training digits drawn with ``seed``, as real_vs_real_floor draws them: the pixel score's floor."""
    import torch

    import ddpm_lite as dl

    images = dl.load_dataset("digits", train=True)
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]


STEP_TIMED = r"""
import sys
import ddpm_lite as dl
sys.path.insert(0, sys.argv[1])
from bench_recipe import configs
from step_timing import seconds_per_train_step
model_config, diffusion_config, config = configs(sys.argv[2], seed=0, budget=1.0)
dl.set_threads(config.threads)
print(seconds_per_train_step(model_config, diffusion_config, config, 3, int(sys.argv[3])))
"""


def step_times(names: list[str], rounds: int = 5, steps: int = 20) -> dict:
    """Median seconds per training step of each candidate: fresh processes, interleaved, ``rounds`` each."""
    times = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            out = subprocess.run([sys.executable, "-c", STEP_TIMED, str(Path(__file__).parent), name, str(steps)],
                                 check=True, capture_output=True, text=True).stdout
            times[name].append(float(out.split()[-1]))
    base = statistics.median(times[names[0]])
    return {name: {"seconds_per_step": statistics.median(runs), "runs": runs,
                   "ratio_to_first": statistics.median(runs) / base} for name, runs in times.items()}


def table(rows: list[dict], budget: float) -> str:
    """The results as a Markdown table: first the candidates run at every seed, then those run at the first seed
    only (each group by mean FD / floor), with the first seed's two ratios side by side for a paired look."""
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        if row["budget_s"] == budget:
            by_name.setdefault(row["name"], []).append(row)
    first = min(row["seed"] for runs in by_name.values() for row in runs)
    lines = [f"Budget {budget:.0f} s per run, digits training split, {NUM} samples with the default sampler, FD "
             "against the 360 held-out digits, each beside its floor (benchmarks/bench_recipe.py).", "",
             f"| candidate | seeds | steps | FD mean (min-max) | FD / floor mean (min-max) | pixel FD / its floor "
             f"mean (min-max) | seed {first}: FD / floor, pixel |", "|---|---|---|---|---|---|---|"]

    def span(values: list[float], digits: int) -> str:
        return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    def order(name: str):
        return -len(by_name[name]), statistics.mean(r["fd_over_floor"] for r in by_name[name])

    for name in sorted((n for n in CANDIDATES if n in by_name), key=order):
        runs = by_name[name]
        fd, ratio, steps, pixel = ([r[k] for r in runs] for k in ("fd", "fd_over_floor", "steps", "pixel_fd_over_floor"))
        paired = next((f"{r['fd_over_floor']:.2f}, {r['pixel_fd_over_floor']:.2f}" for r in runs if r["seed"] == first),
                      "-")
        lines.append(f"| {LABELS.get(name, name)} | {len(runs)} | {statistics.mean(steps):.0f} | {span(fd, 1)} | "
                     f"{span(ratio, 2)} | {span(pixel, 2)} | {paired} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--one", choices=list(CANDIDATES), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "recipe.jsonl"))
    parser.add_argument("--step-time", nargs="+", choices=list(CANDIDATES), metavar="NAME",
                        help="instead: seconds per training step of these candidates (the first is the baseline), "
                             "into results/recipe_step_time.{json,md}")
    args = parser.parse_args()
    if args.step_time:
        result = step_times(args.step_time)
        path = RESULTS / "recipe_step_time.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        lines = ["| candidate | s/step (median of 5) | × the first |", "|---|---|---|"]
        lines += [f"| {LABELS.get(n, n)} | {r['seconds_per_step']:.4f} | {r['ratio_to_first']:.2f} |"
                  for n, r in result.items()]
        path.with_suffix(".md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.seed, args.budget)))
        return
    out = Path(args.out)
    for seed in args.seeds:  # seed-major: a cut-off sweep still has every candidate at the first seeds
        for name in args.only:
            line = subprocess.run([sys.executable, __file__, "--one", name, "--seed", str(seed), "--budget",
                                   str(args.budget)], check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            with out.open("a") as f:
                f.write(line + "\n")
            row = json.loads(line)
            print(f"{name:16s} seed {seed}: {row['steps']} steps, FD {row['fd']:.1f} (floor {row['floor']:.1f}, "
                  f"{row['fd_over_floor']:.2f}x)", flush=True)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    out.with_suffix(".md").write_text(table(rows, args.budget))
    print(table(rows, args.budget))


if __name__ == "__main__":
    main()
