"""Sample quality against network evaluations (NFE) for every sampler, on one model, with the same noise.

For each seed every sampler starts from the same x_T (and draws its step noise from the same generator seed), so the
differences between samplers are not differences in the starting noise. Quality is the Frechet distance of
:func:`ddpm_lite.book.digits_fd` (lower is better) beside :func:`ddpm_lite.book.real_vs_real_floor` at the same n;
the spread is the standard deviation over seeds. The reference is the full T-step DDPM chain (Algorithm 2).

Importable (the sampling chapter calls it):

    from benchmarks.bench_samplers import quality_vs_nfe, DEFAULT_SAMPLERS
    result = quality_vs_nfe(model, diffusion, nfes=(10, 20), n=500, seeds=(0, 1))

Run by hand (not in CI), on the book's digits model (trained on first use, ~90 s on two free cores):

    DDPM_LITE_CACHE=... python benchmarks/bench_samplers.py --n 1000 --seeds 0 1 --threads 2

It writes benchmarks/results/samplers.json and samplers.md (the README's table).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

DEFAULT_SAMPLERS: dict[str, dict] = {  # label -> keyword arguments of ddpm_lite.sample
    "ddpm": {"sampler": "ddpm"},
    "ddim eta=0": {"sampler": "ddim", "eta": 0.0},
    "ddim eta=0.5": {"sampler": "ddim", "eta": 0.5},
    "ddim eta=1": {"sampler": "ddim", "eta": 1.0},
    "dpmpp_2m": {"sampler": "dpmpp_2m"},
    "dpmpp_2m_sde": {"sampler": "dpmpp_2m_sde"},
    "churn": {"sampler": "churn"},
    "pc": {"sampler": "pc"},
    "annealed_langevin": {"sampler": "annealed_langevin"},
}
DEFAULT_NFES = (5, 10, 20, 50, 100, 200)
GOAL_NFE, GOAL_RATIO = 20, 1.25  # issue 12: FD at 20 evaluations within 1.25x of the full chain's FD


class CountingModel:
    """Wraps a model and counts its calls (one call = one network evaluation of the whole batch)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x_t, t):
        self.calls += 1
        return self.model(x_t, t)


def draw(model, diffusion, options: dict, steps: int | None, n: int, seed: int, batch_size: int,
         shape=(1, 8, 8), device="cpu") -> tuple[torch.Tensor, float]:
    """n samples of one sampler: (samples (n, *shape) on the CPU, network evaluations per sample).

    x_T comes from torch.Generator().manual_seed(seed) and the step noise from manual_seed(seed + 10_000), in
    batches of ``batch_size``: the same for every sampler at a given seed.
    """
    from ddpm_lite import sample

    x_T = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed)).to(device)
    generator = torch.Generator(device).manual_seed(seed + 10_000)
    counter, chunks, batches = CountingModel(model), [], 0
    for start in range(0, n, batch_size):
        noise = x_T[start : start + batch_size]
        chunks.append(sample(diffusion, counter, tuple(noise.shape), steps=steps, noise=noise, generator=generator,
                             **options).cpu())
        batches += 1
    return torch.cat(chunks), counter.calls / batches


def _summary(values: list[float]) -> dict:
    """mean, standard deviation over seeds (None for one seed) and the per-seed values."""
    return {"fd": values, "fd_mean": statistics.fmean(values),
            "fd_sd": statistics.stdev(values) if len(values) > 1 else None}


def quality_vs_nfe(model, diffusion, samplers: dict[str, dict] | None = None, nfes=DEFAULT_NFES, n: int = 1000,
                   seeds=(0,), batch_size: int = 500, reference_steps: int | None = None, reference_seeds=None,
                   device="cpu", log=None) -> dict:
    """FD against network evaluations for each sampler, and for the full chain.

    Args:
        model, diffusion: a trained digits model (any ``model(x_t, t)``) and its :class:`GaussianDiffusion`.
        samplers: label -> keyword arguments of :func:`ddpm_lite.sample` (default :data:`DEFAULT_SAMPLERS`).
        nfes: evaluation budgets K, passed as ``steps=K`` (a sampler may use fewer; ``nfe`` says how many).
        n: samples per (sampler, K, seed); seeds: one FD per seed, same x_T for every sampler at a seed.
        batch_size: samples per forward pass; reference_steps: steps of the reference DDPM chain (None: all T);
        reference_seeds: its seeds (None: ``seeds``; fewer save time, the chain costs T evaluations per sample).
        log: a callable taking one line of progress (e.g. print), or None.

    Returns a plain dict: {"records": [{"sampler", "options", "nfe_budget", "nfe", "fd", "fd_mean", "fd_sd",
    "seconds"}, ...], "reference": the same for DDPM with reference_steps, "floor": real_vs_real_floor(n)
    (None if n is outside its range), "n", "seeds", "goal": see :func:`goal_summary`}.
    """
    from ddpm_lite.book import digits_fd, real_vs_real_floor

    samplers = DEFAULT_SAMPLERS if samplers is None else samplers
    log = log or (lambda line: None)

    def measure(label, options, steps, seeds=seeds):
        fds, start, nfe = [], time.perf_counter(), None
        for seed in seeds:
            samples, nfe = draw(model, diffusion, options, steps, n, seed, batch_size, device=device)
            fds.append(digits_fd(samples))
        record = {"sampler": label, "options": options, "nfe_budget": steps or diffusion.num_timesteps, "nfe": nfe,
                  **_summary(fds), "seconds": time.perf_counter() - start}
        spread = "" if record["fd_sd"] is None else f" ± {record['fd_sd']:.2f}"
        log(f"{label:>17} K={record['nfe_budget']:>4} NFE={nfe:g} FD={record['fd_mean']:.2f}{spread} "
            f"{record['seconds']:.0f}s")
        return record

    result = {"n": n, "seeds": list(seeds), "batch_size": batch_size}
    try:
        result["floor"] = real_vs_real_floor(n)
    except ValueError as error:  # n outside the floor's range
        result["floor"], result["floor_error"] = None, str(error)
    result["reference"] = measure("ddpm (full chain)", {"sampler": "ddpm"}, reference_steps,
                                  seeds if reference_seeds is None else reference_seeds)
    result["records"] = [measure(label, options, k) for k in nfes for label, options in samplers.items()]
    result["goal"] = goal_summary(result)
    return result


