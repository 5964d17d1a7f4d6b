"""Training: Algorithm 1 of Ho et al. 2020, an EMA of the weights, checkpoints and exact resume.

Algorithm 1 (Training)::

    repeat
        x_0 ~ q(x_0)                                  # a random batch of training images
        t ~ Uniform({1, ..., T})                      # here indices 0 ... T-1 (index 0 is the paper's t = 1)
        eps ~ N(0, I)
        gradient step on  grad_theta || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2
    until converged

:func:`train_step` is one pass through that loop (AdamW, gradient-norm clipping, a linear learning-rate
warm-up, and the EMA update); :func:`train` repeats it until a step count or a time budget is reached, logs to
``DIR/log.jsonl`` and checkpoints to ``DIR/checkpoint.pt``. The sampler uses the EMA weights (Ho et al. use an
EMA decay of 0.9999; a short run needs a shorter memory, see :class:`TrainConfig`).

Randomness: the weights are initialised from ``seed``; the batch indices, t and eps are drawn from one
``torch.Generator`` seeded with ``seed + rank``, whose state (with torch's global RNG states) is checkpointed,
so that ``resume=True`` continues bit for bit where a run stopped.

Several processes: launched by ``torchrun``, :func:`train` reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``,
initialises a process group (gloo on CPU, nccl on CUDA) and wraps the network in DistributedDataParallel. Each
process draws its own batches (``batch_size`` per process) and only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ._random import randint
from ._io import remove_stale_temporaries, save_atomic, write_atomic
from .data import DATASETS, load_dataset
from .diffusion import DiffusionConfig, GaussianDiffusion
from .unet import UNet, UNetConfig

CHECKPOINT_NAME = "checkpoint.pt"  # DIR/checkpoint.pt: the one checkpoint file of a run
LOG_NAME = "log.jsonl"  # DIR/log.jsonl: one JSON object per logged step
CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes
NUM_T_BINS = 4  # log.jsonl's "loss_by_t"[k] is the mean loss over t in [k T/4, (k+1) T/4)

# TrainConfig fields that may change when a run is resumed (when to stop, logging, hardware); the others
# define the optimisation and must match the checkpoint.
RESUMABLE_CHANGES = ("steps", "time_budget", "bf16", "log_every", "checkpoint_every", "device")
MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds; the trainer adds the process rank to it


class CheckpointError(ValueError):
    """A file that is not a usable ddpm_lite checkpoint; the message names the file and what to do."""


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became NaN or inf; the last finite checkpoint was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped :func:`train`, after it saved a checkpoint at the current step."""

    def __init__(self, message: str, step: int, signum: int):
        super().__init__(message)
        self.step, self.signum = step, signum


