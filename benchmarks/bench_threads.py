"""Threads on a 2-core machine: the book's training step at each thread setting, idle and beside a busy core.

Each setting runs in a fresh process (OpenMP reads OMP_NUM_THREADS and OMP_WAIT_POLICY once, at start), builds the
digits U-Net and its diffusion (ddpm_lite.default_configs), takes WARMUP training steps, then times STEPS more.
"busy" is a second process spinning a pure-Python loop, pinned to nothing, started before the timed process and
stopped after it: one core's worth of someone else's work, as a browser or a second job would be. Settings:

- ``torch default``: torch's own choice (one thread per core), what ddpm_lite did before it had a thread setting;
- ``1`` and ``2``: torch.set_num_threads;
- ``2, OMP passive``: two threads with OMP_WAIT_POLICY=PASSIVE (idle threads sleep instead of spinning);
- ``auto``: ddpm_lite's default, :func:`ddpm_lite._threads.auto_threads` (the free cores, from /proc/stat).

Every setting is timed ROUNDS times, interleaved, and the median kept; the table gives seconds per step and the
ratio to the best setting under the same load. Run alone on an idle machine (nothing else running):

    .venv/bin/python benchmarks/bench_threads.py        # ~5 minutes; writes benchmarks/results/threads.{json,md}
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
WARMUP, STEPS, ROUNDS = 3, 10, 3
SETTINGS = {  # name: (environment, threads argument of the timed process)
    "torch default": ({}, "none"),
    "1": ({}, "1"),
    "2": ({}, "2"),
    "2, OMP passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, "2"),
    "auto": ({}, "auto"),
}

TIMED = r"""
import sys
import ddpm_lite as dl
from ddpm_lite import _threads
sys.path.insert(0, sys.argv[4])
from step_timing import seconds_per_train_step
threads = sys.argv[1]
used = _threads.set_threads(None if threads == "none" else "auto" if threads == "auto" else int(threads))
model_config, diffusion_config = dl.default_configs("digits")
seconds = seconds_per_train_step(model_config, diffusion_config, dl.TrainConfig(steps=1), int(sys.argv[2]),
                                 int(sys.argv[3]), validate=False)
print(used, seconds)
"""


def timed_run(setting: str) -> tuple[int, float]:
    """(threads used, seconds per training step) of one fresh process with ``setting``."""
    environment, threads = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")} | environment
    out = subprocess.run([sys.executable, "-c", TIMED, threads, str(WARMUP), str(STEPS), str(Path(__file__).parent)],
                         env=env, check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1])


def measure(load: str) -> dict:
    """Median seconds per step of every setting under ``load`` ("idle" or "one core busy")."""
    times = {name: [] for name in SETTINGS}
    used = {}
    for _ in range(ROUNDS):
        for name in SETTINGS:
            spinner = None
            if load != "idle":
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(0.5)
            try:
                used[name], seconds = timed_run(name)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
            times[name].append(seconds)
            print(f"{load:14s} {name:15s} {used[name]} threads  {seconds:.3f} s/step", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    best = min(medians.values())
    return {name: {"threads": used[name], "seconds_per_step": medians[name], "runs": times[name],
                   "ratio_to_best": medians[name] / best} for name in SETTINGS}


def markdown(results: dict) -> str:
    lines = ["| load | setting | threads | s/step (median) | × best under that load |", "|---|---|---|---|---|"]
    for load, rows in results["loads"].items():
        for name, row in rows.items():
            lines.append(f"| {load} | {name} | {row['threads']} | {row['seconds_per_step']:.3f} | "
                         f"{row['ratio_to_best']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "threads.json"))
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "python": sys.version.split()[0]},
               "warmup_steps": WARMUP, "timed_steps": STEPS, "rounds": ROUNDS,
               "loads": {load: measure(load) for load in ("idle", "one core busy")}}
    import torch

    results["machine"]["torch"] = torch.__version__
    auto, default = results["loads"]["one core busy"]["auto"], results["loads"]["idle"]
    results["goals"] = {
        "busy: auto within 1.2x of the best setting": auto["ratio_to_best"] <= 1.2,
        "idle: auto no slower than torch's default (within 5%)":
            default["auto"]["seconds_per_step"] <= 1.05 * default["torch default"]["seconds_per_step"],
    }
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results), json.dumps(results["goals"], indent=1))


if __name__ == "__main__":
    main()
