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
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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
        _check_int("seed", self.seed, minimum=0)
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


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


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
) -> dict:
    """One iteration of Algorithm 1 on the batch x_start: (B, C, H, W).

    t ~ Uniform and eps ~ N(0, I) are drawn from ``generator`` inside ``diffusion.training_losses``; then one
    optimizer step on the mean loss, with the gradient norm clipped to ``grad_clip`` (0: no clipping), one
    learning-rate scheduler step and one EMA update. Returns training_losses' dict of detached (B,) tensors.
    """
    with torch.autocast(x_start.device.type, dtype=torch.bfloat16, enabled=bf16):
        terms = diffusion.training_losses(model, x_start, generator=generator)  # lines 2-4 and the loss of line 5
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
def save_atomic(obj, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically: write a temporary file beside it, then ``os.replace``.

    A crash leaves either the old file or the new one, never half of one, and no temporary file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


def read_checkpoint(path: str | os.PathLike, device="cpu") -> dict:
    """Load a checkpoint dict without unpickling code (``weights_only=True``). ``path``: a run dir or file."""
    file = checkpoint_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {file}; train one with `ddpm-lite train --out DIR`")
    checkpoint = torch.load(file, map_location=device, weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{file} is not a ddpm_lite checkpoint (format {CHECKPOINT_FORMAT})")
    return checkpoint


def checkpoint_configs(checkpoint: dict) -> dict:
    """The configs stored in a checkpoint dict, as dataclasses: model_config, diffusion_config, train_config."""
    return {
        "model_config": UNetConfig(**checkpoint["model_config"]),
        "diffusion_config": DiffusionConfig(**checkpoint["diffusion_config"]),
        "train_config": TrainConfig(**checkpoint["train_config"]),
    }


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
    """The records of a run's log.jsonl (``path``: the run directory or the file)."""
    path = Path(path)
    path = path / LOG_NAME if path.is_dir() else path
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device_name!r} asked for, but CUDA is not available; use device 'cpu'")
        if device.index is None:
            device = torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())
        torch.cuda.set_device(device)
    if dist.enabled and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        dist.initialised_here = True
    return dist, device


def _prepare_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run (no data is ever lost) and refuse to resume a run that is not there."""
    checkpoint, log = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    if resume and not checkpoint.is_file():
        raise FileNotFoundError(f"nothing to resume: no {checkpoint}; drop --resume to start a new run there")
    if not resume:
        for existing in (checkpoint, log):
            if existing.exists():
                raise FileExistsError(
                    f"{existing} already exists; continue that run with --resume (resume=True) "
                    "or choose another output directory"
                )


def _check_resumable(checkpoint: dict, model_config, diffusion_config, train_config) -> None:
    """The network, the diffusion and the optimisation must be those of the checkpoint."""
    if asdict(model_config) != checkpoint["model_config"] or asdict(diffusion_config) != checkpoint["diffusion_config"]:
        raise ValueError("the model or diffusion config differs from the checkpoint's; resume with the same configs")
    for name, old in checkpoint["train_config"].items():
        new = getattr(train_config, name)
        if name not in RESUMABLE_CHANGES and new != old:
            raise ValueError(f"the checkpoint was trained with {name}={old!r}, not {new!r}; resume with the same value")


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
        _prepare_out_dir(out_dir, resume)  # before joining any process group: every rank fails alike
    checkpoint = read_checkpoint(out_dir, "cpu") if resume else None
    if checkpoint is not None:
        _check_resumable(checkpoint, model_config, diffusion_config, train_config)

    data = load_dataset(train_config.dataset, train=True)  # (N, C, H, W) in [-1, 1]; never the held-out split
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
            generator.manual_seed(config.seed + dist.rank + 1_000_003 * step)
        if out_dir is not None and (out_dir / LOG_NAME).is_file():
            # Drop records of steps after the checkpoint: they are about to be redone.
            history = [record for record in read_log(out_dir) if record["step"] <= step]
        if is_writer:
            _write_log(out_dir / LOG_NAME, history)
    elif is_writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_log(out_dir / LOG_NAME, [])

    train_model = model
    if dist.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def save_checkpoint():
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

    T = diffusion.num_timesteps
    # Sums since the last log record: [loss, count, loss per t-bin (NUM_T_BINS), count per t-bin (NUM_T_BINS)].
    window = torch.zeros(2 + 2 * NUM_T_BINS, dtype=torch.float64, device=device)
    start = last_log_time = time.perf_counter()
    last_log_step = step
    bar = _progress_bar(config.steps, step, enabled=progress and dist.rank == 0)
    model.train()
    stop = _should_stop(config, step, elapsed_before, dist, device)
    while not stop:
        index = torch.randint(0, len(data), (config.batch_size,), device=device, generator=generator)
        terms = train_step(train_model, diffusion, optimizer, scheduler, ema, data[index], generator=generator,
                           grad_clip=config.grad_clip, bf16=config.bf16)
        step += 1
        bar.update(1)
        loss, bins = terms["loss"].double(), terms["t"] * NUM_T_BINS // T
        window[0] += loss.sum()
        window[1] += loss.numel()
        window[2:2 + NUM_T_BINS].index_add_(0, bins, loss)
        window[2 + NUM_T_BINS:].index_add_(0, bins, torch.ones_like(loss))
        stop = _should_stop(config, step, elapsed_before + time.perf_counter() - start, dist, device)
        if step % config.log_every == 0 or stop:
            if dist.enabled:
                torch.distributed.all_reduce(window)
            now = time.perf_counter()
            images = (step - last_log_step) * config.batch_size * dist.world_size
            sums = window.tolist()
            bin_sums, bin_counts = sums[2:2 + NUM_T_BINS], sums[2 + NUM_T_BINS:]
            record = {
                "step": step,
                "loss": sums[0] / sums[1],  # mean per-sample loss since the previous record
                "lr": optimizer.param_groups[0]["lr"],  # the rate of the next step
                "elapsed": round(elapsed_before + now - start, 3),  # seconds of training in total
                "images_per_s": round(images / (now - last_log_time), 1),  # all processes together
                "loss_by_t": [s / c if c else None for s, c in zip(bin_sums, bin_counts)],  # t-bin k: [kT/4, (k+1)T/4)
                "world_size": dist.world_size,
            }
            history.append(record)
            if is_writer:
                with open(out_dir / LOG_NAME, "a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            window.zero_()
            last_log_time, last_log_step = now, step
        if out_dir is not None and (step % config.checkpoint_every == 0 or stop):
            save_checkpoint()
    bar.close()
    if dist.enabled:
        _check_in_sync(model, device)

    ema_model = ema.module.eval()
    configs = {"model_config": model_config, "diffusion_config": diffusion_config, "train_config": config}
    return TrainResult(model=model, ema_model=ema_model, diffusion=diffusion, history=history, step=step,
                       configs=configs)


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
    """Rewrite log.jsonl atomically with ``records``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