@dataclass(frozen=True)
class TrainConfig:
    """How to train (Algorithm 1). Checkpoints store it as a plain dict; the CLI's flags default to it."""

    dataset: str = "digits"  # a name in ddpm_lite.data.DATASETS; its training split is held in memory (digits: 1,437)
    batch_size: int = 128  # images per optimizer step and process (torchrun: the global batch is B x processes)
    lr: float = 2e-3  # AdamW learning rate after the warm-up
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 100  # the learning rate rises linearly from lr / warmup_steps to lr over these steps
    grad_clip: float = 1.0  # clip the global gradient norm to this (Ho et al.: 1.0); 0 turns clipping off
    ema_decay: float = 0.99  # EMA: ema <- decay ema + (1 - decay) theta, a memory of ~1 / (1 - decay) steps; 0.99 suits
    # runs of a few hundred to a few thousand steps (Ho et al.'s 0.9999 needs ~10^5 steps to forget the initial weights)
    steps: int | None = None  # stop at this many optimizer steps in total (counted across resumes) ...
    time_budget: float | None = None  # ... or after this many seconds of training in total; whichever is first
    bf16: bool = False  # run the network under torch.autocast(dtype=bfloat16), on CPU and CUDA
    seed: int = 0  # seeds the initial weights; process `rank` draws batches, t and eps from seed + rank
    log_every: int = 50  # append one line to DIR/log.jsonl every this many steps (and at the last step)
    checkpoint_every: int = 1000  # rewrite DIR/checkpoint.pt every this many steps (and at the last step)
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N"

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; use one of {DATASETS}")
        for name in ("batch_size", "log_every", "checkpoint_every"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("warmup_steps", self.warmup_steps, minimum=0)
        _check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        if self.steps is not None:
            _check_int("steps", self.steps, minimum=1)
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be a positive number of seconds, got {self.time_budget!r}")
        if self.steps is None and self.time_budget is None:
            raise ValueError("say when training stops: set steps, time_budget, or both")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not (self.weight_decay >= 0 and self.grad_clip >= 0):
            raise ValueError(f"weight_decay and grad_clip must be >= 0, got {self.weight_decay!r}, {self.grad_clip!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not all(math.isfinite(value) for value in (self.lr, self.weight_decay, self.grad_clip)):
            raise ValueError(f"lr, weight_decay and grad_clip must be finite, got {self.lr!r}, {self.weight_decay!r}, "
                             f"{self.grad_clip!r}")
        check_device_name(self.device)


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum} ... {maximum}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")


def check_device_name(name: str) -> None:
    """Raise a ValueError unless ``name`` is "auto" or a device torch knows ("cpu", "cuda", "cuda:1", ...).

    Whether that device is present is checked when training starts (a checkpoint may be resumed elsewhere).
    """
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def default_device(name: str = "auto") -> torch.device:
    """The device ``name`` names; "auto" (the default) is cuda when a GPU is present, else cpu.

    The one place where ddpm_lite picks a device: the trainer, the CLI and the book's setup cell call it.
    Raises a ValueError for a device torch does not know, or for cuda on a machine without one.
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine; use cpu or auto")
    return device


def default_configs(dataset: str = "digits") -> tuple[UNetConfig, DiffusionConfig]:
    """The network and diffusion that ``ddpm-lite train --dataset NAME`` uses.

    digits (8x8, 17 grey levels): UNetConfig's defaults, which were chosen for it, a decoder L_0 over 17 bins, and
    the cosine schedule (Nichol & Dhariwal 2021), which after 400 to 800 steps gave better samples than the linear
    one (a lower Frechet distance in ddpm_lite.metrics), as they found for low-resolution images.
    The 28x28 and 32x32 sets get a deeper U-Net (28 -> 14 -> 7, 32 -> 16 -> 8 -> 4), Ho et al.'s linear schedule
    and 256 bins.
    """
    if dataset == "digits":
        return UNetConfig(), DiffusionConfig(schedule="cosine", data_bins=17)
    if dataset in ("mnist", "fashion_mnist"):
        model_config = UNetConfig(image_size=28, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(7,))
        return model_config, DiffusionConfig()
    if dataset == "cifar10":
        model_config = UNetConfig(image_channels=3, image_size=32, base_channels=64, channel_mult=(1, 2, 2, 2),
                                  num_res_blocks=2, attention_resolutions=(16,), dropout=0.1)
        return model_config, DiffusionConfig()
    raise ValueError(f"unknown dataset {dataset!r}; use one of {DATASETS}")


# ---------------------------------------------------------------------------------------------- one step
def train_step(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: AveragedModel,
    x_start: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    grad_clip: float = 1.0,
    bf16: bool = False,
    validate: bool = True,
) -> dict:
    """One iteration of Algorithm 1 on the batch x_start: (B, C, H, W).

    t ~ Uniform and eps ~ N(0, I) are drawn from ``generator`` inside ``diffusion.training_losses``; then one
    optimizer step on the mean loss, with the gradient norm clipped to ``grad_clip`` (0: no clipping), one
    learning-rate scheduler step and one EMA update. Returns training_losses' dict of detached (B,) tensors.
    validate=False skips training_losses' data check (:func:`train` checks its dataset once instead).
    """
    with torch.autocast(x_start.device.type, dtype=torch.bfloat16, enabled=bf16):
        # lines 2-4 and the loss of line 5
        terms = diffusion.training_losses(model, x_start, generator=generator, validate=validate)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].mean().backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    ema.update_parameters(_unwrap(model))
    return {name: value.detach() for name, value in terms.items()}


def make_optimizer(model: nn.Module, config: TrainConfig):
    """AdamW and a linear warm-up of its learning rate over ``config.warmup_steps`` steps (then constant)."""
    # foreach: one fused update over all parameter tensors (on CPU the default loops over them one by one)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    warmup = max(config.warmup_steps, 1)
    # Step s (0-based) uses lr * min(1, (s + 1) / warmup): lr / warmup first, lr from step warmup - 1 on.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    return optimizer, scheduler


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of the weights: after each step ema <- decay ema + (1 - decay) theta.

    The first update copies the weights (torch's AveragedModel convention).
    """
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------- checkpoints
def checkpoint_path(path: str | os.PathLike) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


CHECKPOINT_KEYS = ("format", "model_config", "diffusion_config", "train_config", "model", "ema", "ema_num_averaged",
                   "optimizer", "scheduler", "step", "elapsed", "world_size", "rng")


def read_checkpoint(path: str | os.PathLike, device="cpu") -> dict:
    """Read and validate a checkpoint: the one place where checkpoint files are opened. ``path``: a run dir or file.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so loading runs
    no code from the file. Then its layout, its configs (:func:`checkpoint_configs`) and the shapes of its weights
    (against a U-Net of its model config, built on the meta device: no memory, no computation) are checked, and
    the weights must be finite. Anything else is a :class:`CheckpointError` of one line naming the file.
    """
    file = checkpoint_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {file}; train one with `ddpm-lite train --out DIR`")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: one line per error, nothing more
            warnings.simplefilter("ignore")
            checkpoint = torch.load(file, map_location=device, weights_only=True)
    except Exception as exc:
        if "global" in str(exc).lower():  # torch's weights-only unpickler met a class or function to import
            raise CheckpointError(
                f"{file} holds Python objects besides tensors and plain data, which loading would have to run as "
                "code; it was refused unread. Use a checkpoint written by `ddpm-lite train` (never load a file from "
                "someone you do not trust with weights_only=False)") from None
        size = file.stat().st_size
        state = "is empty" if size == 0 else f"is not a readable PyTorch file ({size} bytes: truncated or another format)"
        raise CheckpointError(f"{file} {state}; train again with `ddpm-lite train --out DIR`, or resume a run "
                              "from an intact checkpoint.pt") from None
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise CheckpointError(f"{file} is not a ddpm_lite checkpoint (no 'format' entry); use the checkpoint.pt "
                              "that `ddpm-lite train --out DIR` writes")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file} has checkpoint format {checkpoint['format']!r}, this ddpm_lite reads format "
                              f"{CHECKPOINT_FORMAT}; use the ddpm_lite version that wrote it")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{file} lacks {missing}: an incomplete ddpm_lite checkpoint; train again")
    configs = checkpoint_configs(checkpoint, file)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        expected = {name: value.shape for name, value in UNet(configs["model_config"]).state_dict().items()}
    for part in ("model", "ema"):
        _check_weights(checkpoint[part], expected, f"{file}: its {part!r} weights")
    return checkpoint


