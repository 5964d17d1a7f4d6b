"""The ``ddpm-lite`` command (also ``python -m ddpm_lite``): train a model, or sample from a trained one.

    ddpm-lite train  --dataset digits [--steps N | --time-budget SECONDS] [--batch-size B] [--seed S] --out DIR
                     [--resume] [--bf16] [--lr LR] ...
    ddpm-lite sample --checkpoint DIR --num N [--sampler ddpm|ddim|dpmpp_2m|dpmpp_2m_sde|churn] [--steps K] [--eta E]
                     [--seed S] --out FILE

``train`` writes DIR/checkpoint.pt and DIR/log.jsonl; ``sample`` uses the EMA weights and writes FILE.npy
(float32 (N, C, H, W) in [-1, 1]) or FILE.png (a grid). Several processes: ``torchrun --nproc_per_node 2 -m
ddpm_lite train ...``. Flag defaults are the fields of :class:`~ddpm_lite.training.TrainConfig`.

A bad argument prints one line, ``ddpm-lite: error: ...``, and exits with status 2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

PROG = "ddpm-lite"
OUTPUT_SUFFIXES = (".npy", ".png")


class UsageError(Exception):
    """A bad command line: reported as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line naming the fix instead of a usage block."""

    def error(self, message):
        raise UsageError(message)


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= minimum, else a one-line error naming what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _number(minimum: float, inclusive: bool = True, maximum: float | None = None):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        low_ok = value >= minimum if inclusive else value > minimum
        if not math.isfinite(value) or not low_ok or (maximum is not None and value >= maximum):
            bounds = f"{'>=' if inclusive else '>'} {minimum:g}"
            bounds += f" and < {maximum:g}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"expected a number {bounds}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .sampling import DEFAULT_SAMPLER, SAMPLERS
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
    arg("--seed", type=_non_negative_int, help=f"random seed {default('seed')}")
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
    arg("--num", type=_positive_int, default=64, help="number of samples (default 64)")
    arg("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
        help="ddpm (Algorithm 2), ddim, dpmpp_2m (DPM-Solver++(2M)), dpmpp_2m_sde (its SDE variant) or churn "
             f"(Karras et al. stochastic Heun) (default {DEFAULT_SAMPLER})")
    arg("--steps", type=_positive_int, help="network evaluations K <= T, placed by each sampler (default T; "
        "with dpmpp_2m_sde, 20 matched the full chain on the digits model)")
    arg("--eta", type=_number(0), help="DDIM noise from 0 (deterministic) to 1 (DDPM-like) (default 0; ddim only)")
    arg("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    arg("--batch-size", type=_positive_int, default=256, help="samples per forward pass (default 256)")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    arg("--out", required=True, metavar="FILE", help="FILE.npy (float32 (N, C, H, W) in [-1, 1]) or FILE.png")
    arg("--no-progress", action="store_true", help="no progress bar")
    return parser


# ---------------------------------------------------------------------------------------------- train
def run_train(args) -> None:
    from .training import (CHECKPOINT_NAME, LOG_NAME, TrainConfig, checkpoint_configs, default_configs,
                           read_checkpoint, train)

    out = Path(args.out).expanduser()
    given = {name: getattr(args, name) for name in ("dataset", "steps", "time_budget", "batch_size", "lr",
             "weight_decay", "warmup_steps", "grad_clip", "ema_decay", "seed", "bf16", "log_every",
             "checkpoint_every", "device")}
    given = {name: value for name, value in given.items() if value is not None}
    if args.resume:
        if not (out / CHECKPOINT_NAME).is_file():
            raise UsageError(f"nothing to resume: no {out / CHECKPOINT_NAME}; drop --resume to start a new run")
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

    out = Path(args.out).expanduser()
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--out {args.out!r} must end in .npy or .png")
    if args.eta is not None and args.sampler != "ddim":
        raise UsageError(f"--eta applies to --sampler ddim only; drop it for --sampler {args.sampler}")
    if args.eta is not None and args.eta > 1:
        raise UsageError(f"--eta {args.eta:g} is above 1 (DDPM-like noise); use 0 to 1")
    file = checkpoint_path(args.checkpoint)
    if not file.is_file():
        raise UsageError(f"no checkpoint at {file}; train one with `ddpm-lite train --out DIR`")
    device = _device(args.device)
    model, diffusion, configs = load_checkpoint(args.checkpoint, device=device, ema=True)
    T = diffusion.num_timesteps
    if args.steps is not None and args.steps > T:
        raise UsageError(f"--steps {args.steps} is more than the T = {T} steps of this model; use 1 to {T}")

    mc = configs["model_config"]
    generator = torch.Generator(device).manual_seed(args.seed)
    chunks = []
    for start in range(0, args.num, args.batch_size):
        n = min(args.batch_size, args.num - start)
        chunks.append(sample(diffusion, model, (n, mc.image_channels, mc.image_size, mc.image_size),
                             sampler=args.sampler, steps=args.steps, eta=args.eta or 0.0, generator=generator,
                             device=device, progress=not args.no_progress).cpu())
    images = torch.cat(chunks).clamp(-1, 1).to(torch.float32)  # (N, C, H, W)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        import numpy as np

        _write_atomic(out, lambda f: np.save(f, images.numpy()))
    else:
        save_image_grid(images, out)
    print(f"wrote {args.num} samples ({args.sampler}, {args.steps or T} steps) to {out}")


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
    _write_atomic(Path(path), lambda f: Image.fromarray(array).save(f, format="PNG"))


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    from .data import DatasetNotFoundError

    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: `ddpm-lite train ...` or `ddpm-lite sample ...` (see --help)")
        (run_train if args.command == "train" else run_sample)(args)
    except (UsageError, DatasetNotFoundError, FileExistsError, FileNotFoundError, ValueError, ImportError) as exc:
        message = " ".join(str(exc).split())  # one line, always
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; a train run continues from its last checkpoint with --resume", file=sys.stderr)
        return 130
    return 0
