"""The one place where ddpm_lite picks a device: the trainer, the command line and the book's setup cell call it."""
from __future__ import annotations

import torch


def check_device_name(name: str) -> None:
    """Raise a ValueError unless ``name`` is "auto" or a device torch knows ("cpu", "cuda", "cuda:1", ...).

    Whether that device is present is checked when it is used (a checkpoint may be resumed elsewhere).
    """
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def default_device(name: str = "auto") -> torch.device:
    """The device ``name`` names; "auto" (the default) is cuda when a GPU is present, else cpu.

    Raises a ValueError for a device torch does not know, or for cuda on a machine without one.
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine; use cpu or auto")
    return device
