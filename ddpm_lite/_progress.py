"""The one progress bar of ddpm_lite (tqdm), for training and sampling alike.

On a terminal or in a notebook it redraws in place. Into a pipe or a log file every redraw would be a line of its
own, so there it prints at most about ``PIPE_LINES`` lines per bar (tqdm's ``miniters`` set to total / PIPE_LINES,
and a minimum interval of ``PIPE_INTERVAL`` seconds).
"""
from __future__ import annotations

import math
import sys

PIPE_LINES = 10  # lines per bar when stderr is not a terminal
PIPE_INTERVAL = 5.0  # seconds between lines when stderr is not a terminal


class _NoBar:
    """Stands in for a bar when progress is off (tqdm is then not imported: tqdm.auto can warn on stderr)."""

    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def _interactive(stream) -> bool:
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget, updated in place
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable=None, *, total: int | None = None, initial: int = 0, desc: str = "",
                 enabled: bool = True, stream=None):
    """A tqdm bar over ``iterable`` (or of ``total`` steps, advanced with ``.update``), or a silent stand-in.

    stream: where the bar writes (default sys.stderr); when it is not a terminal the bar writes a few lines only.
    """
    if not enabled:
        return _NoBar(iterable)
    from tqdm.auto import tqdm

    stream = stream if stream is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    options = {}
    if not _interactive(stream):
        remaining = (total - initial) if total is not None else None
        options = {"mininterval": PIPE_INTERVAL, "maxinterval": math.inf,
                   "miniters": max(1, math.ceil(remaining / PIPE_LINES)) if remaining else 1}
    return tqdm(iterable, total=total, initial=initial, desc=desc, file=stream, dynamic_ncols=False, **options)
