"""What an instrumented forward records: :class:`Settings`, one frozen value per recorder,
replaced only for the length of a ``with im.configured(...)`` block (the recorder's one place
settings are switched), so nothing an analysis does outlives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vizkit.engine.rules import ProjectionRule
from vizkit.engine.tape import OpRecorder

KEEP: Any = object()  # Recorder.configured(): leave this setting as it is


@dataclass(frozen=True)
class Settings:
    """What an instrumented forward records. Changed only for the length of a ``with
    im.configured(...)`` block, so nothing an analysis does outlives it."""

    layers: frozenset[str] | None = None  # None: every layer; an empty set: none
    switches: bool = True  # record max-pooling switches
    rule: ProjectionRule | None = None  # projection rule of the autograd path, if any
    tape: OpRecorder | None = None  # records every op of the forward, if any
    capture: str | None = None  # layer whose live output (with its graph) is kept
    check_finite: bool = True  # refuse NaN/inf in the output and in the activations read
    copy_kept: bool = False  # copy each kept output as it appears (not on write: vizkit.engine.kept)
    locate: bool = False  # check every layer's output as it appears (finding the first bad one)
