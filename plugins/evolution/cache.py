"""What an interrupted ``evolution`` run keeps for ``--resume``: one file per finished snapshot
(and a snapshot's partial scan) in ``out/.evolution``, valid only for the same run settings."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import vizkit
from vizkit.framework import save_torch_atomic

CACHE_VERSION = 1


@dataclass
class ScanCheckpoint:
    """Where the scan of one snapshot keeps its partial state (``cache`` under ``tag``), how often
    it writes it (``seconds``), and the stop request it obeys between two batches."""

    cache: SnapshotCache
    tag: str
    seconds: float
    stop: vizkit.toolkit.StopRequest


class SnapshotCache:
    """One file per finished snapshot in ``out/.evolution``, valid only for the same run settings."""

    def __init__(self, out: Path | None, fingerprint: str, resume: bool) -> None:
        self.folder = out / ".evolution" if out is not None else None
        self.fingerprint = fingerprint
        if resume and self.folder is None:
            raise vizkit.UsageError("--resume needs --out (finished snapshots are kept there)")
        if not resume and self.folder is not None and self.folder.exists():
            stale = sorted(self.folder.glob("*.pt"))
            if stale:
                print(
                    f"evolution: discarding the interrupted run's snapshots in {self.folder} (pass --resume to continue it)",
                    file=sys.stderr,
                )
            for path in stale:
                path.unlink()

    def _path(self, tag: str) -> Path | None:
        return self.folder / f"{tag}.pt" if self.folder is not None else None

    def load(self, tag: str) -> dict | None:
        path = self._path(tag)
        if path is None or not path.exists():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("version") != CACHE_VERSION or saved.get("fingerprint") != self.fingerprint:
            raise vizkit.UsageError(
                f"{path} belongs to a different evolution run (other run, layers, sample or options); drop --resume"
            )
        return saved["data"]

    def save(self, tag: str, data: dict) -> None:
        path = self._path(tag)
        if path is None:
            return
        save_torch_atomic(path, {"version": CACHE_VERSION, "fingerprint": self.fingerprint, "data": data})

    def drop(self, tag: str) -> None:
        path = self._path(tag)
        if path is not None:
            path.unlink(missing_ok=True)

    def stopped(self, stop: vizkit.toolkit.StopRequest, where: str) -> None:
        """Say what an interrupted run keeps for --resume, and stop (KeyboardInterrupt)."""
        kept = (
            f"finished work is kept in {self.folder}" if self.folder is not None else "nothing is kept (no out folder)"
        )
        print(f"evolution: {stop.signal_name} received; {where}; {kept}", file=sys.stderr)
        raise KeyboardInterrupt(stop.signal_name)
