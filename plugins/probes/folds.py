"""The classes ``probes`` uses (class folders less the excluded ones) and the random train/test
folds drawn from them, per class."""

from __future__ import annotations

from collections import Counter

import numpy as np

import vizkit

DEFAULT_EXCLUDE = ("BACKGROUND_Google",)


def _classes(dataset: vizkit.ImageList, exclude: tuple[str, ...]) -> tuple[tuple[str, ...], list[int]]:
    """The excluded class folders the dataset has, and the indices of the classes left."""
    if not dataset.classes:
        raise vizkit.UsageError("probes needs an ImageFolder tree (--data DIR with one sub-folder per class)")
    unknown = [name for name in exclude if name not in dataset.classes]
    if unknown and tuple(exclude) != DEFAULT_EXCLUDE:  # the default only matters for Caltech-101
        raise vizkit.UsageError(f"--exclude {unknown[0]}: no such class folder in --data")
    exclude = tuple(name for name in exclude if name in dataset.classes)
    return exclude, [i for i, name in enumerate(dataset.classes) if name not in exclude]


def draw_folds(
    targets: np.ndarray, classes: list[int], train_per_class: int, test_per_class: int, folds: int, seed: int
) -> tuple[list[int], dict[int, int], list[tuple[np.ndarray, np.ndarray]]]:
    """Per fold and class, ``train_per_class`` training images and up to ``test_per_class`` test
    images from the rest. Returns the classes kept, the dropped ones with their image counts
    (fewer than ``train_per_class + 1``), and the (train, test) dataset indices of each fold."""
    counts = Counter(int(t) for t in targets)
    kept = [c for c in classes if counts[c] > train_per_class]
    dropped = {c: counts[c] for c in classes if counts[c] <= train_per_class}
    rng = np.random.default_rng(seed)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(folds if kept else 0):
        train, test = [], []
        for c in kept:
            order = rng.permutation(np.flatnonzero(targets == c))
            train.append(order[:train_per_class])
            test.append(order[train_per_class : train_per_class + test_per_class])
        out.append((np.concatenate(train), np.concatenate(test)))
    return kept, dropped, out
