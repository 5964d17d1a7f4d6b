"""Checkpoints and logs of a training run: the one place where they are written, read and checked.

A run directory holds ``checkpoint.pt`` (rewritten atomically every ``checkpoint_every`` steps) and ``log.jsonl``
(one JSON object per logged step). A checkpoint is a dict of tensors and plain data, read with
``torch.load(weights_only=True)`` so that loading runs no code from the file::

    format             CHECKPOINT_FORMAT
    model_config       the UNetConfig as a dict, or None for a model of your own (see below)
    model_class        "module.QualName" of the network (informative: it is never imported)
    diffusion_config   the DiffusionConfig as a dict
    train_config       the TrainConfig as a dict
    data               {"source", "shape", "checksum"} of the training images (resume checks it is the same data)
    model, ema         state dicts: the raw weights and their exponential moving average
    ema_num_averaged, optimizer, scheduler, step, elapsed, world_size, rng   what resume needs to continue bit for bit

**Your own model.** A checkpoint of a U-Net rebuilds it from ``model_config``. A checkpoint of any other
``nn.Module`` holds its weights only: build the module as you did for training and pass it,
``load_checkpoint(DIR, model=MyNet(...))`` (and ``train(MyNet(...), ..., resume=True)`` to continue). Its state dict
must fit, tensor by tensor.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ._io import remove_stale_temporaries, save_atomic, write_atomic
from .diffusion import DiffusionConfig, GaussianDiffusion
from .unet import UNet, UNetConfig

CHECKPOINT_NAME = "checkpoint.pt"  # DIR/checkpoint.pt: the one checkpoint file of a run
LOG_NAME = "log.jsonl"  # DIR/log.jsonl: one JSON object per logged step
CHECKPOINT_FORMAT = 2  # bump when the layout changes; 2 added model_class and data (format 1: a U-Net, read too)
READABLE_FORMATS = (1, 2)
CHECKPOINT_KEYS = ("format", "model_config", "diffusion_config", "train_config", "model", "ema", "ema_num_averaged",
                   "optimizer", "scheduler", "step", "elapsed", "world_size", "rng")
TRAIN_COMMAND = "`ddpm-lite train --out DIR`"


class CheckpointError(ValueError):
    """A file that is not a usable ddpm_lite checkpoint; the message names the file and what to do."""


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


def model_class_name(model: nn.Module) -> str:
    """"module.QualName" of a network, as a checkpoint records it."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def write_checkpoint(path: Path, network: nn.Module, model_config: UNetConfig | None, **entries) -> None:
    """Write a checkpoint dict atomically: the format, the network's config (None: your own) and class, then
    ``entries`` (the other keys of the layout above) as given."""
    save_atomic({"format": CHECKPOINT_FORMAT, "model_config": asdict(model_config) if model_config else None,
                 "model_class": model_class_name(network), **entries}, path)


# ---------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike, device="cpu", model: nn.Module | None = None) -> dict:
    """Read and validate a checkpoint: the one place where checkpoint files are opened. ``path``: a run dir or file.

    After ``torch.load(weights_only=True)`` its layout, its configs (:func:`checkpoint_configs`) and the shapes of its
    weights are checked: against a U-Net of its model config (built on the meta device: no memory, no computation),
    or against ``model`` (your own module) when given; the weights must be finite. Anything else is a
    :class:`CheckpointError` of one line naming the file.
    """
    file = checkpoint_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {file}; train one with {TRAIN_COMMAND}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: one line per error, nothing more
            warnings.simplefilter("ignore")
            checkpoint = torch.load(file, map_location=device, weights_only=True)
    except Exception as exc:
        if "global" in str(exc).lower():  # torch's weights-only unpickler met a class or function to import
            raise CheckpointError(
                f"{file} holds Python objects besides tensors and plain data, which loading would have to run as "
                "code; it was refused unread. Use a checkpoint written by ddpm_lite (never load a file from "
                "someone you do not trust with weights_only=False)") from None
        size = file.stat().st_size
        state = "is empty" if size == 0 else f"is not a readable PyTorch file ({size} bytes: truncated or another format)"
        raise CheckpointError(f"{file} {state}; train again with {TRAIN_COMMAND}, or resume a run "
                              "from an intact checkpoint.pt") from None
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise CheckpointError(f"{file} is not a ddpm_lite checkpoint (no 'format' entry); use the checkpoint.pt "
                              f"that {TRAIN_COMMAND} writes")
    if checkpoint["format"] not in READABLE_FORMATS:
        raise CheckpointError(f"{file} has checkpoint format {checkpoint['format']!r}, this ddpm_lite reads formats "
                              f"{READABLE_FORMATS}; use the ddpm_lite version that wrote it")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{file} lacks {missing}: an incomplete ddpm_lite checkpoint; train again")
    configs = checkpoint_configs(checkpoint, file)
    if model is not None:
        expected = {name: value.shape for name, value in model.state_dict().items()}
        against = f"the given {type(model).__name__}"
    elif configs["model_config"] is not None:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            expected = {name: value.shape for name, value in UNet(configs["model_config"]).state_dict().items()}
        against = "the U-Net of its own model_config"
    else:
        raise CheckpointError(f"{file} holds a model of your own ({checkpoint.get('model_class', 'not a U-Net')}), "
                              "which ddpm_lite cannot rebuild from the file; build it as for training and pass it: "
                              "load_checkpoint(path, model=YourNet(...))")
    for part in ("model", "ema"):
        _check_weights(checkpoint[part], expected, f"{file}: its {part!r} weights", against)
    return checkpoint


