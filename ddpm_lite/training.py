"""Training: Algorithm 1 of Ho et al. 2020, for the book's U-Net or any network of your own, on any image data.

Algorithm 1 (Training)::

    repeat
        x_0 ~ q(x_0)                                  # a random batch of training images
        t ~ Uniform({1, ..., T})                      # here indices 0 ... T-1 (index 0 is the paper's t = 1)
        eps ~ N(0, I)
        gradient step on  grad_theta || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2
    until converged

:func:`train_step` is one pass through that loop (AdamW, gradient-norm clipping, a linear learning-rate warm-up,
and the EMA update); :func:`train` repeats it until a step count or a time budget is reached. The model is any
``nn.Module`` ``model(x_t, t)`` that predicts what the diffusion config says (eps by default), or a
:class:`~ddpm_lite.unet.UNetConfig` to build the book's U-Net; the data are a dataset name, a tensor, a ``Dataset``
or ``DataLoader``, or a folder of images (:func:`ddpm_lite.data.as_images`). With ``out_dir`` it logs to
``DIR/log.jsonl`` and checkpoints to ``DIR/checkpoint.pt`` (:mod:`ddpm_lite.checkpoints`); the sampler uses the EMA
weights (Ho et al. use an EMA decay of 0.9999; a short run needs a shorter memory, see :class:`TrainConfig`).

Randomness: a U-Net's weights are initialised from ``seed`` (a model of your own comes initialised); the batch
indices, t and eps are drawn from one ``torch.Generator`` seeded with ``seed + rank``, whose state (with torch's
global RNG states) is checkpointed, so that ``resume=True`` continues bit for bit where a run stopped. Several
processes (``torchrun``): :mod:`ddpm_lite.distributed`.
"""
from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import checkpoints as ckpt
from . import distributed
from ._device import check_device_name
from ._progress import progress_bar
from ._threads import check_threads, num_threads
from ._random import MAX_SEED, rand, randint
from .data import DATASETS, SPLITS, as_images, load_dataset, load_dataset_with_labels
from .diffusion import DiffusionConfig, GaussianDiffusion
from .images import check_images
from .unet import UNet, UNetConfig