def _check_weights(state: dict, expected: dict, what: str) -> None:
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{what} are not a state dict of tensors; train again")
    shapes = {name: value.shape for name, value in state.items()}
    if shapes != expected:
        wrong = sorted(set(shapes) ^ set(expected)) or [n for n in shapes if shapes[n] != expected[n]]
        raise CheckpointError(f"{what} do not fit the U-Net of its own model_config ({len(wrong)} tensors differ, "
                              f"e.g. {wrong[0]!r}); the file was edited or mixed from two runs: train again")
    if not all(bool(torch.isfinite(value).all()) for value in state.values() if value.is_floating_point()):
        raise CheckpointError(f"{what} contain NaN or inf (a run that diverged); train again with a lower --lr")


def checkpoint_configs(checkpoint: dict, file: str | os.PathLike = "the checkpoint") -> dict:
    """The configs stored in a checkpoint dict, as dataclasses: model_config, diffusion_config, train_config.

    An unknown key or a bad value is a :class:`CheckpointError` naming ``file``.
    """
    configs = {}
    for key, cls in (("model_config", UNetConfig), ("diffusion_config", DiffusionConfig),
                     ("train_config", TrainConfig)):
        stored = checkpoint[key]
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


def load_checkpoint(path: str | os.PathLike, device="cpu", ema: bool = True) -> tuple[UNet, GaussianDiffusion, dict]:
    """A trained network for sampling: (model in eval mode, diffusion, configs).

    path: a run directory or its checkpoint.pt. ema: the EMA weights (what to sample from) or the raw ones.
    configs: {"model_config", "diffusion_config", "train_config" (dataclasses), "step" (int)}.
    """
    checkpoint = read_checkpoint(path, device)
    configs = checkpoint_configs(checkpoint) | {"step": checkpoint["step"]}
    with torch.random.fork_rng(devices=[]):  # the random initial weights are overwritten: leave the RNG as it was
        model = UNet(configs["model_config"])
    model.load_state_dict(checkpoint["ema" if ema else "model"])
    model.to(device).eval()
    return model, GaussianDiffusion.from_config(configs["diffusion_config"]), configs


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


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    """What :func:`train` returns. ``ema_model`` (eval mode) is the network to sample from."""

    model: UNet  # the raw weights after the last step
    ema_model: UNet  # the EMA of the weights
    diffusion: GaussianDiffusion
    history: list[dict]  # the log records (as in log.jsonl), including those of earlier runs when resumed
    step: int  # optimizer steps taken in total
    configs: dict = field(default_factory=dict)  # model_config, diffusion_config, train_config


