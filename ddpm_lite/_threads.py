"""How many CPU threads torch uses: the one place where ddpm_lite sets it (``threads=`` and ``--threads``).

torch starts one thread per core. When another program keeps a core busy (a browser, a second job on a lab machine,
CI beside another run), every parallel operation waits for the thread that shares a core with it, and a training
step on the book's U-Net gets several times slower than with one thread (benchmarks/bench_threads.py measures it).
"auto" counts the cores that other programs leave free, from the kernel's CPU counters (Linux ``/proc/stat``), and
uses that many threads, never more than torch's own default (which honours ``OMP_NUM_THREADS``).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Iterator, Union

import torch

Threads = Union[int, str, None]  # a count >= 1, "auto", or None: leave torch's setting alone
TORCH_DEFAULT = torch.get_num_threads()  # torch's choice at import (one per core, or OMP_NUM_THREADS)
SAMPLE_SECONDS = 0.2  # how long "auto" watches the CPU counters


def check_threads(threads: Threads) -> None:
    """Raise a ValueError unless ``threads`` is None, "auto" or an int >= 1."""
    if threads is None or threads == "auto":
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto' or a whole number >= 1, got {threads!r}; with another program "
                         "busy, threads=1 is often fastest")


STAT = "/proc/stat"


def _cpu_times(cpus: set[int], path: str = STAT) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cpus`` from /proc/stat, or None where it cannot be read."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *values = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        numbers = [float(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(numbers)
        busy += sum(numbers) - numbers[3] - numbers[4]
    return (busy, total) if total > 0 else None


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of this process's cores other programs kept busy over the next ``seconds``: 0.0 (idle) up to the
    number of cores; None where the counters cannot be read (not Linux). This process's own CPU time is subtracted."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    before, own_before = _cpu_times(cpus), time.process_time()
    if before is None:
        return None
    time.sleep(seconds)
    after, own = _cpu_times(cpus), time.process_time() - own_before
    if after is None or after[1] <= before[1]:
        return None
    busy_fraction = (after[0] - before[0]) / (after[1] - before[1])
    return max(0.0, busy_fraction * len(cpus) - own / seconds)


def auto_threads() -> int:
    """The thread count "auto" stands for: the free cores (half a free core counts as one), at least 1, at most
    torch's default. Where the load cannot be read, torch's default."""
    busy = busy_cores()
    if busy is None:
        return TORCH_DEFAULT
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(TORCH_DEFAULT, math.floor(cpus - busy + 0.5)))


def set_threads(threads: Threads = "auto") -> int:
    """Set torch's CPU threads to ``threads`` and return the count now in use.

    threads: a whole number >= 1; "auto", the cores that other programs leave free (read from Linux's /proc/stat
    over 0.2 s; half a free core counts as one), at least 1 and at most torch's default (one per core, or
    OMP_NUM_THREADS); None changes nothing. With another program keeping a core busy, torch's default can be
    several times slower than 1 thread (benchmarks/bench_threads.py)."""
    check_threads(threads)
    if threads is not None:
        torch.set_num_threads(auto_threads() if threads == "auto" else threads)
    return torch.get_num_threads()


@contextlib.contextmanager
def num_threads(threads: Threads = "auto") -> Iterator[int]:
    """``with dl.num_threads("auto") as n:`` runs the block with ``set_threads(threads)`` and then restores torch's
    previous setting; yields the count in use."""
    previous = torch.get_num_threads()
    try:
        yield set_threads(threads)
    finally:
        torch.set_num_threads(previous)