NUM_T_BINS = 4  # log.jsonl's "loss_by_t"[k] is the mean loss over t in [k T/4, (k+1) T/4)


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became NaN or inf; the last finite checkpoint was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped :func:`train`, after it saved a checkpoint at the current step."""

    def __init__(self, message: str, step: int, signum: int):
        super().__init__(message)
        self.step, self.signum = step, signum


def _option(default, help: str, resumable: bool = False):
    """A TrainConfig field: its default, the help the command line shows, and whether a resumed run may change it."""
    return field(default=default, metadata={"help": help, "resumable": resumable})


@dataclass(frozen=True)
class TrainConfig:
    """How to train (Algorithm 1). Checkpoints store it as a plain dict; ``ddpm-lite train``'s flags are its fields."""

    dataset: Optional[str] = _option("digits", "training images: a name in ddpm_lite.data.DATASETS (None: the data "
                                     "were passed to train())")
    split: str = _option("train", "which split of the dataset to train on: train or test (digits: the 360 held-out)")
    data: Optional[str] = _option(None, "a folder of images or a .npy file to train on instead of the dataset")
    batch_size: int = _option(128, "images per optimizer step and process (torchrun: the global batch is B x "
                              "processes)")
    lr: float = _option(2e-3, "AdamW learning rate after the warm-up")
    weight_decay: float = _option(0.0, "AdamW's decoupled weight decay")
    warmup_steps: int = _option(100, "the learning rate rises linearly from lr / warmup_steps to lr over these steps")
    grad_clip: float = _option(1.0, "clip the global gradient norm to this (Ho et al.: 1.0); 0 turns clipping off")
    ema_decay: float = _option(0.99, "EMA: ema <- decay ema + (1 - decay) theta, a memory of ~1 / (1 - decay) steps; "
                               "0.99 suits a few hundred to a few thousand steps (Ho et al.'s 0.9999 needs ~10^5)")
    steps: Optional[int] = _option(None, "stop at this many optimizer steps in total (counted across resumes)",
                                   resumable=True)
    time_budget: Optional[float] = _option(None, "stop after this many seconds of training in total; with steps: "
                                           "whichever comes first", resumable=True)
    bf16: bool = _option(False, "run the network under torch.autocast(dtype=bfloat16), on CPU and CUDA",
                         resumable=True)
    seed: int = _option(0, "seeds the initial U-Net weights; process `rank` draws batches, t and eps from seed + rank")
    log_every: int = _option(50, "append one line to DIR/log.jsonl every this many steps (and at the last step)",
                             resumable=True)
    checkpoint_every: int = _option(1000, "rewrite DIR/checkpoint.pt every this many steps (and at the last step)",
                                    resumable=True)
    device: str = _option("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N", resumable=True)
    threads: Union[int, str] = _option("auto", "CPU threads for torch: auto (the cores other programs leave free; "
                                       "ddpm_lite._threads) or a number", resumable=True)
    conditional: bool = _option(False, "train on the class labels too (a class-conditional U-Net, UNetConfig."
                                "num_classes); sample with classifier-free guidance (ddpm_lite.guidance)")
    label_dropout: float = _option(0.1, "conditional: the probability that a training label is replaced by the null "
                                   "class, which teaches the same network the unconditional model (Ho & Salimans "
                                   "2022: 0.1 to 0.2)")

    def __post_init__(self):
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"dataset {self.dataset!r} is not one of {DATASETS}; for your own images give data=PATH "
                             "(a folder or .npy file)")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
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
        if isinstance(self.label_dropout, bool) or not isinstance(self.label_dropout, (int, float)) \
                or not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be a probability in [0, 1) (0: never the null class), got "
                             f"{self.label_dropout!r}")
        if not all(math.isfinite(value) for value in (self.lr, self.weight_decay, self.grad_clip)):
            raise ValueError(f"lr, weight_decay and grad_clip must be finite, got {self.lr!r}, {self.weight_decay!r}, "
                             f"{self.grad_clip!r}")
        check_device_name(self.device)
        check_threads(self.threads)


RESUMABLE_CHANGES = tuple(f.name for f in fields(TrainConfig) if f.metadata["resumable"])  # the others must match


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum} ... {maximum}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")


