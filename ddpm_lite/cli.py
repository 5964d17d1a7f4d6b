"""The ``ddpm-lite`` command (also ``python -m ddpm_lite``): train, sample, reconstruct, evaluate::

    ddpm-lite train  --dataset digits [--steps N | --time-budget SECONDS] [--batch-size B] [--seed S] --out DIR
                     [--resume] [--bf16] [--lr LR] ...
    ddpm-lite sample --checkpoint DIR --num N [--sampler ddpm|ddim|dpmpp_2m|dpmpp_2m_sde|churn] [--steps K] [--eta E]
                     [--seed S] --out FILE

    ddpm-lite reconstruct --checkpoint DIR --task denoise|inpaint|superres|sdedit --input FILE --out FILE
                     [--sigma S] [--mask FILE] [--method replace|repaint|ddnm] [--scale K] [--t T] [--steps K]
    ddpm-lite eval   --checkpoint DIR --metric fd|bpd [--num N] [--split heldout|train]

``train`` writes DIR/checkpoint.pt and DIR/log.jsonl; ``sample`` uses the EMA weights and writes FILE.npy
(float32 (N, C, H, W) in [-1, 1]) or FILE.png (a grid). ``reconstruct`` reads FILE.npy ((H, W), (C, H, W) or
(N, C, H, W) in [-1, 1]) or FILE.png and writes the same kinds. ``eval`` scores a model on held-out data. Several processes: ``torchrun --nproc_per_node 2 -m
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
    from .sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
    from .training import TrainConfig

    def default(name: str) -> str:  # the defaults live in TrainConfig
        return f"(default {TrainConfig.__dataclass_fields__[name].default})"

    parser = _Parser(prog=PROG, description="Train and sample denoising diffusion models (Ho et al. 2020).")
    commands = parser.add_subparsers(dest="command", metavar="{train,sample,reconstruct,eval}")

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
    arg("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
        help="ddpm (Algorithm 2), ddim, dpmpp_2m (DPM-Solver++(2M)), dpmpp_2m_sde (its SDE variant) or churn "
             f"(Karras et al. stochastic Heun) (default {DEFAULT_SAMPLER})")
    arg("--steps", type=_positive_int, help=f"network evaluations K <= T, placed by each sampler (default: T for "
        f"ddpm, {DEFAULT_STEPS} for the others; dpmpp_2m matched the full chain with 10 on the digits model)")
    arg("--eta", type=_number(0, maximum=1, maximum_inclusive=True),
        help="DDIM noise in [0, 1]: 0 deterministic, 1 DDPM's variance (default 0; ddim only)")
    arg("--seed", type=_seed, default=0, help="random seed (default 0)")
    arg("--batch-size", type=_positive_int, default=256, help="samples per forward pass (default 256)")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    arg("--out", required=True, metavar="FILE", help="FILE.npy (float32 (N, C, H, W) in [-1, 1]) or FILE.png")
    arg("--no-progress", action="store_true", help="no progress bar")
    _add_reconstruct_parser(commands)
    _add_eval_parser(commands)
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

    out = _output_file(args.out)  # all of the output checks come before any sampling
    png = out.suffix.lower() == ".png"
    if png and args.num > MAX_PNG_NUM:
        raise UsageError(f"--num {args.num} is too many for a .png grid (at most {MAX_PNG_NUM}); write .npy instead")
    if args.eta is not None and args.sampler != "ddim":
        raise UsageError(f"--eta applies to --sampler ddim only; drop it for --sampler {args.sampler}")
    if args.eta is not None and args.eta > 1:
        raise UsageError(f"--eta {args.eta:g} is above 1 (DDPM-like noise); use 0 to 1")
    model, diffusion, configs, device = _load_run(args)
    T = diffusion.num_timesteps
    steps = _sampling_steps(args, T)
    mc = configs["model_config"]
    image_shape = (mc.image_channels, mc.image_size, mc.image_size)
    _check_free_space(out, args.num * math.prod(image_shape) * 4)

    generator = torch.Generator(device).manual_seed(args.seed)

    def batches():  # (n, C, H, W) float32 in [-1, 1] on the CPU, batch by batch
        for start in range(0, args.num, args.batch_size):
            n = min(args.batch_size, args.num - start)
            x = sample(diffusion, model, (n, *image_shape), sampler=args.sampler, steps=steps,
                       eta=args.eta or 0.0, generator=generator, device=device, progress=not args.no_progress)
            yield x.clamp(-1, 1).to(torch.float32).cpu()

    out.parent.mkdir(parents=True, exist_ok=True)
    if png:
        save_image_grid(torch.cat(list(batches())), out)
    else:
        write_atomic(out, lambda f: _stream_npy(f, (args.num, *image_shape), batches()))
    print(f"wrote {args.num} samples ({args.sampler}, {steps} steps) to {out}")


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


def _output_file(text: str) -> Path:
    """--out FILE.npy or FILE.png: writable, not a directory; checked before any work starts."""
    out = _writable_path(text, "FILE")
    if out.is_dir():
        raise UsageError(f"--out {text!r} is a directory; name a file in it, e.g. {out / 'samples.npy'}")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--out {text!r} must end in .npy or .png")
    return out


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


def _load_run(args):
    """The EMA model of --checkpoint on --device: (model, diffusion, configs, device); a missing file is one line."""
    from .training import checkpoint_path, load_checkpoint

    file = checkpoint_path(args.checkpoint)
    if not file.is_file():
        raise UsageError(f"no checkpoint at {file}; train one with `ddpm-lite train --out DIR`")
    device = _device(args.device)
    return (*load_checkpoint(args.checkpoint, device=device, ema=True), device)


def _check_steps_fit(steps: int | None, T: int) -> None:
    """--steps must not exceed the model's T."""
    if steps is not None and steps > T:
        raise UsageError(f"--steps {steps} is more than the T = {T} steps of this model; use 1 to {T}")


