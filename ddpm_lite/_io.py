"""File helpers shared by the whole package: the one atomic write and the one cache folder (Drive in Colab).

An atomic write puts the bytes in a temporary file beside the target, ``.NAME.<random>.tmp``, flushes it to disk
and renames it over the target (``os.replace``): a crash or Ctrl-C leaves the old file or the new one, never half
of one. A process killed with SIGKILL can still leave its temporary file; :func:`remove_stale_temporaries` clears
them (the trainer does so when it opens a run directory).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, IO


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a binary file that becomes ``path`` only once it is complete (a temp file + os.replace).

    The file gets mode 0644 (mkstemp's 0600 would hide a checkpoint from other users of a shared machine).
    On any error, including KeyboardInterrupt, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_atomic(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`write_atomic`)."""
    import torch

    write_atomic(path, lambda f: torch.save(obj, f))


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`write_atomic` left beside ``path`` when a process was killed.

    Only ``.NAME.*.tmp`` for this one ``path``; call it when no other process is writing ``path``.
    Returns the files removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


COLAB_DRIVE = Path("/content/drive/MyDrive")  # where Colab mounts Google Drive (drive.mount("/content/drive"))
COLAB_CACHE_NAME = "ddpm_lite_cache"  # the cache folder in Drive: COLAB_DRIVE / COLAB_CACHE_NAME


def in_colab() -> bool:
    """True inside a Google Colab runtime (its ``google.colab`` module is imported there before any cell runs)."""
    return "google.colab" in sys.modules


def default_cache_dir() -> Path:
    """Where ddpm_lite caches what it trains once (the book's digits model and digit classifier).

    ``$DDPM_LITE_CACHE`` if set; else, in Colab with Google Drive mounted, ``/content/drive/MyDrive/ddpm_lite_cache``
    (it outlives the runtime: mount Drive with ``from google.colab import drive; drive.mount("/content/drive")``
    before a chapter's setup cell, and the model is trained once for all chapters and sessions); else
    ``~/.cache/ddpm_lite``.
    """
    env = os.environ.get("DDPM_LITE_CACHE")
    if env:
        return Path(env).expanduser()
    if in_colab() and COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / COLAB_CACHE_NAME
    return Path("~/.cache/ddpm_lite").expanduser()