@dataclass
class _Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False  # destroy the process group at the end

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _setup_distributed(device_name: str) -> tuple[_Distributed, torch.device]:
    """Read torchrun's environment, pick the device and, for several processes, join the process group."""
    dist = _Distributed(
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    device = default_device(device_name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())
        torch.cuda.set_device(device)
    if dist.enabled and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        dist.initialised_here = True
    return dist, device


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


def _check_resumable(checkpoint: dict, model_config, diffusion_config, train_config) -> None:
    """The network, the diffusion and the optimisation must be those of the checkpoint."""
    if asdict(model_config) != checkpoint["model_config"] or asdict(diffusion_config) != checkpoint["diffusion_config"]:
        raise ValueError("the model or diffusion config differs from the checkpoint's; resume with the same configs")
    for name, old in checkpoint["train_config"].items():
        new = getattr(train_config, name)
        if name not in RESUMABLE_CHANGES and new != old:
            raise ValueError(f"the checkpoint was trained with {name}={old!r}, not {new!r}; resume with the same value")


def _check_not_done(checkpoint: dict, config: TrainConfig, out_dir: Path) -> None:
    """Resuming a run that has already reached where it is asked to stop is an error, not a silent no-op."""
    step, elapsed = checkpoint["step"], checkpoint["elapsed"]
    if config.steps is not None and config.steps <= step:
        raise ValueError(f"the run in {out_dir} is already at step {step}, so steps={config.steps} leaves nothing to "
                         f"do; to train further ask for more (--steps {2 * step})")
    if config.time_budget is not None and config.time_budget <= elapsed:
        raise ValueError(f"the run in {out_dir} has already trained {elapsed:.0f} s, past time_budget="
                         f"{config.time_budget:g}; to train further ask for more (--time-budget {2 * elapsed:.0f})")


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    return {
        "generator": generator.get_state(),  # batch indices, t and eps
        "torch": torch.get_rng_state(),  # the global CPU RNG (dropout on the CPU)
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,  # dropout on the GPU
    }


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    model_config: UNetConfig | None = None,
    diffusion_config: DiffusionConfig | None = None,
    train_config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a U-Net eps_theta with Algorithm 1 until ``train_config.steps`` or ``.time_budget`` is reached.

    model_config, diffusion_config: default :func:`default_configs` of ``train_config.dataset``.
    train_config: required in practice (it says when to stop), e.g. ``TrainConfig(steps=2000)``.
    out_dir: where to write checkpoint.pt and log.jsonl; None keeps everything in memory.
    resume: continue the run in out_dir exactly where its checkpoint stopped; without it an existing
    checkpoint is never overwritten (FileExistsError).
    progress: show a tqdm bar with the running loss.

    Sets torch's global RNG from ``train_config.seed`` (the trainer owns the randomness of its process).
    """
    if train_config is None:
        raise ValueError("pass a TrainConfig saying when to stop, e.g. TrainConfig(steps=2000)")
    default_model, default_diffusion = default_configs(train_config.dataset)
    model_config = model_config or default_model
    diffusion_config = diffusion_config or default_diffusion
    out_dir = Path(out_dir).expanduser() if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs the out_dir of the run to continue")
    if out_dir is not None:
        check_run_dir(out_dir, resume)  # before joining any process group: every rank fails alike
    checkpoint = read_checkpoint(out_dir, "cpu") if resume else None
    if checkpoint is not None:
        _check_resumable(checkpoint, model_config, diffusion_config, train_config)
        _check_not_done(checkpoint, train_config, out_dir)

    data = load_dataset(train_config.dataset, train=True)  # (N, C, H, W) in [-1, 1]; never the held-out split
    GaussianDiffusion.check_data(data, f"dataset {train_config.dataset!r}")  # once here, not at every step
    expected = (model_config.image_channels, model_config.image_size, model_config.image_size)
    if tuple(data.shape[1:]) != expected:
        raise ValueError(f"dataset {train_config.dataset!r} has images {tuple(data.shape[1:])}, "
                         f"but the model config expects {expected}; use default_configs({train_config.dataset!r})")

    dist, device = _setup_distributed(train_config.device)
    try:
        return _train(model_config, diffusion_config, train_config, data, dist, device, out_dir, checkpoint, progress)
    finally:
        if dist.initialised_here:
            torch.distributed.destroy_process_group()


def _train(model_config, diffusion_config, train_config, data, dist, device, out_dir, checkpoint, progress):
    config = train_config
    is_writer = dist.rank == 0 and out_dir is not None
    diffusion = GaussianDiffusion.from_config(diffusion_config)
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = UNet(model_config).to(device)
    optimizer, scheduler = make_optimizer(model, config)
    ema = make_ema(model, config.ema_decay)
    torch.manual_seed(config.seed + dist.rank)  # dropout masks differ between processes
    generator = torch.Generator(device).manual_seed(config.seed + dist.rank)
    data = data.to(device)
    step, elapsed_before, history = 0, 0.0, []

    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        ema.module.load_state_dict(checkpoint["ema"])
        ema.n_averaged.fill_(checkpoint["ema_num_averaged"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        step, elapsed_before = checkpoint["step"], checkpoint["elapsed"]
        if checkpoint["world_size"] == dist.world_size:
            _set_rng_state(checkpoint["rng"][dist.rank], generator, device)
        else:  # another number of processes: fresh, still deterministic, streams
            warnings.warn(f"the checkpoint was written by {checkpoint['world_size']} processes, this run has "
                          f"{dist.world_size}: the resumed run is not bit-identical to an uninterrupted one")
            generator.manual_seed((config.seed + dist.rank + 1_000_003 * step) % 2**63)
        if out_dir is not None and (out_dir / LOG_NAME).is_file():
            # Drop records of steps after the checkpoint: they are about to be redone.
            history = [record for record in read_log(out_dir) if record["step"] <= step]
        if is_writer:
            _write_log(out_dir / LOG_NAME, history)
    elif is_writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        if (out_dir / LOG_NAME).is_file():
            warnings.warn(f"replacing {out_dir / LOG_NAME}, left by a run that stopped before its first checkpoint")
        _write_log(out_dir / LOG_NAME, [])

    train_model = model
    if dist.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def save_checkpoint():
        """Write DIR/checkpoint.pt atomically, unless the weights are no longer finite (then TrainingDiverged)."""
        if not _all_finite(model) or not _all_finite(ema.module):
            raise TrainingDiverged(_diverged_message(step, "the weights", config, out_dir, last_saved))
        rng = [_rng_state(generator, device)]
        if dist.enabled:  # every process's RNG states, so that each one resumes its own streams
            rng = [None] * dist.world_size
            torch.distributed.all_gather_object(rng, _rng_state(generator, device))
        if is_writer:
            save_atomic({
                "format": CHECKPOINT_FORMAT,
                "model_config": asdict(model_config),
                "diffusion_config": asdict(diffusion_config),
                "train_config": asdict(config),
                "model": model.state_dict(),
                "ema": ema.module.state_dict(),
                "ema_num_averaged": int(ema.n_averaged),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "elapsed": elapsed_before + time.perf_counter() - start,
                "world_size": dist.world_size,
                "rng": rng,
            }, out_dir / CHECKPOINT_NAME)
        return step

    T = diffusion.num_timesteps
    # Sums since the last log record: [loss, count, loss per t-bin (NUM_T_BINS), count per t-bin (NUM_T_BINS)].
    window = torch.zeros(2 + 2 * NUM_T_BINS, dtype=torch.float64, device=device)
    # The first step whose loss was not finite (-1: none yet), kept on the device: read only when logging or
    # checkpointing, so that the guard adds no GPU wait to the other steps.
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    last_saved = step if checkpoint is not None else None  # the step of DIR/checkpoint.pt, the last good one
    start = last_log_time = time.perf_counter()
    last_log_step = step
    bar = _progress_bar(config.steps, step, enabled=progress and dist.rank == 0)
    model.train()
    stop = _should_stop(config, step, elapsed_before, dist, device)
    with _signals_set_a_flag(enabled=out_dir is not None) as signals:
        while not stop:
            index = randint(0, len(data), (config.batch_size,), generator, device)
            terms = train_step(train_model, diffusion, optimizer, scheduler, ema, data[index], generator=generator,
                               grad_clip=config.grad_clip, bf16=config.bf16, validate=False)
            step += 1
            bar.update(1)
            loss = terms["loss"].double()
            first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss).all(), step, first_bad_step)
            stop = _should_stop(config, step, elapsed_before + time.perf_counter() - start, dist, device)
            interrupted = _any_process(bool(signals), dist, device)
            sync_point = step % config.log_every == 0 or step % config.checkpoint_every == 0 or stop or interrupted
            if sync_point:
                bad = _first_bad_step(first_bad_step, dist)
                if bad is not None:
                    raise TrainingDiverged(_diverged_message(bad, "the loss", config, out_dir, last_saved))
            window = _accumulate(window, loss, terms["t"] * NUM_T_BINS // T)
            if step % config.log_every == 0 or stop:
                record = _log_record(window, step, last_log_step, last_log_time, start, elapsed_before, config,
                                     optimizer, dist)
                history.append(record)
                if is_writer:
                    with open(out_dir / LOG_NAME, "a") as f:
                        f.write(json.dumps(record, allow_nan=False) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                window.zero_()
                last_log_time, last_log_step = time.perf_counter(), step
            if out_dir is not None and (step % config.checkpoint_every == 0 or stop or interrupted):
                last_saved = save_checkpoint()
            if interrupted:
                bar.close()
                signum = signals[0] if signals else signal.SIGINT
                name = signal.Signals(signum).name
                raise TrainingInterrupted(f"{name} at step {step}: saved {out_dir / CHECKPOINT_NAME}; continue "
                                          f"with `ddpm-lite train --out {out_dir} --resume`", step, signum)
    bar.close()
    if dist.enabled:
        _check_in_sync(model, device)

    ema_model = ema.module.eval()
    configs = {"model_config": model_config, "diffusion_config": diffusion_config, "train_config": config}
    return TrainResult(model=model, ema_model=ema_model, diffusion=diffusion, history=history, step=step,
                       configs=configs)


def _accumulate(window: torch.Tensor, loss: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Add one step's per-sample losses (B,) and their t-bins (B,) to the sums of the current log window."""
    window[0] += loss.sum()
    window[1] += loss.numel()
    window[2:2 + NUM_T_BINS].index_add_(0, bins, loss)
    window[2 + NUM_T_BINS:].index_add_(0, bins, torch.ones_like(loss))
    return window


def _log_record(window, step, last_log_step, last_log_time, start, elapsed_before, config, optimizer, dist) -> dict:
    """One log.jsonl record from the sums of the window since the previous record."""
    if dist.enabled:
        torch.distributed.all_reduce(window)
    now = time.perf_counter()
    images = (step - last_log_step) * config.batch_size * dist.world_size
    sums = window.tolist()
    bin_sums, bin_counts = sums[2:2 + NUM_T_BINS], sums[2 + NUM_T_BINS:]
    return {
        "step": step,
        "loss": sums[0] / sums[1],  # mean per-sample loss since the previous record
        "lr": optimizer.param_groups[0]["lr"],  # the rate of the next step
        "elapsed": round(elapsed_before + now - start, 3),  # seconds of training in total
        "images_per_s": round(images / max(now - last_log_time, 1e-9), 1),  # all processes together
        "loss_by_t": [s / c if c else None for s, c in zip(bin_sums, bin_counts)],  # t-bin k: [kT/4, (k+1)T/4)
        "world_size": dist.world_size,
    }


def _all_finite(model: nn.Module) -> bool:
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())


