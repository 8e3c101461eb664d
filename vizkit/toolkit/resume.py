"""What an interrupted run keeps for ``--resume``: one file per finished piece of work (a
snapshot's scan, a randomized model's maps) in a hidden folder of the run's ``--out``, valid only
for the same run (a fingerprint of its inputs and settings). A run without ``--resume`` discards
what an earlier, interrupted one left there, saying so; the result removes the folder once it is
saved (``Result.scratch``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vizkit.errors import UsageError

RESUME_VERSION = 1


class ResumeFolder:
    """One ``torch.save`` file per finished tag in ``out/.<name>`` (none without ``out``).

    Args:
        out: the run's output folder, or None (nothing is kept).
        name: the analysis's name: the folder is ``out/.<name>`` and messages name it.
        fingerprint: what a kept file must match to be reused (inputs, weights, settings).
        resume: reuse the kept files (``--resume``); otherwise they are discarded.
        kept: what the files hold, for messages ("snapshots", "maps").
        differs: how another run may differ, for the refusal ("other run, layers or options").
    """

    def __init__(
        self,
        out: Path | None,
        name: str,
        fingerprint: str,
        resume: bool,
        kept: str = "results",
        differs: str = "options",
    ) -> None:
        self.folder = Path(out) / f".{name}" if out is not None else None
        self.name, self.fingerprint, self.differs = name, fingerprint, differs
        if resume and self.folder is None:
            raise UsageError(f"--resume needs --out (finished {kept} are kept there)")
        stale = (
            sorted(self.folder.glob("*.pt")) if not resume and self.folder is not None and self.folder.exists() else []
        )
        if stale:
            print(
                f"{name}: discarding the interrupted run's {kept} in {self.folder} (pass --resume to continue it)",
                file=sys.stderr,
            )
        for path in stale:
            path.unlink()

    def _path(self, tag: str) -> Path | None:
        return self.folder / f"{tag}.pt" if self.folder is not None else None

    def load(self, tag: str) -> Any | None:
        """What was saved under ``tag`` (tensors, numbers, lists, dicts), or None; a file of
        another run is refused in one line. Read with ``weights_only=True``."""
        import torch

        path = self._path(tag)
        if path is None or not path.exists():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("version") != RESUME_VERSION or saved.get("fingerprint") != self.fingerprint:
            raise UsageError(f"{path} belongs to a different {self.name} run ({self.differs}); drop --resume")
        return saved["data"]

    def save(self, tag: str, data: Any) -> None:
        """Keep ``data`` under ``tag`` (atomically: an interrupted save leaves the old file or none)."""
        from vizkit.framework import save_torch_atomic

        path = self._path(tag)
        if path is not None:
            save_torch_atomic(path, {"version": RESUME_VERSION, "fingerprint": self.fingerprint, "data": data})

    def drop(self, tag: str) -> None:
        path = self._path(tag)
        if path is not None:
            path.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        """The folder, for the result to remove once it is saved."""
        return [self.folder] if self.folder is not None else []