def _sampling_steps(args, T: int) -> int:
    """--steps, checked against the model's T; by default T for ddpm (Algorithm 2) and DEFAULT_STEPS for the rest."""
    from .sampling import DEFAULT_STEPS

    if args.steps is None:
        return T if args.sampler == "ddpm" else min(DEFAULT_STEPS, T)
    _check_steps_fit(args.steps, T)
    return args.steps


def _device(name: str):
    from .training import default_device

    try:
        return default_device(name)
    except ValueError as exc:
        raise UsageError(_flagify(str(exc))) from None


def save_image_grid(images, path, ncol: int | None = None, scale: int | None = None, padding: int = 2) -> None:
    """Write images (N, C, H, W) in [-1, 1] as one PNG grid (Pillow, imported here).

    ncol: images per row (default ceil(sqrt(N))); scale: nearest-neighbour enlargement (default: at least 64 px
    per image, so 8x8 digits become 64x64); ``padding`` white pixels between images.
    """
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("writing .png needs Pillow: pip install pillow (or write .npy)") from None
    from .book.plotting import image_grid

    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"a PNG grid needs 1 or 3 channels, got {c}")
    scale = scale or max(1, 64 // max(h, w))
    enlarged = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (N, C, sH, sW)
    grid = (image_grid(enlarged, ncol, pad=padding) * 255).round().astype("uint8")  # (H', W', C)
    array = grid[..., 0] if c == 1 else grid
    write_atomic(Path(path), lambda f: Image.fromarray(array).save(f, format="PNG"))


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
    arg("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")


def _read_array(path: str, what: str, channels: int):
    """A .npy array as float32, or a .png as float32 in [-1, 1] (grey or RGB to match ``channels``)."""
    import numpy as np

    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"{what} {path!r}: no such file")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"{what} {path!r} is not a readable .npy array ({' '.join(str(exc).split())})") from None
        return np.asarray(array, dtype=np.float32)
    if suffix == ".png":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
        except (UnidentifiedImageError, OSError):
            raise UsageError(f"{what} {path!r} is not a readable PNG image") from None
        pixels = pixels / 127.5 - 1  # (H, W) or (H, W, 3) -> [-1, 1]
        return pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    raise UsageError(f"{what} {path!r} must end in .npy or .png")


