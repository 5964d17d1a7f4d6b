"""One trained digits model for the book: trained on first use, then loaded from a local cache.

Nothing is downloaded. The first call of :func:`load_pretrained_digits` trains the default digits model
(:func:`~ddpm_lite.training.default_configs`) for a fixed number of steps with a fixed seed, on the GPU when there
is one, else on two CPU threads (90-105 s on two cores), and stores the checkpoint in ``pretrained/`` under
:func:`~ddpm_lite._io.default_cache_dir` (``$DDPM_LITE_CACHE``; in Colab with Google Drive mounted, a folder in
Drive that outlives the runtime; else ``~/.cache/ddpm_lite``), named by a hash of the configs: change a config
(the device type included, so a GPU-trained and a CPU-trained model are cached apart) or
:data:`PRETRAINED_VERSION` and the next call trains a new model. A file lock lets several processes (parallel notebook runs in CI) share one cache:
one trains, the others wait and then load. The checkpoint is an ordinary one (:func:`load_checkpoint` reads it)
and its loss log lies beside it (:func:`pretrained_digits_log`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .._device import default_device
from .._io import default_cache_dir, in_colab
from ..checkpoints import CHECKPOINT_NAME, LOG_NAME, load_checkpoint, read_log
from ..training import TrainConfig, default_configs, train

PRETRAINED_VERSION = 5  # 4: the training split of the digits only; 5: checkpoint format 2 (TrainConfig gained split
# and data, DiffusionConfig timesteps); bump to retrain every cached model
PRETRAINED_STEPS = 700  # x 128 images: 90-105 s on two free cores of a recent x86 CPU (~900-1,100 images/s), so
# that a chapter that trains it first (sampling, run on its own with an empty cache) stays under 3 minutes
PRETRAINED_BATCH_SIZE = 128
PRETRAINED_THREADS = 2  # a fixed count: the reduction order of some kernels depends on it
# Measured on 2 cores, 400 samples of 1000 steps each (Frechet distance of ddpm_lite.metrics; % read by its digit
# classifier with probability >= 0.9, held-out real digits: 97%), all x 128 on 2 threads: 600 steps (76 s) 9.8 and
# 89%; 800 steps (100 s) 10.3 and 92%; 1000 steps (112 s) 10.6 and 92%, with a cosine decay of the learning rate
# 11.8 and 92%. The previous recipe, 800 x 64 on 1 thread (76 s), 13.4 and 88%.


def pretrained_digits_configs(device: str | torch.device | None = None, conditional: bool = False):
    """(model_config, diffusion_config, train_config) of the cached digits model trained on ``device``.

    device: where it is trained; None picks cuda when a GPU is present, else cpu
    (:func:`~ddpm_lite.default_device`). Only the device's type enters the config ("cpu" or "cuda"),
    so every GPU shares one cache entry. conditional: the class-conditional model of the guidance chapter instead
    (``UNetConfig(num_classes=10)``, trained with its labels and the default label dropout, the same recipe
    otherwise).
    """
    model_config, diffusion_config = default_configs("digits")
    # An eps-model, whatever the package's default: the chapters teach L_simple and Algorithm 2 in terms of
    # eps_theta and check those identities on this model (the same config, so the same cache entry, as before the
    # digits default became v-prediction).
    diffusion_config = replace(diffusion_config, model_mean_type="eps")
    train_config = TrainConfig(dataset="digits", steps=PRETRAINED_STEPS, batch_size=PRETRAINED_BATCH_SIZE, seed=0,
                               device=_device_type(device), log_every=25)
    if conditional:
        model_config = replace(model_config, num_classes=10)
        train_config = replace(train_config, conditional=True)
    return model_config, diffusion_config, train_config


def _device_type(device: str | torch.device | None) -> str:
    return default_device("auto" if device is None else str(device)).type


# Config fields added after PRETRAINED_VERSION 5 whose default trains the same model as before they existed: they
# enter the cache key only when set otherwise, so adding them does not retrain every reader's cached model.
_ADDED_SINCE_VERSION_5 = {"min_snr_gamma": None, "threads": "auto", "num_classes": None, "conditional": False,
                         "label_dropout": 0.1}


def _key_fields(config) -> dict:
    return {name: value for name, value in asdict(config).items()
            if not (name in _ADDED_SINCE_VERSION_5 and value == _ADDED_SINCE_VERSION_5[name])}


def pretrained_digits_path(cache_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
                           conditional: bool = False) -> Path:
    """Where the cached checkpoint lives: ``CACHE/pretrained/digits-<hash of the configs>.pt``."""
    model_config, diffusion_config, train_config = pretrained_digits_configs(device, conditional=conditional)
    key = json.dumps({"version": PRETRAINED_VERSION, "model": _key_fields(model_config),
                      "diffusion": _key_fields(diffusion_config), "train": _key_fields(train_config)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "pretrained" / f"digits-{'conditional-' if conditional else ''}{digest}.pt"


def load_pretrained_digits(cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                           device: str | torch.device | None = None, conditional: bool = False):
    """The cached digits model: (ema_model in eval mode on ``device``, diffusion). Trains it first if the cache lacks it.

    device: where the model is trained (when not cached) and returned; None: cuda when a GPU is present, else cpu.
    conditional: the class-conditional model (:func:`pretrained_digits_configs`), cached beside the other.
    progress: show a progress bar while training; None (the default) shows one in Colab only, so the built book
    stays free of it. Training is deterministic for a given machine (fixed seed and step count, not a time budget).
    """
    device = default_device("auto" if device is None else str(device))
    path = pretrained_digits_path(cache_dir, device, conditional)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_suffix(".lock")):
            if not path.is_file():  # another process may have trained it while we waited for the lock
                _train_into(path, in_colab() if progress is None else progress, device, conditional)
    model, diffusion, _ = load_checkpoint(path, device=device)
    return model, diffusion


def pretrained_digits_log(cache_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
                          conditional: bool = False) -> list[dict]:
    """The loss log (log.jsonl records) of the cached model's training on ``device``; trains it first if needed."""
    load_pretrained_digits(cache_dir, device=device, conditional=conditional)
    return read_log(pretrained_digits_path(cache_dir, device, conditional).with_suffix(".log.jsonl"))


def _train_into(path: Path, progress: bool, device: torch.device, conditional: bool) -> None:
    """Train in a private folder beside ``path``, then move the checkpoint and log into place (atomic renames)."""
    model_config, diffusion_config, train_config = pretrained_digits_configs(device, conditional=conditional)
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=".training-"))
    threads = torch.get_num_threads()
    try:
        # A fixed thread count: the same weights on machines with the same kernels (the reduction order of a few
        # kernels depends on it). Two threads train 1.5x faster than one on two cores; do not run two of these
        # side by side on two cores (oversubscribed, they ran 10x slower). The caller's random state is the same
        # whether the model was trained or cached.
        torch.set_num_threads(PRETRAINED_THREADS)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            train(model_config, diffusion_config, train_config, out_dir=work, progress=progress)
        os.replace(work / LOG_NAME, path.with_suffix(".log.jsonl"))
        os.replace(work / CHECKPOINT_NAME, path)  # last: its presence means the cache entry is complete
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock on ``path`` between processes (fcntl; where that is missing, no lock: the atomic
    rename still keeps the cache whole, two processes may just both train)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
