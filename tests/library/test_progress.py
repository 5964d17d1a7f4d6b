"""The one progress bar: redrawn in place on a terminal, a few lines into a pipe or a log file."""
import io

from ddpm_lite._progress import PIPE_LINES, progress_bar


class FakeClock:
    """tqdm reads time through its `_time` attribute: a clock that moves 1 s per call makes every update due."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def draws(stream: io.StringIO) -> int:
    return stream.getvalue().count("it/s]")  # one per drawing of the bar


def test_into_a_pipe_a_bar_prints_a_few_lines_however_many_steps(monkeypatch):
    for total in (60, 1000):
        stream = io.StringIO()  # not a terminal
        bar = progress_bar(total=total, desc="train", stream=stream)
        bar._time = FakeClock()
        for _ in range(total):
            bar.update(1)
        bar.close()
        assert 2 <= draws(stream) <= PIPE_LINES + 3, (total, draws(stream))


def test_on_a_terminal_the_bar_keeps_tqdms_own_pace():
    """A terminal redraws in place, so tqdm's defaults stay (every 0.1 s); a pipe gets the sparse settings."""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = progress_bar(total=60, stream=Terminal()), progress_bar(total=60, stream=io.StringIO())
    assert (terminal.mininterval, terminal.miniters) == (0.1, 0)
    assert pipe.mininterval >= 1 and pipe.miniters == 60 // PIPE_LINES
    terminal.close(), pipe.close()


def test_a_disabled_bar_writes_nothing_and_passes_the_iterable_through():
    assert list(progress_bar(range(3), enabled=False)) == [0, 1, 2]
