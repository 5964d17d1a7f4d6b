"""One trained digits model for the book: trained on first use, then loaded from a local cache.

Nothing is downloaded. The first call of :func:`load_pretrained_digits` trains the default digits model
(:func:`~ddpm_lite.training.default_configs`) for a fixed number of steps with a fixed seed on two CPU threads
(90-105 s on two cores) and stores the checkpoint under ``$DDPM_LITE_CACHE`` (default ``~/.cache/ddpm_lite``) in
``pretrained/``, named by a hash of the configs: change a config (or :data:`PRETRAINED_VERSION`) and the next
call trains a new model. A file lock lets several processes (parallel notebook runs in CI) share one cache:
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
from dataclasses import asdict
from pathlib import Path

import torch

from ._io import default_cache_dir
from .training import CHECKPOINT_NAME, LOG_NAME, TrainConfig, default_configs, load_checkpoint, read_log, train

PRETRAINED_VERSION = 4  # 4: the training split of the digits only; bump to retrain every cached model
PRETRAINED_STEPS = 700  # x 128 images: 90-105 s on two free cores of a recent x86 CPU (~900-1,100 images/s), so
# that a chapter that trains it first (sampling, run on its own with an empty cache) stays under 3 minutes
PRETRAINED_BATCH_SIZE = 128
PRETRAINED_THREADS = 2  # a fixed count: the reduction order of some kernels depends on it
# Measured on 2 cores, 400 samples of 1000 steps each (Frechet distance of ddpm_lite.metrics; % read by its digit
# classifier with probability >= 0.9, held-out real digits: 97%), all x 128 on 2 threads: 600 steps (76 s) 9.8 and
# 89%; 800 steps (100 s) 10.3 and 92%; 1000 steps (112 s) 10.6 and 92%, with a cosine decay of the learning rate
# 11.8 and 92%. The previous recipe, 800 x 64 on 1 thread (76 s), 13.4 and 88%.


def pretrained_digits_configs():
    """(model_config, diffusion_config, train_config) of the cached digits model."""
    model_config, diffusion_config = default_configs("digits")
    train_config = TrainConfig(dataset="digits", steps=PRETRAINED_STEPS, batch_size=PRETRAINED_BATCH_SIZE, seed=0,
                               device="cpu", log_every=25)
    return model_config, diffusion_config, train_config


def pretrained_digits_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the cached checkpoint lives: ``CACHE/pretrained/digits-<hash of the configs>.pt``."""
    model_config, diffusion_config, train_config = pretrained_digits_configs()
    key = json.dumps({"version": PRETRAINED_VERSION, "model": asdict(model_config),
                      "diffusion": asdict(diffusion_config), "train": asdict(train_config)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "pretrained" / f"digits-{digest}.pt"


def load_pretrained_digits(cache_dir: str | os.PathLike | None = None, progress: bool = False, device="cpu"):
    """The cached digits model: (ema_model in eval mode, diffusion). Trains it first if the cache lacks it.

    Training is deterministic for a given machine (fixed seed and step count, CPU, not a time budget).
    """
    path = pretrained_digits_path(cache_dir)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_suffix(".lock")):
            if not path.is_file():  # another process may have trained it while we waited for the lock
                _train_into(path, progress)
    model, diffusion, _ = load_checkpoint(path, device=device)
    return model, diffusion


def pretrained_digits_log(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """The loss log (log.jsonl records) of the cached model's training; trains it first if needed."""
    load_pretrained_digits(cache_dir)
    return read_log(pretrained_digits_path(cache_dir).with_suffix(".log.jsonl"))


def _train_into(path: Path, progress: bool) -> None:
    """Train in a private folder beside ``path``, then move the checkpoint and log into place (atomic renames)."""
    model_config, diffusion_config, train_config = pretrained_digits_configs()
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=".training-"))
    threads = torch.get_num_threads()
    try:
        # A fixed thread count: the same weights on machines with the same kernels (the reduction order of a few
        # kernels depends on it). Two threads train 1.5x faster than one on two cores; do not run two of these
        # side by side on two cores (oversubscribed, they ran 10x slower). The caller's random state is the same
        # whether the model was trained or cached.
        torch.set_num_threads(PRETRAINED_THREADS)
        with torch.random.fork_rng(devices=[]):
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