def _first_bad_step(first_bad_step: torch.Tensor, dist: _Distributed) -> int | None:
    """The earliest step (over all processes) whose loss was NaN or inf, or None."""
    value = first_bad_step.clone()
    if dist.enabled:  # every process must take the same decision, or the next collective would wait forever
        value = torch.where(value < 0, torch.iinfo(torch.long).max, value)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        value = torch.where(value == torch.iinfo(torch.long).max, -1, value)
    value = int(value)
    return value if value >= 0 else None


def _diverged_message(step: int, what: str, config: TrainConfig, out_dir: Path | None, last_saved: int | None) -> str:
    if out_dir is None:
        kept = "nothing was saved (out_dir is None)"
    elif last_saved is None:
        kept = "no checkpoint was written (none was finite)"
    else:
        kept = f"{out_dir / CHECKPOINT_NAME} keeps step {last_saved}, the last finite weights"
    return (f"training diverged: {what} became NaN or inf at step {step}; {kept}. Likely causes: the learning rate "
            f"{config.lr:g} is too high (start a new run with a lower one, e.g. --lr {config.lr / 10:g}), or the "
            "data are not finite or not scaled to [-1, 1]")


def _any_process(flag: bool, dist: _Distributed, device) -> bool:
    """True in every process if ``flag`` is True in any (a signal may reach the processes at different steps)."""
    if not dist.enabled:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


