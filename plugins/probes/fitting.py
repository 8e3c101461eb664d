"""The probes themselves: per layer, fold and classifier, C chosen by cross-validation on the
training split, the probe refitted and scored on the test split; the table of their accuracies."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

import vizkit

from .extraction import _Extraction

CLASSIFIERS = ("svm", "softmax")


def parse_grid(text: str) -> tuple[float, ...]:
    """``--grid``: positive C values, comma-separated, returned sorted."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise vizkit.UsageError(f"--grid takes positive numbers, comma-separated, not '{text}'") from None
    if not values or values[0] <= 0 or not all(np.isfinite(values)):
        raise vizkit.UsageError(f"--grid takes positive numbers, comma-separated, not '{text}'")
    return tuple(values)


def _fit(
    ctx: vizkit.RunContext,
    extraction: _Extraction,
    labels: torch.Tensor,
    kinds: list[str],
    c_grid: tuple[float, ...],
    cv_folds: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy [layers, kinds, folds], per-class accuracy [..., classes] and the C chosen by
    cross-validation [layers, kinds, folds] of every probe, one layer in memory at a time."""
    names, splits, kept = extraction.features.layers, extraction.splits, extraction.kept
    row_of = extraction.row_of()
    accuracy = np.zeros((len(names), len(kinds), len(splits)), dtype=np.float32)
    per_class = np.zeros((len(names), len(kinds), len(splits), len(kept)), dtype=np.float32)
    chosen_c = np.zeros((len(names), len(kinds), len(splits)), dtype=np.float64)
    bar = vizkit.toolkit.progress_bar(
        total=len(names) * len(splits) * len(kinds), desc="probes", unit="fits", enabled=ctx.progress
    )
    for l, layer in enumerate(names):
        matrix = extraction.layer_matrix(layer)  # one layer in memory
        for f, (train, test) in enumerate(splits):
            x_train = matrix[[row_of[int(i)] for i in train]].to(ctx.device)
            x_test = matrix[[row_of[int(i)] for i in test]].to(ctx.device)
            y_train, y_test = labels[train].to(ctx.device), labels[test]
            for k, kind in enumerate(kinds):
                probe, c_value, _ = vizkit.toolkit.select_probe(
                    x_train, y_train, kind, grid=c_grid, cv_folds=cv_folds, seed=ctx.seed + f
                )
                predicted = probe.predict(x_test).cpu()
                mean, classwise = vizkit.toolkit.mean_class_accuracy(predicted, y_test, kept)
                accuracy[l, k, f], per_class[l, k, f], chosen_c[l, k, f] = mean, classwise, c_value
                bar.update(1)
        del matrix
    bar.close()
    return accuracy, per_class, chosen_c


def _grid_edges(
    names: list[str], kinds: list[str], chosen_c: np.ndarray, c_grid: tuple[float, ...]
) -> dict[str, dict[str, int]]:
    """Per layer and classifier, the folds whose C is at an end of the grid (the best one may lie
    beyond it: said on stderr). A grid of one C is a fixed C, chosen by the user, not an edge the
    search ran into."""
    at_edge = {
        layer: {
            kind: int(np.isin(chosen_c[l, k], [c_grid[0], c_grid[-1]]).sum()) if len(c_grid) > 1 else 0
            for k, kind in enumerate(kinds)
        }
        for l, layer in enumerate(names)
    }
    if any(count for per_layer in at_edge.values() for count in per_layer.values()):
        print(
            f"probes: the chosen C was at an end of the grid {list(c_grid)} in some folds (see c_at_grid_edge in "
            "result.json); widening --grid may raise accuracy",
            file=sys.stderr,
        )
    return at_edge


def _table(
    names: list[str], kinds: list[str], accuracy: np.ndarray, chosen_c: np.ndarray
) -> dict[str, dict[str, dict[str, Any]]]:
    """result.json's table: per layer and classifier, the accuracy's mean and spread over the
    folds and each fold's chosen C."""
    return {
        layer: {
            kind: {
                "mean": round(float(accuracy[l, k].mean()), 5),
                "std": round(float(accuracy[l, k].std()), 5),
                "C": [float(c) for c in chosen_c[l, k]],
            }
            for k, kind in enumerate(kinds)
        }
        for l, layer in enumerate(names)
    }