def default_configs(dataset: str | tuple[int, ...] = "digits") -> tuple[UNetConfig, DiffusionConfig]:
    """The network and diffusion that ``ddpm-lite train`` uses for a dataset name, or for images of shape (C, H, W).

    digits (8x8, 17 grey levels): UNetConfig's defaults, which were chosen for it, a decoder L_0 over 17 bins, the
    cosine schedule (Nichol & Dhariwal 2021), which after 400 to 800 steps gave better samples than the linear
    one (a lower Frechet distance in ddpm_lite.metrics), as they found for low-resolution images, and
    v-prediction (Salimans & Ho 2022): at an equal 180 s of training on 2 cores it gave the lowest held-out
    Frechet distance of the candidates in benchmarks/bench_recipe.py (benchmarks/results/recipe.md), in the
    book's classifier features and in raw pixels alike. (The book's own cached model predicts eps, as the
    chapters teach: ddpm_lite.book.pretrained_digits_configs.)
    The 28x28 and 32x32 sets get a deeper U-Net (28 -> 14 -> 7, 32 -> 16 -> 8 -> 4), Ho et al.'s linear schedule
    and 256 bins. Images of another shape (your own folder): 2 levels up to 16 px, 3 up to 32, else 4, attention
    at the deepest level, the linear schedule and 256 bins (8-bit images).
    """
    if dataset == "digits":
        return UNetConfig(), DiffusionConfig(schedule="cosine", data_bins=17, model_mean_type="v")
    if dataset in ("mnist", "fashion_mnist"):
        model_config = UNetConfig(image_size=28, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(7,))
        return model_config, DiffusionConfig()
    if dataset == "cifar10":
        model_config = UNetConfig(image_channels=3, image_size=32, base_channels=64, channel_mult=(1, 2, 2, 2),
                                  num_res_blocks=2, attention_resolutions=(16,), dropout=0.1)
        return model_config, DiffusionConfig()
    if isinstance(dataset, str):
        raise ValueError(f"unknown dataset {dataset!r}; use one of {DATASETS}")
    if len(dataset) != 3 or dataset[1] != dataset[2]:
        raise ValueError(f"the U-Net takes square images (C, H, H), not {tuple(dataset)}; crop or pad them, or pass "
                         "a network of your own to train()")
    channels, size = dataset[0], dataset[1]
    levels = 2 if size <= 16 else 3 if size <= 32 else 4
    try:
        model_config = UNetConfig(image_channels=channels, image_size=size, channel_mult=(1, 2, 2, 2)[:levels],
                                  attention_resolutions=(size // 2 ** (levels - 1),))
    except ValueError as exc:
        raise ValueError(f"no U-Net for {size}x{size} images ({exc}); pad them to a multiple of {2 ** (levels - 1)} "
                         "pixels, or pass a network of your own to train()") from None
    return model_config, DiffusionConfig()


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
    labels: torch.Tensor | None = None,
) -> dict:
    """One iteration of Algorithm 1 on the batch x_start: (B, C, H, W).

    t ~ Uniform and eps ~ N(0, I) are drawn from ``generator`` inside ``diffusion.training_losses``; then one
    optimizer step on the mean loss, with the gradient norm clipped to ``grad_clip`` (0: no clipping), one
    learning-rate scheduler step and one EMA update. Returns training_losses' dict of detached (B,) tensors.
    validate=False skips training_losses' data check (:func:`train` checks its dataset once instead).
    labels: (B,) class labels of a class-conditional model, passed as ``model(x_t, t, y=labels)``.
    """
    network = model if labels is None else functools.partial(model, y=labels)
    with torch.autocast(x_start.device.type, dtype=torch.bfloat16, enabled=bf16):
        # lines 2-4 and the loss of line 5
        terms = diffusion.training_losses(network, x_start, generator=generator, validate=validate)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].mean().backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    ema.update_parameters(distributed.unwrap(model))
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


# ---------------------------------------------------------------------------------------------- what to train
@dataclass
class TrainResult:
    """What :func:`train` returns. ``ema_model`` (eval mode) is the network to sample from."""

    model: nn.Module  # the raw weights after the last step
    ema_model: nn.Module  # the EMA of the weights
    diffusion: GaussianDiffusion
    history: list[dict]  # the log records (as in log.jsonl), including those of earlier runs when resumed
    step: int  # optimizer steps taken in total
    configs: dict = field(default_factory=dict)  # model_config (None: your own model), diffusion_config, train_config


