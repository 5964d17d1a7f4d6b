"""The ``ddpm-lite`` command (also ``python -m ddpm_lite``): train a model, or sample from a trained one.

    ddpm-lite train  --dataset digits [--steps N | --time-budget SECONDS] [--batch-size B] [--seed S] --out DIR
                     [--resume] [--bf16] [--lr LR] ...
    ddpm-lite sample --checkpoint DIR --num N [--sampler ddpm|ddim] [--steps K] [--eta E] [--seed S] --out FILE

``train`` writes DIR/checkpoint.pt and DIR/log.jsonl; ``sample`` uses the EMA weights and writes FILE.npy
(float32 (N, C, H, W) in [-1, 1]) or FILE.png (a grid). Several processes: ``torchrun --nproc_per_node 2 -m
ddpm_lite train ...``. Flag defaults are the fields of :class:`~ddpm_lite.training.TrainConfig`.

A bad argument prints one line, ``ddpm-lite: error: ...``, and exits with status 2, before any training or
sampling starts. A run that diverges (NaN or inf) or runs out of memory prints one line and exits with status 1,
keeping its last good checkpoint. Ctrl-C or SIGTERM during ``train`` saves a checkpoint at the current step and
exits with 128 + the signal number (130, 143); ``--resume`` continues from there.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from ._io import write_atomic

PROG = "ddpm-lite"
OUTPUT_SUFFIXES = (".npy", ".png")
MAX_SEED = 2**63 - 1  # = training.MAX_SEED (torch takes 64-bit seeds); here to keep `import ddpm_lite.cli` light
MAX_NUM = 1_000_000  # samples per `ddpm-lite sample` call (.npy is written batch by batch: memory stays bounded)
MAX_PNG_NUM = 4096  # a PNG grid is built in memory: 64 x 64 images at most


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


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .sampling import SAMPLERS
    from .training import TrainConfig

    def default(name: str) -> str:  # the defaults live in TrainConfig
        return f"(default {TrainConfig.__dataclass_fields__[name].default})"

    parser = _Parser(prog=PROG, description="Train and sample denoising diffusion models (Ho et al. 2020).")
    commands = parser.add_subparsers(dest="command", metavar="{train,sample}")

    train = commands.add_parser(
        "train", help="train a model (Algorithm 1); writes DIR/checkpoint.pt and DIR/log.jsonl",
        description="Train a U-Net with Algorithm 1 of Ho et al. 2020. Unset flags take TrainConfig's defaults, "
        "or with --resume the checkpoint's values.")
    arg = train.add_argument
    arg("--dataset", choices=DATASETS, help=f"training images {default('dataset')}")
    arg("--steps", type=_positive_int, help="stop after N optimizer steps in total")
    arg("--time-budget", type=_number(0, inclusive=False), metavar="SECONDS",
        help="stop after this many seconds of training in total (with --steps: whichever comes first)")
    arg("--batch-size", type=_positive_int, help=f"images per step and process {default('batch_size')}")
    arg("--lr", type=_number(0, inclusive=False), help=f"AdamW learning rate {default('lr')}")
    arg("--weight-decay", type=_number(0), help=f"AdamW weight decay {default('weight_decay')}")
    arg("--warmup-steps", type=_non_negative_int, help=f"linear lr warm-up {default('warmup_steps')}")
    arg("--grad-clip", type=_number(0), help=f"gradient-norm clip, 0 = off {default('grad_clip')}")
    arg("--ema-decay", type=_number(0, maximum=1), help=f"EMA decay {default('ema_decay')}")
    arg("--seed", type=_seed, help=f"random seed {default('seed')}")
    arg("--bf16", action=argparse.BooleanOptionalAction, default=None,
        help=f"run the network under bfloat16 autocast {default('bf16')}")
    arg("--log-every", type=_positive_int, help=f"steps between log lines {default('log_every')}")
    arg("--checkpoint-every", type=_positive_int, help=f"steps between checkpoints {default('checkpoint_every')}")
    arg("--device", help=f"auto (cuda if available), cpu, cuda or cuda:N {default('device')}")
    arg("--out", required=True, metavar="DIR", help="run directory for checkpoint.pt and log.jsonl")
    arg("--resume", action="store_true", help="continue the run in DIR where its checkpoint stopped")
    arg("--no-progress", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="draw samples from a trained model's EMA weights",
                                 description="Sample with the EMA weights of a checkpoint; write .npy or a .png grid.")
    arg = sample.add_argument
    arg("--checkpoint", required=True, metavar="DIR", help="a run directory (or its checkpoint.pt)")
    arg("--num", type=_num, default=64, help=f"number of samples, at most {MAX_NUM:,} (default 64)")
    arg("--sampler", choices=SAMPLERS, default="ddpm", help="ddpm (Algorithm 2) or ddim (default ddpm)")
    arg("--steps", type=_positive_int, help="denoising steps K <= T, evenly spaced (default T)")
    arg("--eta", type=_number(0, maximum=1, maximum_inclusive=True),
        help="DDIM noise in [0, 1]: 0 deterministic, 1 DDPM's variance (default 0; ddim only)")
    arg("--seed", type=_seed, default=0, help="random seed (default 0)")
    arg("--batch-size", type=_positive_int, default=256, help="samples per forward pass (default 256)")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    arg("--out", required=True, metavar="FILE", help="FILE.npy (float32 (N, C, H, W) in [-1, 1]) or FILE.png")
    arg("--no-progress", action="store_true", help="no progress bar")
    return parser


# ---------------------------------------------------------------------------------------------- train
def run_train(args) -> None:
    from .training import (CHECKPOINT_NAME, LOG_NAME, TrainConfig, check_run_dir, checkpoint_configs,
                           default_configs, read_checkpoint, train)

    out = _writable_path(args.out, "DIR")
    try:
        check_run_dir(out, args.resume)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    given = {name: getattr(args, name) for name in ("dataset", "steps", "time_budget", "batch_size", "lr",
             "weight_decay", "warmup_steps", "grad_clip", "ema_decay", "seed", "bf16", "log_every",
             "checkpoint_every", "device")}
    given = {name: value for name, value in given.items() if value is not None}
    if args.resume:
        configs = checkpoint_configs(read_checkpoint(out))  # the run's own settings, unless a flag changes them
        model_config, diffusion_config = configs["model_config"], configs["diffusion_config"]
        base = asdict(configs["train_config"])
    else:
        if "steps" not in given and "time_budget" not in given:
            raise UsageError("say when to stop: give --steps N, --time-budget SECONDS, or both")
        model_config, diffusion_config = default_configs(given.get("dataset", "digits"))
        base = {}
    try:
        config = TrainConfig(**(base | given))
    except ValueError as exc:
        raise UsageError(_flagify(str(exc))) from None
    _device(config.device)  # present on this machine?

    from .data import DatasetNotFoundError, default_data_root

    try:
        result = train(model_config, diffusion_config, config, out_dir=out, resume=args.resume,
                       progress=not args.no_progress)
    except DatasetNotFoundError:
        raise UsageError(f"--dataset {config.dataset}: its files are not under {default_data_root()} (set "
                         "DDPM_LITE_DATA to their folder, or fetch them there with torchvision), or use --dataset "
                         "digits, which ships offline") from None
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

    from .sampling import sample
    from .training import checkpoint_path, load_checkpoint

    out = _writable_path(args.out, "FILE")  # all of the output checks come before any sampling
    if out.is_dir():
        raise UsageError(f"--out {args.out!r} is a directory; name a file in it, e.g. {out / 'samples.npy'}")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--out {args.out!r} must end in .npy or .png")
    png = out.suffix.lower() == ".png"
    if png and args.num > MAX_PNG_NUM:
        raise UsageError(f"--num {args.num} is too many for a .png grid (at most {MAX_PNG_NUM}); write .npy instead")
    if args.eta is not None and args.sampler != "ddim":
        raise UsageError("--eta applies to --sampler ddim only")
    file = checkpoint_path(args.checkpoint)
    if not file.is_file():
        raise UsageError(f"no checkpoint at {file}; train one with `ddpm-lite train --out DIR`")
    device = _device(args.device)
    model, diffusion, configs = load_checkpoint(args.checkpoint, device=device, ema=True)
    T = diffusion.num_timesteps
    if args.steps is not None and args.steps > T:
        raise UsageError(f"--steps {args.steps} is more than the T = {T} steps of this model; use 1 to {T}")
    mc = configs["model_config"]
    image_shape = (mc.image_channels, mc.image_size, mc.image_size)
    _check_free_space(out, args.num * math.prod(image_shape) * 4)

    generator = torch.Generator(device).manual_seed(args.seed)

    def batches():  # (n, C, H, W) float32 in [-1, 1] on the CPU, batch by batch
        for start in range(0, args.num, args.batch_size):
            n = min(args.batch_size, args.num - start)
            x = sample(diffusion, model, (n, *image_shape), sampler=args.sampler, steps=args.steps,
                       eta=args.eta or 0.0, generator=generator, device=device, progress=not args.no_progress)
            yield x.clamp(-1, 1).to(torch.float32).cpu()

    out.parent.mkdir(parents=True, exist_ok=True)
    if png:
        save_image_grid(torch.cat(list(batches())), out)
    else:
        write_atomic(out, lambda f: _stream_npy(f, (args.num, *image_shape), batches()))
    print(f"wrote {args.num} samples ({args.sampler}, {args.steps or T} steps) to {out}")


def _stream_npy(f, shape: tuple[int, ...], batches) -> None:
    """Write an .npy file of float32 ``shape`` to the binary file f from an iterator of batches (n, ...).

    The header says the full shape; the data follow batch by batch (C order), so one batch is in memory at a time.
    """
    import numpy as np

    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
    written = 0
    for batch in batches:
        f.write(np.ascontiguousarray(batch.numpy(), dtype="<f4").tobytes())
        written += batch.shape[0]
    if written != shape[0]:
        raise RuntimeError(f"wrote {written} samples, expected {shape[0]}")


def _writable_path(text: str, what: str) -> Path:
    """--out as a Path, refused now (not after the work) when it is empty or its folder cannot be written."""
    if not text.strip():
        raise UsageError(f"--out is empty; give a {what}")
    path = Path(text).expanduser()
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--out {text!r}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {text!r}: cannot write in {existing} (permission denied); choose another --out")
    return path


def _check_free_space(path: Path, needed: int) -> None:
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UsageError(f"--num: the samples need {needed / 1e9:.1f} GB, {existing} has {free / 1e9:.1f} GB free; "
                         "ask for fewer or write elsewhere")


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but CUDA is not available; use --device cpu")
    return device


def save_image_grid(images, path, ncol: int | None = None, scale: int | None = None, padding: int = 2) -> None:
    """Write images (N, C, H, W) in [-1, 1] as one PNG grid (Pillow, imported here).

    ncol: images per row (default ceil(sqrt(N))); scale: nearest-neighbour enlargement (default: at least 64 px
    per image, so 8x8 digits become 64x64); ``padding`` white pixels between images.
    """
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("writing .png needs Pillow: pip install pillow (or write .npy)") from None
    from .plotting import image_grid

    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"a PNG grid needs 1 or 3 channels, got {c}")
    scale = scale or max(1, 64 // max(h, w))
    enlarged = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (N, C, sH, sW)
    grid = (image_grid(enlarged, ncol, pad=padding) * 255).round().astype("uint8")  # (H', W', C)
    array = grid[..., 0] if c == 1 else grid
    write_atomic(Path(path), lambda f: Image.fromarray(array).save(f, format="PNG"))


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    from .data import DatasetNotFoundError
    from .training import TrainingDiverged, TrainingInterrupted

    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: `ddpm-lite train ...` or `ddpm-lite sample ...` (see --help)")
        (run_train if args.command == "train" else run_sample)(args)
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
