"""Training in several processes launched by ``torchrun``: the set-up and the few collective decisions.

``torchrun --nproc_per_node N -m ddpm_lite train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`setup`
reads them, picks each process's device and joins a process group (gloo on CPU, nccl on CUDA). The trainer wraps
the network in DistributedDataParallel; every decision that must be the same in every process (stop, diverged,
interrupted) goes through one of the functions here, or the next collective call would wait forever.
With one process every function is a plain local computation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ._device import default_device


@dataclass
class Distributed:
    """This process's place among torchrun's processes (one process: world_size 1, rank 0)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False  # destroy the process group at the end

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_name: str) -> tuple[Distributed, torch.device]:
    """Read torchrun's environment, pick the device and, for several processes, join the process group."""
    dist = Distributed(
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


def teardown(dist: Distributed) -> None:
    if dist.initialised_here:
        torch.distributed.destroy_process_group()


def wrap(model: nn.Module, dist: Distributed, device: torch.device) -> nn.Module:
    """The network to train: wrapped in DistributedDataParallel for several processes, else as it is."""
    if not dist.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def any_process(flag: bool, dist: Distributed, device) -> bool:
    """True in every process if ``flag`` is True in any (a signal may reach the processes at different steps)."""
    if not dist.enabled:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def rank0_decides(flag: bool, dist: Distributed, device) -> bool:
    """Rank 0's ``flag`` in every process (its clock decides when a time budget is spent)."""
    if not dist.enabled:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.broadcast(value, src=0)
    return bool(value.item())


def earliest(step: torch.Tensor, dist: Distributed) -> int | None:
    """The smallest non-negative value of ``step`` (a 0-d long tensor, -1 for none) over all processes, or None."""
    value = step.clone()
    if dist.enabled:
        value = torch.where(value < 0, torch.iinfo(torch.long).max, value)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        value = torch.where(value == torch.iinfo(torch.long).max, -1, value)
    value = int(value)
    return value if value >= 0 else None


def sum_over_processes(tensor: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """All-reduce (sum) in place; returns the tensor."""
    if dist.enabled:
        torch.distributed.all_reduce(tensor)
    return tensor


def gather(obj, dist: Distributed) -> list:
    """Every process's ``obj``, in rank order (one process: [obj])."""
    if not dist.enabled:
        return [obj]
    objects = [None] * dist.world_size
    torch.distributed.all_gather_object(objects, obj)
    return objects


def check_in_sync(model: nn.Module, dist: Distributed, device) -> None:
    """DistributedDataParallel keeps the processes' weights equal; check it (cheap, once, at the end)."""
    if not dist.enabled:
        return
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    reference = flat.clone()
    torch.distributed.broadcast(reference, src=0)
    differs = torch.tensor([float(not torch.equal(flat, reference))], device=device)
    torch.distributed.all_reduce(differs)
    if differs.item():
        raise RuntimeError("the processes' weights diverged during distributed training")
