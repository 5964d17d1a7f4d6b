"""The ``ddpm-lite`` command (also ``python -m ddpm_lite``): train, sample, reconstruct, evaluate::

    ddpm-lite train  [--dataset digits|mnist|... [--split train|test] | --data FOLDER_OR_NPY]
                     [--steps N | --time-budget SECONDS] [--batch-size B] [--seed S] --out DIR [--resume] ...
    ddpm-lite sample --checkpoint DIR --num N [--sampler ddpm|ddim|dpmpp_2m|dpmpp_2m_sde|churn|pc|annealed_langevin]
                     [--steps K] [--eta E] [--class C|all [--guidance W]] [--seed S] --out FILE

    ddpm-lite reconstruct --checkpoint DIR --task denoise|inpaint|superres|sdedit --input FILE --out FILE
                     [--sigma S] [--mask FILE] [--method replace|repaint|ddnm] [--scale K] [--t T] [--steps K]
    ddpm-lite eval   --checkpoint DIR --metric fd|bpd|nll [--num N] [--split test|train] [--data FOLDER_OR_NPY]
                     [--ode-steps K] [--divergence exact|hutchinson]

``train`` writes DIR/checkpoint.pt and DIR/log.jsonl; ``sample`` uses the EMA weights and writes FILE.npy
(float32 (N, C, H, W) in [-1, 1]) or FILE.png (a grid). ``reconstruct`` reads FILE.npy ((H, W), (C, H, W) or
(N, C, H, W) in [-1, 1]) or FILE.png and writes the same kinds (:mod:`ddpm_lite.images`). ``eval`` scores a model
on held-out data (:mod:`ddpm_lite.evaluation`). Several processes: ``torchrun --nproc_per_node 2 -m ddpm_lite train
...``. ``train``'s flags are the fields of :class:`~ddpm_lite.training.TrainConfig`, with its defaults and help.
This module parses, calls the library and prints; the work is done in the library.

A bad argument prints one line, ``ddpm-lite: error: ...``, and exits with status 2, before any training or
sampling starts. A run that diverges (NaN or inf) or runs out of memory prints one line and exits with status 1,
keeping its last good checkpoint. Ctrl-C or SIGTERM during ``train`` saves a checkpoint at the current step and
exits with 128 + the signal number (130, 143); ``--resume`` continues from there.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import typing
from dataclasses import asdict
from pathlib import Path

from ._random import MAX_SEED

PROG = "ddpm-lite"
MAX_NUM = 1_000_000  # samples per `ddpm-lite sample` call (.npy is written batch by batch: memory stays bounded)


class UsageError(Exception):
    """A bad command line: reported as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line naming the fix instead of a usage block."""

    def error(self, message):
        raise UsageError(message)


def _int_at_least(minimum: int, what: str, maximum: int | None = None):
    """An argparse type: an integer >= minimum (and <= maximum), else a one-line error naming what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")
_seed = _int_at_least(0, f"an integer from 0 to 2**63 - 1 = {MAX_SEED}", maximum=MAX_SEED)
_num = _int_at_least(1, f"a positive integer up to {MAX_NUM:,} (run the command again for more)", maximum=MAX_NUM)


