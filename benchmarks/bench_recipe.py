"""The digits recipe at an equal wall-clock budget: which training settings give the best samples in 180 s?

Every candidate trains the digits U-Net on the training split with ``ddpm_lite.train`` for the same time budget
(default 180 s), then draws NUM samples with the default sampler (ddpm_lite.sampling.DEFAULT_SAMPLER, its default
steps) and scores them with ``ddpm_lite.evaluation.digits_frechet_distance``: the Fréchet distance against the 360
held-out digits, beside the floor (NUM real training digits scored the same way). Each candidate runs in a fresh
process, once per seed, one at a time; the table gives the mean and the spread (min-max) across seeds of FD, of
FD / floor and of the steps reached.

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


def run_one(name: str, seed: int, budget: float) -> dict:
    """Train candidate ``name`` for ``budget`` seconds with ``seed`` and score it (in this process)."""
    import torch

    import ddpm_lite as dl
    from ddpm_lite.evaluation import digits_frechet_distance

    changes = CANDIDATES[name]
    model_config, diffusion_config = dl.default_configs("digits")
    model_config = dataclasses.replace(model_config, **changes.get("model", {}))
    diffusion_config = dataclasses.replace(diffusion_config, **changes.get("diffusion", {}))
    config = dl.TrainConfig(time_budget=budget, seed=seed, **changes.get("train", {}))
    result = dl.train(model_config, diffusion_config, config, progress=False)
    with torch.no_grad():
        scores = digits_frechet_distance(result.diffusion, result.ema_model, NUM, seed=seed)
    return {"name": name, "seed": seed, "budget_s": budget, "steps": result.step, "threads": torch.get_num_threads(),
            "fd": scores["fd"], "floor": scores["floor"], "fd_over_floor": scores["fd"] / scores["floor"],
            "changes": changes}


def table(rows: list[dict], budget: float) -> str:
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        if row["budget_s"] == budget:
            by_name.setdefault(row["name"], []).append(row)
    lines = [f"Budget {budget:.0f} s per run, digits training split, {NUM} samples with the default sampler, FD "
             "against the 360 held-out digits (benchmarks/bench_recipe.py).", "",
             "| candidate | seeds | steps | FD mean (min-max) | FD / floor mean (min-max) |", "|---|---|---|---|---|"]
    order = [n for n in CANDIDATES if n in by_name]
    for name in sorted(order, key=lambda n: statistics.mean(r["fd_over_floor"] for r in by_name[n])):
        runs = by_name[name]
        fd, ratio, steps = ([r[k] for r in runs] for k in ("fd", "fd_over_floor", "steps"))
        lines.append(f"| {name} | {len(runs)} | {statistics.mean(steps):.0f} | {statistics.mean(fd):.1f} "
                     f"({min(fd):.1f}-{max(fd):.1f}) | {statistics.mean(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--one", choices=list(CANDIDATES), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "recipe.jsonl"))
    args = parser.parse_args()
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