def _as_batch(array, channels: int, size: int, what: str):
    """(H, W), (C, H, W) or (N, C, H, W) -> a float32 tensor (N, C, H, W) of the expected C and size."""
    import numpy as np
    import torch

    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != channels or array.shape[2:] != (size, size):
        raise UsageError(f"{what} has shape {tuple(array.shape)}; this model needs images of shape ({channels}, {size}, "
                         f"{size}) as (H, W), (C, H, W) or (N, C, H, W)")
    if not np.isfinite(array).all():
        raise UsageError(f"{what} contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array))


def _check_range(x, what: str) -> None:
    low, high = float(x.min()), float(x.max())
    if low < -1 - 1e-6 or high > 1 + 1e-6:
        raise UsageError(f"{what} has values in [{low:.3g}, {high:.3g}]; scale it to [-1, 1] (x / 127.5 - 1 for 8-bit "
                         "pixels)")


def run_reconstruct(args) -> None:
    import torch

    from . import reconstruction as R

    out = _output_file(args.out)
    needed = {"denoise": "sigma", "inpaint": "mask", "superres": "scale", "sdedit": "t"}[args.task]
    if getattr(args, needed) is None:
        raise UsageError(f"--task {args.task} needs --{needed}")
    model, diffusion, configs, device = _load_run(args)
    mc, T = configs["model_config"], diffusion.num_timesteps
    channels, size = mc.image_channels, mc.image_size
    _check_steps_fit(args.steps, T)

    # Read and check every input before any sampling starts.
    if args.task == "superres":
        if size % args.scale:
            raise UsageError(f"--scale {args.scale} does not divide the model's image size {size}; use a divisor such "
                             f"as {', '.join(str(k) for k in range(2, size + 1) if size % k == 0)}")
        x = _as_batch(_read_array(args.input, "--input", channels), channels, size // args.scale, "--input")
    else:
        x = _as_batch(_read_array(args.input, "--input", channels), channels, size, "--input")
    if args.task != "denoise":  # a noisy image may leave [-1, 1]; every other input is an image
        _check_range(x, "--input")
    if args.task == "sdedit" and args.t >= T:
        raise UsageError(f"--t {args.t} is outside 0 ... {T - 1} (T = {T})")
    if args.task == "denoise":
        try:
            R.timestep_for_sigma(diffusion, args.sigma)
        except ValueError as exc:
            raise UsageError(f"--sigma: {exc}") from None
    if args.task == "inpaint":
        mask = _read_array(args.mask, "--mask", 1)
        mask = (mask > 0).astype("float32") if Path(args.mask).suffix.lower() == ".png" else mask
        mask = torch.from_numpy(mask)
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
    _write_images(result.cpu().clamp(-1, 1).float(), out)
    print(f"wrote {len(result)} reconstructed image(s) ({args.task}) to {out}")


def _write_images(images, out: Path) -> None:
    """(N, C, H, W) in [-1, 1] -> out.npy (float32) or out.png (a grid), written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        import numpy as np

        write_atomic(out, lambda f: np.save(f, images.numpy()))
    else:
        save_image_grid(images, out)


# ---------------------------------------------------------------------------------------------- eval
def _add_eval_parser(commands) -> None:
    from .sampling import DEFAULT_STEPS, SAMPLERS

    ev = commands.add_parser(
        "eval", help="score a trained model on held-out data: Frechet distance (digits) or bits/dim",
        description="fd: the Frechet distance of N samples against the 360 held-out digits, with the floor at that N "
        "(N real training digits scored the same way). bpd: the variational bound in bits/dim on N images of the "
        "held-out (or training) split.")
    arg = ev.add_argument
    arg("--checkpoint", required=True, metavar="DIR", help="a run directory (or its checkpoint.pt)")
    arg("--metric", required=True, choices=("fd", "bpd"), help="fd (digits models only) or bpd")
    arg("--num", type=_positive_int, help="fd: samples, 2 ... 1437 (default 1000); bpd: images (default: all "
        "held-out digits, or 1000)")
    arg("--split", choices=("heldout", "train"), default="heldout", help="bpd: which split (default heldout)")
    arg("--sampler", choices=SAMPLERS, default="ddpm", help="fd: the sampler (default ddpm)")
    arg("--steps", type=_positive_int,
        help=f"fd: network evaluations K <= T (default: T for ddpm, {DEFAULT_STEPS} for the others)")
    arg("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    arg("--batch-size", type=_positive_int, default=500, help="images per forward pass (default 500)")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")


def run_eval(args) -> None:
    import torch

    from .data import load_dataset

    model, diffusion, configs, device = _load_run(args)
    dataset, T = configs["train_config"].dataset, diffusion.num_timesteps
    steps = _sampling_steps(args, T)
    generator = torch.Generator(device).manual_seed(args.seed)
    if args.metric == "fd":
        from .book.classifier import digits_fd, real_vs_real_floor
        from .sampling import sample

        if dataset != "digits":
            raise UsageError(f"--metric fd needs the digit classifier, so digits models only (this one: {dataset}); "
                             "use --metric bpd")
        num = args.num or 1000
        if not 2 <= num <= 1437:
            raise UsageError(f"--num {num}: fd needs 2 ... 1437 samples (the floor uses as many training digits)")
        mc = configs["model_config"]
        chunks = [sample(diffusion, model, (min(args.batch_size, num - start), mc.image_channels, mc.image_size,
                                            mc.image_size), sampler=args.sampler, steps=steps,
                         generator=generator, device=device).cpu() for start in range(0, num, args.batch_size)]
        fd, floor = digits_fd(torch.cat(chunks).clamp(-1, 1)), real_vs_real_floor(num, seed=args.seed)
        print(f"FD {fd:.2f} of {num} samples ({args.sampler}, {steps} steps) against the 360 held-out digits; "
              f"floor at n = {num} (real training digits): {floor:.2f}")
        return
    images = load_dataset(dataset, train=args.split == "train")
    images = images[: args.num or (len(images) if dataset == "digits" else 1000)]
    totals = torch.cat([diffusion.calc_bpd_loop(model, batch.to(device), clip_denoised=True,
                                                generator=generator)["total_bpd"].cpu()
                        for batch in images.split(args.batch_size)]).double()
    se = totals.std().item() / len(totals) ** 0.5 if len(totals) > 1 else float("nan")
    print(f"bits/dim {totals.mean().item():.3f} +- {se:.3f} (standard error) on {len(totals)} {args.split} images of "
          f"{dataset} ({T} terms)")


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
