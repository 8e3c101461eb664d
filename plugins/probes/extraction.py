"""The features ``probes`` fits on: every image a fold uses goes through the frozen model once,
into the on-disk feature cache; unreadable images are left out and the folds drawn again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vizkit

from .folds import draw_folds


def default_cache() -> Path:
    """``$VIZKIT_CACHE/features``, else ``~/.cache/vizkit/features``."""
    return vizkit.toolkit.cache_folder() / "features"


@dataclass
class _Extraction:
    """The features of every image the folds use, and the folds: drawn again without the images
    found unreadable while extracting (the same draw as for a dataset without those files)."""

    parts: list[tuple[vizkit.toolkit.CachedFeatures, list[int]]]  # each pass and the dataset indices of its rows
    kept: list[int]  # the classes the folds use
    dropped: dict[int, int]  # classes too small to use, and their image counts
    splits: list[tuple[np.ndarray, np.ndarray]]  # (train, test) dataset indices of each fold
    used: np.ndarray  # every dataset index the folds use, sorted
    rank: int  # this process's rank (only rank 0 fits and writes)

    @property
    def features(self) -> vizkit.toolkit.CachedFeatures:
        """The first pass: layers, dims and the cache folder are the same in every pass."""
        return self.parts[0][0]

    def layer_matrix(self, layer: str) -> torch.Tensor:
        """The features of ``layer`` of the images the folds use, in ``used`` order."""
        row_of = self.row_of()
        matrix = np.zeros((len(self.used), self.features.dims[layer]), dtype=np.float32)
        for part, indices in self.parts:
            rows = [row for row, index in enumerate(indices) if index in row_of]
            if rows:
                matrix[[row_of[indices[row]] for row in rows]] = part.layer(layer)[rows]
        return torch.from_numpy(matrix)

    def row_of(self) -> dict[int, int]:
        """Dataset index -> its row in :meth:`layer_matrix`."""
        return {int(index): row for row, index in enumerate(self.used)}


def _extract(
    ctx: vizkit.RunContext,
    dataset: vizkit.ImageList,
    candidates: list[int],
    layers: list[str],
    train_per_class: int,
    test_per_class: int,
    folds: int,
    extract: dict[str, Any],
) -> _Extraction:
    """Every image a fold uses, extracted once (in dataset order, so the cache is shared by any
    split). An unreadable image is left out and the folds are drawn again without it; the images
    that replace it are extracted in a further, small pass. Every rank learns the same unreadable
    rows, so all take the same passes. ``extract``: :func:`vizkit.toolkit.extract_features`'
    options (cache folder, pool, dtype, workers, resume)."""
    targets = np.asarray(dataset.targets)
    unreadable: set[int] = set()
    extracted: set[int] = set()
    parts: list[tuple[vizkit.toolkit.CachedFeatures, list[int]]] = []
    group = vizkit.toolkit.ProcessGroup.join(ctx.device)
    try:
        while True:
            usable = targets.copy()
            usable[sorted(unreadable)] = -1
            kept, dropped, splits = draw_folds(usable, candidates, train_per_class, test_per_class, folds, ctx.seed)
            if len(kept) < 2:
                raise vizkit.UsageError(
                    f"fewer than two classes have more than {train_per_class} images"
                    + (f" ({len(unreadable)} unreadable ones left out)" if unreadable else "")
                )
            used = np.unique(np.concatenate([np.concatenate(split) for split in splits]))
            need = [int(i) for i in used if int(i) not in extracted]
            if not need:
                break
            part = vizkit.toolkit.extract_features(
                ctx.instrumented,
                ctx.model,
                vizkit.ImageList([dataset.paths[i] for i in need], preprocess=dataset.preprocess, source=dataset.where),
                layers,
                batch_size=ctx.batch_size,
                device=group.device,
                progress=ctx.progress,
                group=group,
                skipped=ctx.skipped,
                **extract,
            )
            parts.append((part, need))
            unreadable |= {need[row] for row in part.skipped}
            extracted |= set(need) - unreadable
    finally:
        group.close()
    return _Extraction(parts, kept, dropped, splits, used, group.rank)
