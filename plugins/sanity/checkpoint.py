"""What an interrupted ``sanity`` run keeps for ``--resume``: the maps of each model it finished
(the trained one, the random-logit maps, each randomized copy) as one file each in
``out/.sanity``, valid only for the same images, weights and settings. The files go once the
result is saved."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import vizkit
from vizkit.framework import save_torch_atomic

CACHE_VERSION = 1


class VariantCache:
    """One file per finished model in ``out/.sanity`` (none without an output folder)."""

    def __init__(self, out: Path | None, fingerprint: str, resume: bool) -> None:
        self.folder = out / ".sanity" if out is not None else None
        self.fingerprint = fingerprint
        if resume and self.folder is None:
            raise vizkit.UsageError("--resume needs --out (the finished maps are kept there)")
        stale = sorted(self.folder.glob("*.pt")) if self.folder is not None and self.folder.exists() else []
        if stale and not resume:
            print(
                f"sanity: discarding the interrupted run's maps in {self.folder} (pass --resume to continue it)",
                file=sys.stderr,
            )
            for path in stale:
                path.unlink()

    def _path(self, tag: str) -> Path | None:
        return self.folder / f"{tag}.pt" if self.folder is not None else None

    def load(self, tag: str) -> np.ndarray | None:
        """The maps saved under ``tag``, or None; a file of another run is refused in one line."""
        path = self._path(tag)
        if path is None or not path.exists():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("version") != CACHE_VERSION or saved.get("fingerprint") != self.fingerprint:
            raise vizkit.UsageError(
                f"{path} belongs to a different sanity run (other images, weights or options); drop --resume"
            )
        return saved["maps"].numpy()

    def save(self, tag: str, maps: np.ndarray) -> None:
        path = self._path(tag)
        if path is not None:
            payload = {"version": CACHE_VERSION, "fingerprint": self.fingerprint, "maps": torch.from_numpy(maps)}
            save_torch_atomic(path, payload)

    def files(self) -> list[Path]:
        """The folder, for the result to remove once it is saved."""
        return [self.folder] if self.folder is not None and self.folder.exists() else []