@contextlib.contextmanager
def _signals_set_a_flag(enabled: bool):
    """While training, SIGINT (Ctrl-C) and SIGTERM append their number to the yielded list instead of stopping
    the process mid-step; the loop then finishes its step, saves a checkpoint and raises TrainingInterrupted.

    A second signal acts at once (the previous handler is back after the first). Python lets only the main
    thread set handlers: elsewhere, and when ``enabled`` is False (nothing to save to), nothing changes.
    """
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {}

    def handler(signum, frame):
        received.append(signum)
        signal.signal(signum, previous[signum])

    for signum in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(signum)
        previous[signum] = old if old is not None else signal.SIG_DFL
        signal.signal(signum, handler)
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class _NoBar:
    """Stands in for a tqdm bar when progress is off (tqdm.auto is then never imported: it can warn on stderr)."""

    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _progress_bar(total, initial, enabled):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train")


def _should_stop(config: TrainConfig, step: int, elapsed: float, dist: _Distributed, device) -> bool:
    """Stop at config.steps or after config.time_budget seconds. Rank 0's clock decides for every process."""
    if config.steps is not None and step >= config.steps:
        return True
    if config.time_budget is None:
        return False
    stop = elapsed >= config.time_budget
    if dist.enabled:  # processes must stop at the same step, or the next all-reduce would wait forever
        flag = torch.tensor([float(stop)], device=device)
        torch.distributed.broadcast(flag, src=0)
        stop = bool(flag.item())
    return stop


def _check_in_sync(model: nn.Module, device) -> None:
    """DistributedDataParallel keeps the processes' weights equal; check it (cheap, once, at the end)."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    reference = flat.clone()
    torch.distributed.broadcast(reference, src=0)
    differs = torch.tensor([float(not torch.equal(flat, reference))], device=device)
    torch.distributed.all_reduce(differs)
    if differs.item():
        raise RuntimeError("the processes' weights diverged during distributed training")


def _write_log(path: Path, records: list[dict]) -> None:
    """Rewrite log.jsonl atomically with ``records`` (strict JSON: a NaN would be an error, not a bare NaN)."""
    text = "".join(json.dumps(record, allow_nan=False) + "\n" for record in records)
    write_atomic(path, lambda f: f.write(text.encode()))