def _check_weights(state: dict, expected: dict, what: str, against: str) -> None:
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{what} are not a state dict of tensors; train again")
    shapes = {name: value.shape for name, value in state.items()}
    if shapes != expected:
        wrong = sorted(set(shapes) ^ set(expected)) or [n for n in shapes if shapes[n] != expected[n]]
        raise CheckpointError(f"{what} do not fit {against} ({len(wrong)} tensors differ, e.g. {wrong[0]!r}); "
                              "pass the network the checkpoint was trained with (or train again)")
    if not all(bool(torch.isfinite(value).all()) for value in state.values() if value.is_floating_point()):
        raise CheckpointError(f"{what} contain NaN or inf (a run that diverged); train again with a lower --lr")


def checkpoint_configs(checkpoint: dict, file: str | os.PathLike = "the checkpoint") -> dict:
    """The configs stored in a checkpoint dict, as dataclasses: model_config (None: your own model),
    diffusion_config, train_config. An unknown key or a bad value is a :class:`CheckpointError` naming ``file``.
    """
    from .training import TrainConfig  # the trainer's config; training imports this module

    configs = {}
    for key, cls in (("model_config", UNetConfig), ("diffusion_config", DiffusionConfig),
                     ("train_config", TrainConfig)):
        stored = checkpoint[key]
        if stored is None and key == "model_config":
            configs[key] = None
            continue
        if not isinstance(stored, dict):
            raise CheckpointError(f"{file}: its {key} is not a dict of settings; train again")
        unknown = sorted(set(stored) - set(cls.__dataclass_fields__))
        if unknown:
            raise CheckpointError(f"{file}: its {key} has keys this ddpm_lite does not know, {unknown}; use the "
                                  "ddpm_lite version that wrote it, or train again")
        try:
            configs[key] = cls(**stored)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{file}: its {key} is invalid ({' '.join(str(exc).split())}); train again") from None
    return configs


def load_checkpoint(path: str | os.PathLike, device="cpu", ema: bool = True,
                    model: nn.Module | None = None) -> tuple[nn.Module, GaussianDiffusion, dict]:
    """A trained network for sampling: (model in eval mode, diffusion, configs).

    path: a run directory or its checkpoint.pt. ema: the EMA weights (what to sample from) or the raw ones.
    model: your own network (a checkpoint of a model that is not a ddpm_lite U-Net needs it): its weights are
    replaced by the checkpoint's, and it is returned. configs: {"model_config" (a UNetConfig, or None),
    "diffusion_config", "train_config" (dataclasses), "step" (int), "data" (what it was trained on, or None)}.
    """
    checkpoint = read_checkpoint(path, device, model=model)
    configs = checkpoint_configs(checkpoint) | {"step": checkpoint["step"], "data": checkpoint.get("data")}
    if model is None:
        with torch.random.fork_rng(devices=[]):  # the random initial weights are overwritten: leave the RNG as it was
            model = UNet(configs["model_config"])
    model.load_state_dict(checkpoint["ema" if ema else "model"])
    model.to(device).eval()
    return model, GaussianDiffusion.from_config(configs["diffusion_config"]), configs


# ---------------------------------------------------------------------------------------------- logs
def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a run's log.jsonl (``path``: the run directory or the file).

    A last line cut short (the process was killed while appending it) is dropped with a warning; a broken line
    before the last is a ValueError naming it.
    """
    path = Path(path)
    path = path / LOG_NAME if path.is_dir() else path
    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for k, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if k < len(lines) - 1:
                raise ValueError(f"line {number} of {path} is not JSON; delete that line (or the file) and "
                                 "try again") from None
            warnings.warn(f"dropped the last line of {path}, cut short when its run stopped", stacklevel=2)
    return records


def write_log(path: Path, records: list[dict]) -> None:
    """Rewrite log.jsonl atomically with ``records`` (strict JSON: a NaN would be an error, not a bare NaN)."""
    text = "".join(json.dumps(record, allow_nan=False) + "\n" for record in records)
    write_atomic(path, lambda f: f.write(text.encode()))


def append_log(path: Path, record: dict) -> None:
    """Append one record to log.jsonl."""
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------- run directories
def check_run_dir(out_dir: str | os.PathLike, resume: bool) -> Path:
    """Check a run directory before any work: never overwrite a run, never resume one that is not there.

    Every state a stopped run can leave is accepted by one of the two: a directory with a checkpoint is resumed
    (``resume=True``); one with only a log.jsonl (killed before its first checkpoint) holds no resumable work and
    is started afresh. Stale temporary files of killed writes are removed. Returns the directory as a Path.
    """
    out_dir = Path(out_dir).expanduser()
    checkpoint, log = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a run directory; choose another output directory")
    if resume and not checkpoint.is_file():
        hint = (f" ({log} is from a run stopped before its first checkpoint, with nothing to resume)"
                if log.is_file() else "")
        raise FileNotFoundError(f"nothing to resume: no {checkpoint}{hint}; drop --resume to start a new run there")
    if not resume and checkpoint.exists():
        raise FileExistsError(f"{checkpoint} already exists; continue that run with --resume (resume=True) "
                              "or choose another output directory")
    if int(os.environ.get("RANK", "0")) == 0 and out_dir.is_dir():
        for file in (checkpoint, log):
            remove_stale_temporaries(file)
    return out_dir
