"""What an interrupted ``evolution`` run keeps for ``--resume``: one file per finished snapshot
(and a snapshot's partial scan) in ``out/.evolution``, valid only for the same run settings."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import vizkit


@dataclass
class ScanCheckpoint:
    """Where the scan of one snapshot keeps its partial state (``cache`` under ``tag``), how often
    it writes it (``seconds``), and the stop request it obeys between two batches."""

    cache: SnapshotCache
    tag: str
    seconds: float
    stop: vizkit.toolkit.StopRequest


class SnapshotCache(vizkit.toolkit.ResumeFolder):
    """One file per finished snapshot in ``out/.evolution``, valid only for the same run settings."""

    def __init__(self, out: Path | None, fingerprint: str, resume: bool) -> None:
        super().__init__(
            out, "evolution", fingerprint, resume, kept="snapshots", differs="other run, layers, sample or options"
        )

    def stopped(self, stop: vizkit.toolkit.StopRequest, where: str) -> None:
        """Say what an interrupted run keeps for --resume, and stop (KeyboardInterrupt)."""
        kept = (
            f"finished work is kept in {self.folder}" if self.folder is not None else "nothing is kept (no out folder)"
        )
        print(f"evolution: {stop.signal_name} received; {where}; {kept}", file=sys.stderr)
        raise KeyboardInterrupt(stop.signal_name)