def training_data(data, config: TrainConfig, labels=None) -> tuple[torch.Tensor, torch.Tensor | None, TrainConfig,
                                                                     dict]:
    """The training images (N, C, H, W) in [-1, 1], their class labels (N,) int64 when ``config.conditional`` (else
    None), the config as the checkpoint records it, and a summary of the data {"source", "shape", "checksum"} (and
    "label_checksum"; resume checks that it is the same data).

    data None: ``config.data`` (a path) or else ``config.dataset``'s ``config.split`` (with the dataset's labels when
    conditional). Anything else: see :func:`ddpm_lite.data.as_images`, with ``labels`` (N,) class indices when
    conditional; a path is recorded in the config (``ddpm-lite train --resume`` reads it again), other data are not
    (pass them again to resume).
    """
    if labels is not None and not config.conditional:
        raise ValueError("labels were given but TrainConfig.conditional is False; set conditional=True to train on them")
    if data is None and config.data is not None:
        data = config.data
    if data is None:
        if config.dataset is None:
            raise ValueError("no training data: pass data=... (a tensor, Dataset, DataLoader or folder) or set "
                             "TrainConfig.dataset")
        train_split = config.split == "train"  # digits: never the held-out split
        if config.conditional:
            images, labels = load_dataset_with_labels(config.dataset, train=train_split)
        else:
            images = load_dataset(config.dataset, train=train_split)
        check_images(images, f"dataset {config.dataset!r}")  # once here, not at every step
        source = f"{config.dataset} ({config.split} split)"
    else:
        is_path = isinstance(data, (str, Path))
        data = Path(data).expanduser().resolve() if is_path else data  # resume finds it from any folder
        images = as_images(data)
        config = replace(config, dataset=None, data=str(data) if is_path else None)
        source = config.data if is_path else f"{type(data).__name__} passed to train()"
    summary = {"source": source, "shape": list(images.shape), "checksum": float(images.double().sum())}
    if config.conditional:
        labels = _check_labels(labels, len(images))
        summary["label_checksum"] = int(labels.sum())
    return images, labels, config, summary


