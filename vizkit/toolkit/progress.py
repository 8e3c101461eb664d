"""Progress for long loops: a bar on a terminal, a plain line every ~10 s otherwise (a log, a pipe,
a CI job), nothing when disabled (``--quiet``).

A line reads ``top9 scan conv3: 120/300 images, 8.1 images/s, 22 s left``; the last one, when the
loop ends, gives the whole run's count, time and rate. A loop that ends before the first interval
prints nothing. ``$VIZKIT_PROGRESS_INTERVAL`` (seconds) sets the interval between lines.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

INTERVAL_VARIABLE = "VIZKIT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0  # seconds between two lines when stderr is not a terminal


class ProgressBar(Protocol):
    """What a loop uses of its progress: steps done so far, more steps, the end."""

    n: float
    total: float | None

    def update(self, n: float = 1) -> Any: ...

    def close(self) -> None: ...


def progress_bar(
    total: float | None = None,
    desc: str = "",
    enabled: bool = True,
    initial: float = 0,
    unit: str = "steps",
    interval: float | None = None,
    stream: IO[str] | None = None,
) -> ProgressBar:
    """The progress of a loop on stderr: a tqdm bar on a terminal (or in a notebook), else a
    :class:`ProgressLines` that prints a line every ``interval`` seconds; with ``enabled=False``
    a silent one with the same interface.

    Args:
        total: how many steps make the whole loop; None: unknown (a count without a bar or an
            estimate of the time left).
        desc: what the loop does, shown first (``"top9 scan conv3"``).
        enabled: False: nothing is shown (e.g. for --quiet).
        initial: the steps already done, when a loop resumes (e.g. from a checkpoint); the rate
            counts only the steps of this run.
        unit: what a step is, plural (``"images"``, ``"batches"``, ``"MB"``).
        interval: seconds between two lines off a terminal; None: ``$VIZKIT_PROGRESS_INTERVAL``,
            else 10.
        stream: where it goes; None: ``sys.stderr``.
    """
    out = sys.stderr if stream is None else stream
    if not enabled:
        return ProgressLines(total, desc, initial, unit, interval=math.inf, stream=None)
    if _is_terminal(out) or _in_notebook():
        from tqdm.auto import tqdm

        try:
            return tqdm(
                total=total, desc=desc, initial=initial, unit=f" {unit}", file=out, leave=False, dynamic_ncols=True
            )
        except ImportError:  # a notebook without ipywidgets: lines
            pass
    return ProgressLines(total, desc, initial, unit, interval=progress_interval(interval), stream=out)


def progress_interval(interval: float | None = None) -> float:
    """Seconds between two progress lines: ``interval`` if given, else ``$VIZKIT_PROGRESS_INTERVAL``
    (a malformed or negative value is ignored), else 10."""
    if interval is not None:
        return max(0.0, float(interval))
    text = os.environ.get(INTERVAL_VARIABLE, "").strip()
    try:
        value = float(text) if text else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value >= 0 else DEFAULT_INTERVAL


class ProgressLines:
    """Progress as plain lines, for a stream that is not a terminal: at most one line every
    ``interval`` seconds (checked on each :meth:`update`), and a closing line if any was printed.

    Args:
        total: steps of the whole loop (None: unknown).
        desc: what the loop does.
        initial: steps already done before this run.
        unit: what a step is, plural.
        interval: seconds between two lines (0: a line on every update; inf: never).
        stream: where the lines go; None: nowhere.
        clock: seconds, monotonic (a test passes a fake one).
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        initial: float = 0,
        unit: str = "steps",
        interval: float = DEFAULT_INTERVAL,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.n = initial
        self.desc = desc
        self.unit = unit
        self.interval = interval
        self.stream = stream
        self.clock = clock
        self.lines = 0  # how many lines were printed
        self._initial = initial
        self._started = self._last = clock()
        self._closed = False

    def update(self, n: float = 1) -> None:
        """``n`` more steps done; a line if ``interval`` seconds passed since the last one."""
        self.n += n
        if self.stream is None or self._closed:
            return
        now = self.clock()
        if now - self._last >= self.interval:
            self._print(self.line(now))
            self._last = now

    def close(self) -> None:
        """The loop is over (or stopped): a closing line with the whole run's count, time and
        rate, if a line was printed before. Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self.stream is not None and self.lines:
            self._print(self.line(self.clock(), final=True))

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, now: float, final: bool = False) -> str:
        """The line for the time ``now``: done/total, the rate of this run, the time left (or, when
        ``final``, the time it took)."""
        elapsed = max(now - self._started, 0.0)
        done = self.n - self._initial
        count = f"{_number(self.n)}/{_number(self.total)}" if self.total is not None else _number(self.n)
        parts = [f"{count} {self.unit}"]
        if elapsed > 0:
            parts.append(f"{_rate(done / elapsed)} {self.unit}/s")
        if final:
            parts.append(f"{_duration(elapsed)} in all" if done else "stopped")
        elif self.total is not None and done > 0 and elapsed > 0:
            left = max(self.total - self.n, 0) / (done / elapsed)
            parts.append(f"{_duration(left)} left")
        return f"{self.desc or 'progress'}: {', '.join(parts)}"

    def _print(self, text: str) -> None:
        assert self.stream is not None
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or broken stream: progress is not worth failing the run
            self.stream = None
            return
        self.lines += 1


def _is_terminal(stream: IO[str]) -> bool:
    """A terminal that a bar can be drawn on (one that reports no width, as a bare pseudo-terminal
    may, would get no bar from tqdm: it gets lines)."""
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError, OSError):
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return True  # a terminal-like stream without a file descriptor


def _in_notebook() -> bool:
    """Inside a Jupyter kernel (where tqdm.auto draws a widget, given ipywidgets)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or half imported: no notebook bar
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _number(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _rate(per_second: float) -> str:
    return f"{per_second:.1f}" if per_second >= 10 else f"{per_second:.2g}"


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 14 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
