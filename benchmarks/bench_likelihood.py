"""Likelihood two ways on the held-out digits: the variational bound and the probability-flow ODE's exact likelihood.

On the book's digits model, for every held-out digit (360): the bound L_T + sum L_{t-1} + L_0 in bits/dim
(``ddpm_lite.bits_per_dim``, all T terms) and the ODE's bits/dim (``ddpm_lite.ode_bits_per_dim``: the same decoder
L_0, the exact divergence, ``--steps`` Heun steps), each with its standard error over images, and their paired
difference. The solver's error is measured on the first ``--convergence-images`` digits at several step counts
(the same x_1 for each: the generator is reseeded). Quality, not speed: the machine's load does not change these
numbers (only the seconds recorded beside them). Run by hand (not in CI), about 15 minutes on 2 cores:

    .venv/bin/python benchmarks/bench_likelihood.py [--steps 50] [--convergence-steps 12 25 50 100]

It writes benchmarks/results/likelihood.json and likelihood.md (the README's table; the chapter on score matching
quotes the JSON).
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from results_file import write_results


def paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    """The mean of a - b over the same images and its standard error."""
    d = a - b
    return {"mean": d.mean().item(), "se": (d.std() / math.sqrt(len(d))).item()}


def measure(steps: int, convergence_steps: list[int], convergence_images: int, seed: int, log=print) -> dict:
    from ddpm_lite import bits_per_dim, load_dataset, ode_bits_per_dim
    from ddpm_lite.book import load_pretrained_digits

    model, diffusion = load_pretrained_digits(device="cpu")
    held_out = load_dataset("digits", train=False)
    result = {"num_timesteps": diffusion.num_timesteps, "num": len(held_out), "steps": steps, "seed": seed, "divergence": "exact",
              "convergence_images": convergence_images}
    start = time.perf_counter()
    elbo = bits_per_dim(diffusion, model, held_out, batch_size=120, generator=torch.Generator().manual_seed(seed))
    result["elbo"] = {"bpd": elbo["bpd"], "se": elbo["se"], "seconds": time.perf_counter() - start}
    log(f"bound: {elbo['bpd']:.3f} +- {elbo['se']:.3f} ({result['elbo']['seconds']:.0f} s)")
    start = time.perf_counter()
    ode = ode_bits_per_dim(diffusion, model, held_out, steps=steps, batch_size=40,
                           generator=torch.Generator().manual_seed(seed))
    result["ode"] = {"bpd": ode["bpd"], "se": ode["se"], "decoder": ode["decoder"], "kl": ode["kl"], "nfe": ode["nfe"],
                     "seconds": time.perf_counter() - start}
    result["ode_minus_elbo"] = paired(ode["per_image"], elbo["per_image"])
    result["uniform"] = ode["uniform"]
    log(f"ODE, {steps} Heun steps: {ode['bpd']:.3f} +- {ode['se']:.3f} ({result['ode']['seconds']:.0f} s); "
        f"ODE - bound: {result['ode_minus_elbo']['mean']:.3f} +- {result['ode_minus_elbo']['se']:.3f}")
    subset, result["convergence"] = held_out[:convergence_images], []
    for k in convergence_steps:  # the same x_1 draws at every k: the generator is reseeded
        value = ode_bits_per_dim(diffusion, model, subset, steps=k, batch_size=convergence_images,
                                 generator=torch.Generator().manual_seed(seed))
        result["convergence"].append({"steps": k, "nfe": value["nfe"], "bpd": value["bpd"]})
        log(f"  {convergence_images} digits, {k} Heun steps ({value['nfe']} NFE): {value['bpd']:.4f}")
    return result


def markdown(result: dict) -> str:
    elbo, ode, diff = result["elbo"], result["ode"], result["ode_minus_elbo"]
    lines = ["| bits/dim on the held-out digits | mean ± SE |", "|---|---|",
             f"| variational bound (all {result['num_timesteps']} terms) | {elbo['bpd']:.3f} ± {elbo['se']:.3f} |",
             f"| probability-flow ODE, exact divergence, {result['steps']} Heun steps ({ode['nfe']} NFE) | "
             f"{ode['bpd']:.3f} ± {ode['se']:.3f} |",
             f"| ODE − bound, paired by image | {diff['mean']:+.3f} ± {diff['se']:.3f} |",
             "",
             f"n = {result['num']} held-out digits; both share the decoder L_0 (one draw x_1 ~ q(x_1 | x_0) per image); "
             f"uniform over the 17 grey levels: {result['uniform']:.3f}. The ODE's bits/dim of the first "
             f"{result['convergence_images']} digits against its Heun steps: "
             + ", ".join(f"{c['steps']} steps {c['bpd']:.3f}" for c in result["convergence"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="Heun steps of the ODE on all held-out digits")
    parser.add_argument("--convergence-steps", type=int, nargs="+", default=[12, 25, 50, 100])
    parser.add_argument("--convergence-images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = measure(args.steps, args.convergence_steps, args.convergence_images, args.seed)
    write_results("likelihood", result, markdown(result), start, threads=args.threads)


if __name__ == "__main__":
    main()