def _check_labels(labels, num_images: int) -> torch.Tensor:
    """Class labels for conditional training: (N,) int64 in 0 ... K-1, one per image."""
    if labels is None:
        raise ValueError("conditional training on data of your own needs its class labels: train(..., data=images, "
                         "labels=LABELS) with LABELS a (N,) tensor of class indices 0 ... K-1")
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != (num_images,):
        raise ValueError(f"labels must be an integer tensor of shape ({num_images},), one class per image, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if num_images and int(labels.min()) < 0:
        raise ValueError(f"labels must be class indices >= 0, got {int(labels.min())}")
    return labels.long()


def _build_model(model, diffusion, data: torch.Tensor, config: TrainConfig, labels: torch.Tensor | None = None):
    """(network, its UNetConfig or None, the GaussianDiffusion), from what train() was given and the data's shape;
    conditional: the default U-Net gets num_classes = the largest label + 1."""
    default_model, default_diffusion = default_configs(config.dataset or tuple(data.shape[1:]))
    if labels is not None:
        default_model = replace(default_model, num_classes=int(labels.max()) + 1)
    if diffusion is None or isinstance(diffusion, DiffusionConfig):
        diffusion = GaussianDiffusion.from_config(diffusion or default_diffusion)
    if diffusion.config is None:
        raise ValueError("this GaussianDiffusion has no DiffusionConfig (built from raw betas), so a checkpoint could "
                         "not rebuild it; pass a DiffusionConfig, or GaussianDiffusion.from_config(...)")
    if diffusion.config.timesteps is not None:
        raise ValueError(f"this diffusion is respaced to {len(diffusion.config.timesteps)} of its steps, which is for "
                         "sampling; train on the full chain (pass the DiffusionConfig without timesteps)")
    if model is None or isinstance(model, UNetConfig):
        model_config = model or default_model
        _check_classes(model_config, labels)
        expected = (model_config.image_channels, model_config.image_size, model_config.image_size)
        if tuple(data.shape[1:]) != expected:
            raise ValueError(f"the training images are {tuple(data.shape[1:])}, but the model config expects "
                             f"{expected}; use default_configs({tuple(data.shape[1:])}) or a config of that size")
        torch.manual_seed(config.seed)  # the same initial weights in every process
        return UNet(model_config), model_config, diffusion
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a UNetConfig, got {type(model).__name__}")
    _check_output_shape(model, diffusion, data)
    return model, None, diffusion


def _check_classes(model_config: UNetConfig, labels: torch.Tensor | None) -> None:
    """A conditional run needs a U-Net with room for every label; an unconditional one a U-Net without classes."""
    if labels is None and model_config.num_classes is not None:
        raise ValueError(f"this U-Net is class-conditional (num_classes={model_config.num_classes}): train it with "
                         "TrainConfig(conditional=True) (ddpm-lite train --conditional) and labels")
    if labels is not None and (model_config.num_classes is None or int(labels.max()) >= model_config.num_classes):
        raise ValueError(f"conditional training on labels up to {int(labels.max())} needs "
                         f"UNetConfig(num_classes={int(labels.max()) + 1}) or more, got {model_config.num_classes}")


def _check_output_shape(model: nn.Module, diffusion: GaussianDiffusion, data: torch.Tensor) -> None:
    """Call the model once on two images (eval mode, no gradient, RNG untouched): its output must fit x_t."""
    x = data[:2]
    t = torch.zeros(len(x), dtype=torch.long)
    was_training = model.training
    device = next(model.parameters(), torch.empty(0)).device
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()
            out = model(x.to(device), t.to(device))
    except Exception as exc:
        raise ValueError(f"the model failed on a batch of training images {tuple(x.shape)} and t {tuple(t.shape)}: "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}; it must take (x_t, t)") from None
    finally:
        model.train(was_training)
    expected = list(x.shape)
    if diffusion.learns_sigma:
        expected[1] *= 2
    if not isinstance(out, torch.Tensor) or list(out.shape) != expected:
        raise ValueError(f"the model maps x_t {tuple(x.shape)} to {tuple(getattr(out, 'shape', ()))}, but the "
                         f"diffusion needs {tuple(expected)} (its prediction of {diffusion.config.model_mean_type} "
                         "for every pixel); reshape its output, e.g. out.view_as(x_t)")


# ---------------------------------------------------------------------------------------------- the loop
def train(
    model: nn.Module | UNetConfig | None = None,
    diffusion: GaussianDiffusion | DiffusionConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    data=None,
    labels=None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a network with Algorithm 1 until ``train_config.steps`` or ``.time_budget`` is reached.

    model: any ``nn.Module`` ``model(x_t, t) -> (B, C, H, W)`` (eps, x_0 or v, as the diffusion config says), or a
    UNetConfig for the book's U-Net; None: :func:`default_configs` of the data.
    diffusion: a DiffusionConfig (or a GaussianDiffusion built from one); None: :func:`default_configs`.
    train_config: required (it says when to stop), e.g. ``TrainConfig(steps=2000)``.
    data: the training images (:func:`training_data`); None: ``train_config``'s dataset and split.
    labels: (N,) class indices of ``data`` for ``train_config.conditional`` (a dataset brings its own).
    out_dir: where to write checkpoint.pt and log.jsonl; None keeps everything in memory.
    resume: continue the run in out_dir exactly where its checkpoint stopped (pass the same model and data);
    without it an existing checkpoint is never overwritten (FileExistsError).
    progress: show a tqdm bar with the running loss.

    Trains with ``train_config.threads`` CPU threads (default "auto": the free cores), then restores torch's setting.
    Sets torch's global RNG from ``train_config.seed`` (the trainer owns the randomness of its process).
    """
    if train_config is None:
        raise ValueError("pass a TrainConfig saying when to stop, e.g. TrainConfig(steps=2000)")
    out_dir = Path(out_dir).expanduser() if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs the out_dir of the run to continue")
    if out_dir is not None:
        ckpt.check_run_dir(out_dir, resume)  # before joining any process group: every rank fails alike
    images, labels, config, data_summary = training_data(data, train_config, labels)
    checkpoint = None
    if resume:
        checkpoint = ckpt.read_checkpoint(out_dir, "cpu", model=model if isinstance(model, nn.Module) else None)
        _check_resumable(checkpoint, model, diffusion, config, data_summary, out_dir)
    net, model_config, diffusion = _build_model(model, diffusion, images, config, labels)

    dist, device = distributed.setup(config.device)
    try:
        run = _Run(net, model_config, diffusion, config, images, labels, data_summary, dist, device, out_dir)
        if checkpoint is not None:
            run.restore(checkpoint)
        else:
            run.start_log()
        with num_threads(config.threads):  # restored afterwards
            return run.loop(progress)
    finally:
        distributed.teardown(dist)


class _Run:
    """The state of one training run (network, EMA, optimizer, RNG, step, log) and what it does between steps."""

    def __init__(self, model, model_config, diffusion, config, data, labels, data_summary, dist, device, out_dir):
        self.model, self.model_config, self.diffusion, self.config = model.to(device), model_config, diffusion, config
        self.labels = None if labels is None else labels.to(device)
        # the null class: the U-Net's own, or (a network of your own) one past the largest label
        self.null_class = None if labels is None else (
            model_config.num_classes if model_config is not None else int(labels.max()) + 1)
        self.data, self.data_summary, self.dist, self.device, self.out_dir = data.to(device), data_summary, dist, \
            device, out_dir
        self.is_writer = dist.rank == 0 and out_dir is not None
        self.optimizer, self.scheduler = make_optimizer(self.model, config)
        self.ema = make_ema(self.model, config.ema_decay)
        torch.manual_seed(config.seed + dist.rank)  # dropout masks differ between processes
        self.generator = torch.Generator(device).manual_seed(config.seed + dist.rank)
        self.step, self.elapsed_before, self.history, self.last_saved = 0, 0.0, [], None
        # Sums since the last log record: [loss, count, loss per t-bin (NUM_T_BINS), count per t-bin (NUM_T_BINS)].
        self.window = torch.zeros(2 + 2 * NUM_T_BINS, dtype=torch.float64, device=device)
        # The first step whose loss was not finite (-1: none yet), kept on the device: read only when logging or
        # checkpointing, so that the guard adds no GPU wait to the other steps.
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def loop(self, progress: bool) -> TrainResult:
        """Algorithm 1: draw x_0, take a step (t, eps and the gradient step are in train_step), until told to stop."""
        config, model = self.config, distributed.wrap(self.model, self.dist, self.device)
        self.start = self.last_log_time = time.perf_counter()
        self.last_log_step = self.step
        bar = progress_bar(total=config.steps, initial=self.step, desc="train", enabled=progress and self.dist.rank == 0)
        self.model.train()
        stop = self.should_stop()
        with _signals_set_a_flag(enabled=self.out_dir is not None) as signals:
            while not stop:
                index = randint(0, len(self.data), (config.batch_size,), self.generator, self.device)
                terms = train_step(model, self.diffusion, self.optimizer, self.scheduler, self.ema, self.data[index],
                                   generator=self.generator, grad_clip=config.grad_clip, bf16=config.bf16,
                                   validate=False, labels=self.batch_labels(index))
                self.step += 1
                bar.update(1)
                stop = self.should_stop()
                interrupted = distributed.any_process(bool(signals), self.dist, self.device)
                self.after_step(terms, stop or interrupted, bar)
                if interrupted:
                    bar.close()
                    self.interrupted(signals[0] if signals else signal.SIGINT)
        bar.close()
        distributed.check_in_sync(self.model, self.dist, self.device)
        configs = {"model_config": self.model_config, "diffusion_config": self.diffusion.config,
                   "train_config": config}
        return TrainResult(model=self.model, ema_model=self.ema.module.eval(), diffusion=self.diffusion,
                           history=self.history, step=self.step, configs=configs)

    def batch_labels(self, index: torch.Tensor) -> torch.Tensor | None:
        """The batch's labels, each replaced by the null class with probability label_dropout (Ho & Salimans 2022,
        Algorithm 1): (B,) int64, or None for an unconditional run."""
        if self.labels is None:
            return None
        drop = rand(len(index), self.generator, self.device) < self.config.label_dropout
        return torch.where(drop, self.null_class, self.labels[index])

    def should_stop(self) -> bool:
        """At config.steps, or after config.time_budget seconds (rank 0's clock decides for every process)."""
        config = self.config
        if config.steps is not None and self.step >= config.steps:
            return True
        if config.time_budget is None:
            return False
        elapsed = self.elapsed_before + time.perf_counter() - self.start
        return distributed.rank0_decides(elapsed >= config.time_budget, self.dist, self.device)

    def after_step(self, terms: dict, last: bool, bar) -> None:
        """The divergence guard, the log record and the checkpoint, each when its step comes."""
        config, step = self.config, self.step
        loss = terms["loss"].double()
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~torch.isfinite(loss).all(), step,
                                          self.first_bad_step)
        log, save = step % config.log_every == 0 or last, step % config.checkpoint_every == 0 or last
        if log or save:
            bad = distributed.earliest(self.first_bad_step, self.dist)
            if bad is not None:
                raise TrainingDiverged(self.diverged_message(bad, "the loss"))
        _accumulate(self.window, loss, terms["t"] * NUM_T_BINS // self.diffusion.num_timesteps)
        if log:
            record = self.log_record()
            self.history.append(record)
            if self.is_writer:
                ckpt.append_log(self.out_dir / ckpt.LOG_NAME, record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)  # shown at the next draw
        if save and self.out_dir is not None:
            self.save()

    def log_record(self) -> dict:
        """One log.jsonl record from the sums of the window since the previous record; then a new window."""
        window = distributed.sum_over_processes(self.window, self.dist)
        now = time.perf_counter()
        images = (self.step - self.last_log_step) * self.config.batch_size * self.dist.world_size
        sums = window.tolist()
        bin_sums, bin_counts = sums[2:2 + NUM_T_BINS], sums[2 + NUM_T_BINS:]
        record = {
            "step": self.step,
            "loss": sums[0] / sums[1],  # mean per-sample loss since the previous record
            "lr": self.optimizer.param_groups[0]["lr"],  # the rate of the next step
            "elapsed": round(self.elapsed_before + now - self.start, 3),  # seconds of training in total
            "images_per_s": round(images / max(now - self.last_log_time, 1e-9), 1),  # all processes together
            "loss_by_t": [s / c if c else None for s, c in zip(bin_sums, bin_counts)],  # t-bin k: [kT/4, (k+1)T/4)
            "world_size": self.dist.world_size,
        }
        self.window.zero_()
        self.last_log_time, self.last_log_step = now, self.step
        return record

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write DIR/checkpoint.pt atomically, unless the weights are no longer finite (then TrainingDiverged)."""
        if not _all_finite(self.model) or not _all_finite(self.ema.module):
            raise TrainingDiverged(self.diverged_message(self.step, "the weights"))
        rng = distributed.gather(_rng_state(self.generator, self.device), self.dist)  # each process resumes its own
        if self.is_writer:
            ckpt.write_checkpoint(
                self.out_dir / ckpt.CHECKPOINT_NAME, self.model, self.model_config,
                diffusion_config=asdict(self.diffusion.config), train_config=asdict(self.config), data=self.data_summary,
                model=self.model.state_dict(), ema=self.ema.module.state_dict(),
                ema_num_averaged=int(self.ema.n_averaged), optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(), step=self.step,
                elapsed=self.elapsed_before + time.perf_counter() - self.start, world_size=self.dist.world_size, rng=rng)
        self.last_saved = self.step

    def restore(self, checkpoint: dict) -> None:
        """Continue from a checkpoint: weights, EMA, optimizer, scheduler, step, clock, RNG streams and log."""
        self.model.load_state_dict(checkpoint["model"])
        self.ema.module.load_state_dict(checkpoint["ema"])
        self.ema.n_averaged.fill_(checkpoint["ema_num_averaged"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.step, self.elapsed_before = checkpoint["step"], checkpoint["elapsed"]
        self.last_saved = self.step
        if checkpoint["world_size"] == self.dist.world_size:
            _set_rng_state(checkpoint["rng"][self.dist.rank], self.generator, self.device)
        else:  # another number of processes: fresh, still deterministic, streams
            warnings.warn(f"the checkpoint was written by {checkpoint['world_size']} processes, this run has "
                          f"{self.dist.world_size}: the resumed run is not bit-identical to an uninterrupted one")
            self.generator.manual_seed((self.config.seed + self.dist.rank + 1_000_003 * self.step) % 2**63)
        if (self.out_dir / ckpt.LOG_NAME).is_file():
            # Drop records of steps after the checkpoint: they are about to be redone.
            self.history = [record for record in ckpt.read_log(self.out_dir) if record["step"] <= self.step]
        if self.is_writer:
            ckpt.write_log(self.out_dir / ckpt.LOG_NAME, self.history)

    def start_log(self) -> None:
        if self.is_writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if (self.out_dir / ckpt.LOG_NAME).is_file():
                warnings.warn(f"replacing {self.out_dir / ckpt.LOG_NAME}, left by a run that stopped before its "
                              "first checkpoint")
            ckpt.write_log(self.out_dir / ckpt.LOG_NAME, [])

    def interrupted(self, signum: int):
        name = signal.Signals(signum).name
        raise TrainingInterrupted(f"{name} at step {self.step}: saved {self.out_dir / ckpt.CHECKPOINT_NAME}; continue "
                                  f"with `ddpm-lite train --out {self.out_dir} --resume`", self.step, signum)

    def diverged_message(self, step: int, what: str) -> str:
        config, out_dir = self.config, self.out_dir
        if out_dir is None:
            kept = "nothing was saved (out_dir is None)"
        elif self.last_saved is None:
            kept = "no checkpoint was written (none was finite)"
        else:
            kept = f"{out_dir / ckpt.CHECKPOINT_NAME} keeps step {self.last_saved}, the last finite weights"
        return (f"training diverged: {what} became NaN or inf at step {step}; {kept}. Likely causes: the learning "
                f"rate {config.lr:g} is too high (start a new run with a lower one, e.g. --lr {config.lr / 10:g}), or "
                "the data are not finite or not scaled to [-1, 1]")


def _accumulate(window: torch.Tensor, loss: torch.Tensor, bins: torch.Tensor) -> None:
    """Add one step's per-sample losses (B,) and their t-bins (B,) to the sums of the current log window."""
    window[0] += loss.sum()
    window[1] += loss.numel()
    window[2:2 + NUM_T_BINS].index_add_(0, bins, loss)
    window[2 + NUM_T_BINS:].index_add_(0, bins, torch.ones_like(loss))


def _all_finite(model: nn.Module) -> bool:
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())


def _check_resumable(checkpoint: dict, model, diffusion, config: TrainConfig, data_summary: dict, out_dir) -> None:
    """The network, the diffusion, the data and the optimisation must be those of the checkpoint; and there must be
    something left to do."""
    stored_model = checkpoint["model_config"]
    if isinstance(model, UNetConfig) and asdict(model) != stored_model:
        raise ValueError("the model config differs from the checkpoint's; resume with the same configs (or none)")
    diffusion_config = diffusion.config if isinstance(diffusion, GaussianDiffusion) else diffusion
    if diffusion_config is not None and asdict(diffusion_config) != checkpoint["diffusion_config"]:
        raise ValueError("the diffusion config differs from the checkpoint's; resume with the same configs (or none)")
    stored_data = checkpoint.get("data")
    if stored_data is not None and (stored_data["shape"], stored_data["checksum"]) != (data_summary["shape"],
                                                                                       data_summary["checksum"]):
        raise ValueError(f"the training data differ from the checkpoint's ({data_summary['source']}, "
                         f"{data_summary['shape']} vs {stored_data['source']}, {stored_data['shape']}); resume with "
                         "the same data")
    if stored_data is not None and stored_data.get("label_checksum") != data_summary.get("label_checksum"):
        raise ValueError("the training labels differ from the checkpoint's; resume with the same labels")
    for name, old in checkpoint["train_config"].items():
        new = getattr(config, name)
        if name not in RESUMABLE_CHANGES and new != old:
            raise ValueError(f"the checkpoint was trained with {name}={old!r}, not {new!r}; resume with the same value")
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
