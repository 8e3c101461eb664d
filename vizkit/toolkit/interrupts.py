"""Interruptions: SIGTERM (what schedulers and ``timeout`` send) treated like Ctrl-C, and loops
that stop only between two steps, so the checkpoint they write on the way out is consistent."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """Set by :func:`deferred_interrupts` when a stop signal arrives; a loop checks ``requested``
    between steps."""

    signal_name: str | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signal_name is not None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so every analysis that
    saves its work on Ctrl-C does so on SIGTERM too. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def deferred_interrupts() -> Iterator[StopRequest]:
    """Within the block the first SIGINT or SIGTERM only marks the returned request; the loop
    finishes its step, saves and stops. A second signal interrupts at once (KeyboardInterrupt).
    The previous handlers come back when the block ends. Outside the main thread signals cannot
    be caught: the request is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def mark(signum: int, frame: FrameType | None) -> None:
        if request.requested:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        request.signal_name = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, mark) for sig in _STOP_SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