def goal_summary(result: dict, nfe: int = GOAL_NFE, ratio: float = GOAL_RATIO) -> dict:
    """Issue 12's goal: which samplers reach FD <= ratio x the full chain's FD (means over seeds), and at which budget.

    Returns {"threshold", "at_goal_nfe": {label: FD / reference FD at budget ``nfe``}, "met_at_goal_nfe": [labels],
    "fewest": (label, NFE) of the sampler that meets the threshold with the fewest evaluations (ties: the lower
    FD), or None}.
    """
    threshold = ratio * result["reference"]["fd_mean"]
    at_goal = {r["sampler"]: r["fd_mean"] / result["reference"]["fd_mean"] for r in result["records"]
               if r["nfe_budget"] == nfe}
    # fewest evaluations first; among samplers meeting it at the same count, the lower FD
    meeting = sorted((r["nfe"], r["fd_mean"], r["sampler"]) for r in result["records"] if r["fd_mean"] <= threshold)
    return {"nfe": nfe, "ratio": ratio, "threshold": threshold, "at_goal_nfe": at_goal,
            "met_at_goal_nfe": [label for label, value in at_goal.items() if value <= ratio],
            "fewest": [meeting[0][2], meeting[0][0]] if meeting else None}


def markdown_table(result: dict) -> str:
    """FD mean +- sd (over seeds) per sampler (rows) and NFE budget (columns), the reference and the floor."""
    budgets = sorted({r["nfe_budget"] for r in result["records"]})
    labels = list(dict.fromkeys(r["sampler"] for r in result["records"]))
    cell = lambda r: f"{r['fd_mean']:.1f}" + ("" if r["fd_sd"] is None else f" ± {r['fd_sd']:.1f}")
    by_key = {(r["sampler"], r["nfe_budget"]): r for r in result["records"]}
    lines = ["| sampler | " + " | ".join(f"{k} NFE" for k in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for label in labels:
        row = [cell(by_key[label, k]) + ("" if by_key[label, k]["nfe"] == k else f" ({by_key[label, k]['nfe']:g})")
               if (label, k) in by_key else "" for k in budgets]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    ref = result["reference"]
    lines.append(f"\nReference, DDPM with all {ref['nfe_budget']} steps: FD {cell(ref)}. "
                 f"Real-vs-real floor at n = {result['n']}: "
                 + (f"{result['floor']:.1f}." if result["floor"] is not None else "n/a.")
                 + " In parentheses: evaluations actually used where fewer than the budget.")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per FD (default 1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (default 0 1)")
    parser.add_argument("--nfes", type=int, nargs="+", default=list(DEFAULT_NFES))
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), help="labels of DEFAULT_SAMPLERS")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--reference-steps", type=int, default=None,
                        help="steps of the reference DDPM chain (default T)")
    parser.add_argument("--reference-seeds", type=int, nargs="+", default=None,
                        help="seeds of the reference chain (default --seeds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="samplers", help="output file stem (default samplers)")
    parser.add_argument("--checkpoint", default=None, metavar="DIR",
                        help="a digits run directory to measure instead of the book's model (its EMA weights)")
    args = parser.parse_args(argv)
    unknown = set(args.samplers) - set(DEFAULT_SAMPLERS)
    if unknown:
        parser.error(f"unknown sampler labels {sorted(unknown)}; use some of {list(DEFAULT_SAMPLERS)}")
    torch.set_num_threads(args.threads)
    if args.checkpoint is None:
        from ddpm_lite.book import load_pretrained_digits

        model, diffusion = load_pretrained_digits(device="cpu")  # the CPU-trained model the FDs were measured on
    else:
        from ddpm_lite import load_checkpoint

        model, diffusion, _ = load_checkpoint(args.checkpoint, ema=True)
    load_before, start = os.getloadavg(), time.perf_counter()
    result = quality_vs_nfe(model, diffusion, {k: DEFAULT_SAMPLERS[k] for k in args.samplers}, args.nfes, args.n,
                            args.seeds, args.batch_size, reference_steps=args.reference_steps,
                            reference_seeds=args.reference_seeds,
                            log=lambda line: print(line, flush=True))
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                         "cores": os.cpu_count(), "torch": torch.__version__,
                         "load_average_before": load_before, "load_average_after": os.getloadavg(),
                         "wall_s": time.perf_counter() - start}
    result["command"] = " ".join(["python", *sys.argv])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    goal = result["goal"]
    fewest = f" Fewest evaluations meeting it: {goal['fewest'][0]} at {goal['fewest'][1]:g}." if goal["fewest"] else ""
    verdict = (f"Goal (FD at {goal['nfe']} NFE <= {goal['ratio']}x the full chain's, i.e. <= {goal['threshold']:.1f}): "
               + (f"met by {', '.join(goal['met_at_goal_nfe'])}." if goal["met_at_goal_nfe"] else "not met.") + fewest)
    table = markdown_table(result) + "\n\n" + verdict + "\n"
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
