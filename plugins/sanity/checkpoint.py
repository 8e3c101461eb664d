"""What an interrupted ``sanity`` run keeps for ``--resume``: the maps of each model it finished
(the trained one, the random-logit maps, each randomized copy, the compared model) as one file
each in ``out/.sanity``, valid only for the same images, weights and settings
(:class:`vizkit.toolkit.ResumeFolder`). The folder goes once the result is saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import vizkit


class VariantCache(vizkit.toolkit.ResumeFolder):
    """One file of maps per finished model in ``out/.sanity`` (none without an output folder)."""

    def __init__(self, out: Path | None, fingerprint: str, resume: bool) -> None:
        super().__init__(out, "sanity", fingerprint, resume, kept="maps", differs="other images, weights or options")

    def load_maps(self, tag: str) -> np.ndarray | None:
        saved = self.load(tag)
        return None if saved is None else saved.numpy()

    def save_maps(self, tag: str, maps: np.ndarray) -> None:
        self.save(tag, torch.from_numpy(maps))