def _number(minimum: float, inclusive: bool = True, maximum: float | None = None, maximum_inclusive: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        low_ok = value >= minimum if inclusive else value > minimum
        high_ok = maximum is None or (value <= maximum if maximum_inclusive else value < maximum)
        if not math.isfinite(value) or not low_ok or not high_ok:
            bounds = f"{'>=' if inclusive else '>'} {minimum:g}"
            bounds += f" and {'<=' if maximum_inclusive else '<'} {maximum:g}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"expected a number {bounds}, got {text!r}")
        return value

    return parse


def _add_train_config_flags(parser) -> None:
    """One flag per TrainConfig field: --batch-size for batch_size, with the field's type, default and help.

    The values are checked by TrainConfig itself (its errors name the flag, see :func:`_flagify`).
    """
    from .data import DATASETS, SPLITS
    from .training import TrainConfig

    choices = {"dataset": DATASETS, "split": SPLITS}
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        kind = next(a for a in typing.get_args(hints[field.name]) or (hints[field.name],) if a is not type(None))
        options = {"help": f"{field.metadata['help']} (default {field.default})", "default": None}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _thread_count if field.name == "threads" else _typed(kind)
            options["choices"] = choices.get(field.name)
            options["metavar"] = {"data": "PATH", "time_budget": "SECONDS"}.get(field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", **options)


def _typed(kind):
    """An argparse type: int or float (or str), with a one-line error naming what was expected."""
    if kind is str:
        return str

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
                from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value

    return parse


def _thread_count(text: str):
    """--threads: "auto" or a whole number >= 1."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number >= 1, got {text!r}")
    return value


def _add_threads_flag(parser) -> None:
    parser.add_argument("--threads", type=_thread_count, default="auto", help="CPU threads for torch: auto (the cores "
                        "other programs leave free) or a number; 1 when another program keeps a core busy "
                        "(default auto)")


def build_parser() -> argparse.ArgumentParser:
    from .sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS

    parser = _Parser(prog=PROG, description="Train and sample denoising diffusion models (Ho et al. 2020).")
    commands = parser.add_subparsers(dest="command", metavar="{train,sample,reconstruct,eval}")

    train = commands.add_parser(
        "train", help="train a model (Algorithm 1); writes DIR/checkpoint.pt and DIR/log.jsonl",
        description="Train a U-Net with Algorithm 1 of Ho et al. 2020. Unset flags take TrainConfig's defaults, "
        "or with --resume the checkpoint's values.")
    _add_train_config_flags(train)
    arg = train.add_argument
    arg("--out", required=True, metavar="DIR", help="run directory for checkpoint.pt and log.jsonl")
    arg("--resume", action="store_true", help="continue the run in DIR where its checkpoint stopped")
    arg("--no-progress", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="draw samples from a trained model's EMA weights",
                                 description="Sample with the EMA weights of a checkpoint; write .npy or a .png grid.")
    arg = sample.add_argument
    arg("--checkpoint", required=True, metavar="DIR", help="a run directory (or its checkpoint.pt)")
    arg("--num", type=_num, default=64, help=f"number of samples, at most {MAX_NUM:,} (default 64)")
    arg("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
        help="ddpm (Algorithm 2), ddim, dpmpp_2m (DPM-Solver++(2M)), dpmpp_2m_sde (its SDE variant), churn "
             "(Karras et al. stochastic Heun), pc (predictor-corrector: Algorithm 2 plus a Langevin corrector) or "
             "annealed_langevin (Song & Ermon 2019: 5 Langevin steps a level from sigma 16, then one denoising step) "
             f"(default {DEFAULT_SAMPLER})")
    arg("--steps", type=_positive_int, help=f"network evaluations K <= T, placed by each sampler (default: T for "
        f"ddpm, {DEFAULT_STEPS} for the others; dpmpp_2m matched the full chain with 10 on the digits model)")
    arg("--eta", type=_number(0, maximum=1, maximum_inclusive=True),
        help="DDIM noise in [0, 1]: 0 deterministic, 1 DDPM's variance (default 0; ddim only)")
    arg("--class", dest="label", metavar="C", help="a class-conditional model (train --conditional): draw class C, "
        "or 'all' for every class in turn (sample i has class i mod K: a .png grid shows one class per column)")
    arg("--guidance", type=_number(-1), default=0.0, help="classifier-free guidance weight w >= -1 with --class: "
        "(1 + w) eps(x, t, c) - w eps(x, t, null); 0 the conditional model (default), -1 the unconditional one")
    arg("--seed", type=_seed, default=0, help="random seed (default 0)")
    arg("--batch-size", type=_positive_int, default=256, help="samples per forward pass (default 256)")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    arg("--out", required=True, metavar="FILE", help="FILE.npy (float32 (N, C, H, W) in [-1, 1]) or FILE.png")
    arg("--no-progress", action="store_true", help="no progress bar")
    _add_threads_flag(sample)
    _add_reconstruct_parser(commands)
    _add_eval_parser(commands)
    return parser


# ---------------------------------------------------------------------------------------------- train
def run_train(args) -> None:
    from .checkpoints import CHECKPOINT_NAME, LOG_NAME, check_run_dir, checkpoint_configs, read_checkpoint
    from .data import DatasetNotFoundError
    from .training import TrainConfig, train

    out = _writable_path(args.out, "DIR")
    try:
        check_run_dir(out, args.resume)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    given = {name: value for name, value in given.items() if value is not None}
    if "data" in given:
        given["dataset"] = None
    model_config = diffusion_config = None  # default_configs of the data
    if args.resume:
        configs = checkpoint_configs(read_checkpoint(out))  # the run's own settings, unless a flag changes them
        model_config, diffusion_config = configs["model_config"], configs["diffusion_config"]
        base = asdict(configs["train_config"])
    else:
        if "steps" not in given and "time_budget" not in given:
            raise UsageError("say when to stop: give --steps N, --time-budget SECONDS, or both")
        base = {}
    try:
        config = TrainConfig(**(base | given))
    except ValueError as exc:
        raise UsageError(_flagify(str(exc))) from None
    _device(config.device)  # present on this machine?
    try:
        result = train(model_config, diffusion_config, config, out_dir=out, resume=args.resume,
                       progress=not args.no_progress)
    except DatasetNotFoundError as exc:
        fix = (f"the {exc.other_split} split is: use --split {exc.other_split}, or put the missing files there"
               if exc.other_split else "set DDPM_LITE_DATA to the folder that holds it, or use --dataset digits, "
               "which ships offline")
        raise UsageError(f"--dataset {config.dataset}: {exc.missing}; {fix}") from None
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.history[-1] if result.history else {}
        loss = f", loss {last['loss']:.4f}" if "loss" in last else ""
        print(f"trained to step {result.step}{loss}; wrote {out / CHECKPOINT_NAME} and {out / LOG_NAME}")


def _flagify(message: str) -> str:
    """'batch_size must be ...' -> '--batch-size must be ...': TrainConfig's field names as the flags that set them."""
    from .training import TrainConfig

    first, _, rest = message.partition(" ")
    return f"--{first.replace('_', '-')} {rest}" if first in TrainConfig.__dataclass_fields__ else message


# ---------------------------------------------------------------------------------------------- sample
def run_sample(args) -> None:
    import torch

    from ._io import write_atomic
    from .evaluation import sample_batches, sample_classes
    from .guidance import ClassifierFreeGuidance
    from .images import MAX_GRID, save_images, write_npy

    out = _output_file(args.out)  # all of the output checks come before any sampling
    png = out.suffix.lower() == ".png"
    if png and args.num > MAX_GRID:
        raise UsageError(f"--num {args.num} is too many for a .png grid (at most {MAX_GRID}); write .npy instead")
    if args.eta is not None and args.sampler != "ddim":
        raise UsageError(f"--eta applies to --sampler ddim only; drop it for --sampler {args.sampler}")
    if args.guidance != 0 and args.label is None:
        raise UsageError("--guidance weighs a class against the null class: give --class C (or --class all)")
    model, diffusion, configs, device = _load_run(args)
    classes = _classes(args, configs)  # None, or one list of labels per group of samples
    steps = _sampling_steps(args, diffusion.num_timesteps)
    image_shape = _image_shape(configs)
    _check_free_space(out, args.num * math.prod(image_shape) * 4)
    options = dict(sampler=args.sampler, steps=steps, **({"eta": args.eta} if args.eta is not None else {}),
                   generator=torch.Generator(device).manual_seed(args.seed), device=device,
                   progress=not args.no_progress, batch_size=args.batch_size)
    if classes is None:
        batches, nrow, what = sample_batches(diffusion, model, args.num, image_shape, **options), None, ""
    else:  # each class in turn, interleaved so that sample i has class i mod K
        per_class = sample_classes(diffusion, lambda c: ClassifierFreeGuidance(model, c, args.guidance), classes,
                                   args.num // len(classes), image_shape, **options)
        batches = [torch.stack(per_class, dim=1).flatten(0, 1)]
        nrow = len(classes) if len(classes) > 1 else None
        what = f", class {args.label}, guidance {args.guidance:g}"
    if png:
        save_images(torch.cat(list(batches)), out, nrow=nrow)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, lambda f: write_npy(f, (args.num, *image_shape), batches))
    print(f"wrote {args.num} samples ({args.sampler}, {steps} steps{what}) to {out}")


def _classes(args, configs: dict) -> list[int] | None:
    """--class: the labels to draw ([c], or every class for 'all'), checked against the checkpoint; None without."""
    if args.label is None:
        return None
    num_classes = configs["model_config"].num_classes if configs["model_config"] is not None else None
    if num_classes is None:
        raise UsageError("--class needs a class-conditional model; this checkpoint is unconditional (train one with "
                         "ddpm-lite train --conditional)")
    if args.label == "all":
        if args.num % num_classes:
            raise UsageError(f"--class all draws every one of the {num_classes} classes equally often: give a --num "
                             f"divisible by {num_classes}, e.g. {num_classes * max(1, args.num // num_classes)}")
        return list(range(num_classes))
    if not args.label.isdigit() or not 0 <= int(args.label) < num_classes:
        raise UsageError(f"--class must be a class 0 ... {num_classes - 1} of this model, or 'all'; got "
                         f"{args.label!r}")
    return [int(args.label)]


def _image_shape(configs: dict) -> tuple[int, int, int]:
    mc = configs["model_config"]
    return mc.image_channels, mc.image_size, mc.image_size


def _output_file(text: str) -> Path:
    """--out FILE.npy or FILE.png: writable, not a directory; checked before any work starts."""
    from .images import FILE_SUFFIXES

    out = _writable_path(text, "FILE")
    if out.is_dir():
        raise UsageError(f"--out {text!r} is a directory; name a file in it, e.g. {out / 'samples.npy'}")
    if out.suffix.lower() not in FILE_SUFFIXES:
        raise UsageError(f"--out {text!r} must end in .npy or .png")
    return out


def _writable_path(text: str, what: str) -> Path:
    """--out as a Path, refused now (not after the work) when it is empty or its folder cannot be written."""
    if not text.strip():
        raise UsageError(f"--out is empty; give a {what}")
    path = Path(text).expanduser()
    existing = _existing_parent(path)
    if not existing.is_dir():
        raise UsageError(f"--out {text!r}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {text!r}: cannot write in {existing} (permission denied); choose another --out")
    return path


def _existing_parent(path: Path) -> Path:
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def _check_free_space(path: Path, needed: int) -> None:
    existing = _existing_parent(path)
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UsageError(f"--num: the samples need {needed / 1e9:.1f} GB, {existing} has {free / 1e9:.1f} GB free; "
                         "ask for fewer or write elsewhere")


def _load_run(args):
    """The EMA model of --checkpoint on --device: (model, diffusion, configs, device); a missing file is one line.

    A checkpoint of a network of your own is refused in one line: the command line rebuilds U-Nets only.
    """
    from .checkpoints import CheckpointError, checkpoint_path, load_checkpoint

    file = checkpoint_path(args.checkpoint)
    if not file.is_file():
        raise UsageError(f"no checkpoint at {file}; train one with `ddpm-lite train --out DIR`")
    device = _device(args.device)
    try:
        return (*load_checkpoint(args.checkpoint, device=device, ema=True), device)
    except CheckpointError as exc:
        if "model of your own" not in str(exc):
            raise
        raise UsageError(f"{file} holds a network of your own, not a ddpm_lite U-Net, and the command line "
                         "cannot rebuild it; sample it in Python: model, diffusion, configs = "
                         "ddpm_lite.load_checkpoint(DIR, model=YourNet(...))") from None


def _check_steps_fit(steps: int | None, T: int) -> None:
    """--steps must not exceed the model's T."""
    if steps is not None and steps > T:
        raise UsageError(f"--steps {steps} is more than the T = {T} steps of this model; use 1 to {T}")


def _sampling_steps(args, T: int) -> int:
    """--steps, checked against the model's T; by default the sampler's (ddpm_lite.sampling.default_steps)."""
    from .sampling import default_steps

    if args.steps is None:
        return default_steps(args.sampler, T)
    _check_steps_fit(args.steps, T)
    return args.steps


def _device(name: str):
    from ._device import default_device

    try:
        return default_device(name)
    except ValueError as exc:
        raise UsageError(_flagify(str(exc))) from None


# ---------------------------------------------------------------------------------------------- reconstruct
TASKS = ("denoise", "inpaint", "superres", "sdedit")


def _add_reconstruct_parser(commands) -> None:
    from .reconstruction import INPAINT_METHODS

    rec = commands.add_parser(
        "reconstruct", help="denoise, inpaint, upscale or SDEdit images with a trained model",
        description="Reconstruct images with a trained model's EMA weights (ddpm_lite.reconstruction). Every input is "
        "checked before any sampling starts.")
    arg = rec.add_argument
    arg("--checkpoint", required=True, metavar="DIR", help="a run directory (or its checkpoint.pt)")
    arg("--task", required=True, choices=TASKS, help="denoise (needs --sigma), inpaint (--mask), superres (--scale), "
        "sdedit (--t)")
    arg("--input", required=True, metavar="FILE", help="FILE.npy ((H, W), (C, H, W) or (N, C, H, W) in [-1, 1]) or "
        "FILE.png; for superres the low-resolution image")
    arg("--out", required=True, metavar="FILE", help="FILE.npy or FILE.png")
    arg("--sigma", type=_number(0, inclusive=False), help="denoise: the noise's standard deviation on the [-1, 1] scale")
    arg("--mask", metavar="FILE", help="inpaint: .npy or .png of the image's size, 1 (white) = known, 0 = missing")
    arg("--method", choices=INPAINT_METHODS, default="repaint", help="inpaint: replace, repaint or ddnm "
        "(default repaint)")
    arg("--jump", type=_positive_int, default=10, help="inpaint repaint: jump length in steps (default 10)")
    arg("--resample", type=_positive_int, default=5, help="inpaint repaint: resamplings per jump (default 5)")
    arg("--scale", type=_positive_int, help="superres: the upscaling factor K; it must divide the model's image size")
    arg("--t", type=_non_negative_int, help="sdedit: the time index 0 ... T-1 to noise the input to")
    arg("--steps", type=_positive_int, help="reverse steps, evenly spaced (default: every step)")
    arg("--seed", type=_seed, default=0, help="random seed (default 0)")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    _add_threads_flag(rec)


def _read_images(path: str, what: str, channels: int, size: int, check: bool = True):
    """--input or --mask: (N, C, H, W) float32 of the model's C and the given size (H = W), read and checked."""
    from .images import load_images

    try:
        x = load_images(path, channels=channels, check=check)
    except FileNotFoundError:
        raise UsageError(f"{what} {path!r}: no such file") from None
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None
    if x.shape[1] != channels or tuple(x.shape[2:]) != (size, size):
        raise UsageError(f"{what} has shape {tuple(x.shape)}; this model needs images of shape ({channels}, {size}, "
                         f"{size}) as (H, W), (C, H, W) or (N, C, H, W)")
    return x


def run_reconstruct(args) -> None:
    import torch

    from . import reconstruction as R
    from .images import save_images

    out = _output_file(args.out)
    needed = {"denoise": "sigma", "inpaint": "mask", "superres": "scale", "sdedit": "t"}[args.task]
    if getattr(args, needed) is None:
        raise UsageError(f"--task {args.task} needs --{needed}")
    model, diffusion, configs, device = _load_run(args)
    channels, size, _ = _image_shape(configs)
    T = diffusion.num_timesteps
    _check_steps_fit(args.steps, T)

    # Read and check every input before any sampling starts.
    if args.task == "superres" and size % args.scale:
        raise UsageError(f"--scale {args.scale} does not divide the model's image size {size}; use a divisor such "
                         f"as {', '.join(str(k) for k in range(2, size + 1) if size % k == 0)}")
    input_size = size // args.scale if args.task == "superres" else size
    # a noisy image may leave [-1, 1]; every other input is an image
    x = _read_images(args.input, "--input", channels, input_size, check=args.task != "denoise")
    if args.task == "denoise" and not bool(torch.isfinite(x).all()):
        raise UsageError("--input contains NaN or infinite values")
    if args.task == "sdedit" and args.t >= T:
        raise UsageError(f"--t {args.t} is outside 0 ... {T - 1} (T = {T})")
    if args.task == "denoise":
        try:
            R.timestep_for_sigma(diffusion, args.sigma)
        except ValueError as exc:
            raise UsageError(f"--sigma: {exc}") from None
    if args.task == "inpaint":
        mask = _read_images(args.mask, "--mask", 1, size, check=False)
        mask = (mask > 0).float() if Path(args.mask).suffix.lower() != ".npy" else mask  # a picture: white = known
        try:
            R._check_mask(mask, x)
        except ValueError as exc:
            raise UsageError(f"--mask: {exc}") from None

    generator = torch.Generator(device).manual_seed(args.seed)
    x = x.to(device)
    with torch.no_grad():
        if args.task == "denoise":
            result = R.denoise(diffusion, model, x, args.sigma, steps=args.steps, generator=generator)
        elif args.task == "sdedit":
            result = R.sdedit(diffusion, model, x, args.t, steps=args.steps, generator=generator)
        elif args.task == "superres":
            result = R.ddnm(diffusion, model, x, R.SuperResolution(args.scale), steps=args.steps, generator=generator)
        else:
            result = R.inpaint(diffusion, model, x, mask.to(device), method=args.method, steps=args.steps,
                               jump=args.jump, resample=args.resample, generator=generator)
    save_images(result.clamp(-1, 1), out)
    print(f"wrote {len(result)} reconstructed image(s) ({args.task}) to {out}")


# ---------------------------------------------------------------------------------------------- eval
def _add_eval_parser(commands) -> None:
    from .data import SPLITS
    from .likelihood import DEFAULT_ODE_STEPS, DIVERGENCES
    from .sampling import DEFAULT_SAMPLER, SAMPLERS

    ev = commands.add_parser(
        "eval", help="score a trained model on held-out data: Frechet distance (digits), bits/dim or exact likelihood",
        description="fd: the Frechet distance of N samples against the 360 held-out digits, with the floor at that N "
        "(N real training digits scored the same way). bpd: the variational bound in bits/dim on N images of the "
        "test (held-out) split, or of --data, beside the bound of a uniform distribution over the grey levels. nll: "
        "the same images' bits/dim with the probability-flow ODE's exact likelihood in place of the bound's "
        "L_T + sum L_{t-1} (the same decoder L_0 for the grey levels).")
    arg = ev.add_argument
    arg("--checkpoint", required=True, metavar="DIR", help="a run directory (or its checkpoint.pt)")
    arg("--metric", required=True, choices=("fd", "bpd", "nll", "classes"),
        help="fd (digits models only), bpd (the variational bound), nll (the ODE's exact likelihood, in bits/dim) or "
             "classes (class-conditional digits models: the share of each class's samples read as that class)")
    arg("--num", type=_positive_int, help="fd: samples, 2 ... 1437 (default 1000); classes: samples per class "
        "(default 100); bpd, nll: images (default: all held-out digits, or 1000)")
    arg("--split", choices=SPLITS, default="test", help="bpd, nll: which split of the model's dataset (default test, "
        "the held-out images)")
    arg("--data", metavar="PATH", help="bpd, nll: held-out images (a folder or .npy) instead of the dataset's split")
    arg("--guidance", type=_number(-1), default=0.0, help="classes: classifier-free guidance weight w >= -1 "
        "(default 0, the conditional model)")
    arg("--ode-steps", type=_positive_int, default=DEFAULT_ODE_STEPS, help=f"nll: Heun steps of the ODE, two "
        f"network evaluations each (default {DEFAULT_ODE_STEPS})")
    arg("--divergence", choices=DIVERGENCES, default="exact", help="nll: exact (one backward pass per dimension; "
        "right for the 64-pixel digits) or hutchinson (one random probe per evaluation; for larger images)")
    arg("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER, help=f"fd: the sampler (default {DEFAULT_SAMPLER})")
    arg("--steps", type=_positive_int, help="fd: network evaluations K <= T (default: the sampler's, "
        "ddpm_lite.sampling.default_steps)")
    arg("--seed", type=_seed, default=0, help="random seed (default 0)")
    arg("--batch-size", type=_positive_int, default=500, help="images per forward pass (default 500)")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    arg("--no-progress", action="store_true", help="no progress bar")
    _add_threads_flag(ev)


def run_eval(args) -> None:
    import torch

    from .data import load_dataset
    from .evaluation import bits_per_dim, class_accuracy, digits_frechet_distance, ode_bits_per_dim

    model, diffusion, configs, device = _load_run(args)
    train_config = configs["train_config"]
    dataset, T = train_config.dataset, diffusion.num_timesteps
    steps = _sampling_steps(args, T)
    progress = not args.no_progress
    if args.metric == "classes":
        if dataset != "digits" or configs["model_config"] is None or configs["model_config"].num_classes is None:
            raise UsageError("--metric classes needs a class-conditional digits model (ddpm-lite train --dataset "
                             "digits --conditional): the book's digit classifier reads its samples")
        try:
            result = class_accuracy(diffusion, model, args.num or 100, guidance=args.guidance, seed=args.seed,
                                    batch_size=args.batch_size, device=device, progress=progress,
                                    sampler=args.sampler, steps=steps)
        except ValueError as exc:
            raise UsageError(f"--num: {exc}") from None
        shares = " ".join(f"{c}:{100 * a:.0f}%" for c, a in enumerate(result["accuracy"]))
        print(f"classes read as asked (guidance {args.guidance:g}, {args.sampler}, {steps} steps): {shares}; lowest "
              f"{100 * min(result['accuracy']):.1f}%. FD {result['fd']:.2f} of all {result['num']} samples against "
              f"the 360 held-out digits; floor at n = {result['num']}: {result['floor']:.2f}")
        return
    if args.metric == "fd":
        if dataset != "digits":
            raise UsageError(f"--metric fd needs the digit classifier, so digits models only (this one: "
                             f"{dataset or train_config.data or 'your own data'}); use --metric bpd")
        try:
            result = digits_frechet_distance(diffusion, model, args.num or 1000, seed=args.seed,
                                             batch_size=args.batch_size, device=device, progress=progress,
                                             sampler=args.sampler, steps=steps)
        except ValueError as exc:
            raise UsageError(f"--num: {exc}") from None
        print(f"FD {result['fd']:.2f} of {result['num']} samples ({args.sampler}, {steps} steps) against the 360 "
              f"held-out digits; floor at n = {result['num']} (real training digits): {result['floor']:.2f}")
        return
    if args.data is not None:
        images, what = _read_images(args.data, "--data", *_image_shape(configs)[:2]), args.data
    elif dataset is None:
        raise UsageError(f"this model was trained on {train_config.data or 'data passed to train()'}; give held-out "
                         "images of the same kind with --data FOLDER_OR_NPY")
    else:
        images, what = load_dataset(dataset, train=args.split == "train"), f"{args.split} images of {dataset}"
    images = images[: args.num or (len(images) if dataset == "digits" else 1000)]
    generator = torch.Generator(device).manual_seed(args.seed)
    if args.metric == "nll":
        if args.ode_steps >= T:
            raise UsageError(f"--ode-steps must be below T = {T}, got {args.ode_steps}")
        result = ode_bits_per_dim(diffusion, model, images, steps=args.ode_steps, divergence_method=args.divergence,
                                  batch_size=max(1, min(args.batch_size, 100)), device=device, progress=progress,
                                  generator=generator)
        how = f"probability-flow ODE, {result['nfe']} evaluations, {args.divergence} divergence"
    else:
        result = bits_per_dim(diffusion, model, images, batch_size=args.batch_size, device=device, progress=progress,
                              generator=generator)
        how = f"variational bound, {T} terms"
    above = result["bpd"] > result["uniform"]
    verdict = "above it: the model is untrained, too small or broken" if above else "below it"
    print(f"bits/dim {result['bpd']:.3f} +- {result['se']:.3f} (standard error) on {result['num']} {what} ({how}); "
          f"a uniform distribution over the {diffusion.data_bins} grey levels scores {result['uniform']:.3f} "
          f"({verdict})")


COMMANDS = {"train": run_train, "sample": run_sample, "reconstruct": run_reconstruct, "eval": run_eval}


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    from .data import DatasetNotFoundError
    from .training import TrainingDiverged, TrainingInterrupted

    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: `ddpm-lite train|sample|reconstruct|eval ...` (see --help)")
        if args.command != "train":  # train sets them from its TrainConfig (--threads there is a config field)
            from ._threads import set_threads

            set_threads(args.threads)
        COMMANDS[args.command](args)
    except (UsageError, DatasetNotFoundError, FileExistsError, FileNotFoundError, ValueError, ImportError) as exc:
        return _error(exc, 2)
    except (TrainingDiverged, PermissionError) as exc:
        return _error(exc, 1)
    except TrainingInterrupted as exc:
        print(f"{PROG}: interrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; a train run continues from its last checkpoint with --resume", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # out of memory: torch.cuda.OutOfMemoryError, or the CPU allocator's RuntimeError
        if "out of memory" not in str(exc) and "can't allocate memory" not in str(exc):
            raise
        return _error(f"out of memory ({str(exc).splitlines()[0][:120]}); use a smaller --batch-size", 1)
    return 0


def _error(exc, status: int) -> int:
    message = " ".join(str(exc).split())  # one line, always
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status
