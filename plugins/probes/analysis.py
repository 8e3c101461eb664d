"""The ``probes`` run: the classes and folds, the features extracted (every rank), the probes
fitted (rank 0), the result and its figures."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

import vizkit

from .extraction import _extract, default_cache
from .figures import accuracy_figure, table_figure
from .fitting import _fit, _grid_edges, _table, parse_grid
from .folds import _classes


def _cache_summary(parts: list[tuple[vizkit.toolkit.CachedFeatures, list[int]]], dtype: str) -> dict[str, Any]:
    """Where the features are cached (a further pass may use another folder), whether every
    pass found them there, and how they are stored."""
    return {
        "folder": str(parts[0][0].folder),
        "reused": all(part.reused for part, _ in parts),
        "dtype": dtype,
        **({"more_folders": [str(part.folder) for part, _ in parts[1:]]} if len(parts) > 1 else {}),
    }


def _check_enough(dataset: vizkit.ImageList, candidates: list[int], train_per_class: int) -> None:
    """Refuse, before any extraction, a data set in which fewer than two of the classes probed have
    more than ``train_per_class`` images (a training split and at least one test image each)."""
    counts = np.bincount(np.asarray(dataset.targets, dtype=np.int64), minlength=len(dataset.classes))[candidates]
    if int((counts > train_per_class).sum()) < 2:
        raise vizkit.UsageError(
            f"fewer than two classes have more than {train_per_class} images (--train-per-class), as probing "
            f"needs a training split and test images in each; {dataset.where} has at most "
            f"{int(counts.max(initial=0))} in a class"
        )


def run(
    ctx: vizkit.RunContext,
    layers: list[str],
    train_per_class: int,
    test_per_class: int,
    folds: int,
    classifiers: list[str],
    pool: str,
    exclude: tuple[str, ...],
    cache: str | None,
    cache_dtype: str,
    workers: int,
    cv_folds: int,
    grid: str,
    resume: bool,
) -> vizkit.Result:
    c_grid = parse_grid(grid)
    kinds = classifiers  # the Option checked them: in the order given, each once
    if cv_folds > train_per_class:
        raise vizkit.UsageError(f"--cv-folds ({cv_folds}) cannot exceed --train-per-class ({train_per_class})")
    vizkit.toolkit.parse_pool(pool)
    dataset = ctx.dataset()
    exclude, candidates = _classes(dataset, exclude)
    _check_enough(dataset, candidates, train_per_class)
    extract = {
        "cache": cache or default_cache(),
        "pool": pool,
        "dtype": cache_dtype,
        "workers": workers,
        "resume": resume,
    }
    extraction = _extract(ctx, dataset, candidates, layers, train_per_class, test_per_class, folds, extract)
    parts, splits, kept, features = extraction.parts, extraction.splits, extraction.kept, extraction.features
    seconds_extract = sum(part.seconds for part, _ in parts)
    if extraction.rank != 0:  # only rank 0 fits and writes
        return vizkit.Result(summary={"rank": extraction.rank, "seconds_extract": round(seconds_extract, 3)})

    started = time.perf_counter()
    labels = torch.as_tensor(np.asarray(dataset.targets))
    accuracy, per_class, chosen_c = _fit(ctx, extraction, labels, kinds, c_grid, cv_folds)
    seconds_fit = time.perf_counter() - started
    names = features.layers
    at_edge = _grid_edges(names, kinds, chosen_c, c_grid)
    longest_test = max(len(test) for _, test in splits)
    result = vizkit.Result(
        summary={
            "table": _table(names, kinds, accuracy, chosen_c),
            "layers": names,
            "classifiers": kinds,
            "dims": features.dims,
            "classes": [dataset.classes[c] for c in kept],
            "dropped_classes": {dataset.classes[c]: n for c, n in extraction.dropped.items()},
            "excluded_classes": list(exclude),
            "folds": folds,
            "train_per_class": train_per_class,
            "test_per_class": test_per_class,
            "test_images": [len(test) for _, test in splits],
            "pool": pool,
            "cv_folds": cv_folds,
            "grid": list(c_grid),
            "c_at_grid_edge": at_edge,
            "seconds_extract": round(seconds_extract, 3),
            "seconds_fit": round(seconds_fit, 3),
            "cache": _cache_summary(parts, cache_dtype),
        },
        arrays={
            "accuracy": accuracy,
            "per_class_accuracy": per_class,
            "C": chosen_c,
            "train_index": np.stack([train for train, _ in splits]),
            "test_index": np.stack(
                [np.pad(test, (0, longest_test - len(test)), constant_values=-1) for _, test in splits]
            ),
        },
    )
    result.figures["probes"] = accuracy_figure(names, kinds, accuracy, features.dims, train_per_class, len(kept))
    result.figures["probes_table"] = table_figure(names, kinds, accuracy, features.dims)
    if not exclude:  # the default (Caltech's background class) named no folder of --data: params leave it out
        result.meta["not_applicable"] = ["exclude"]
    return result
