"""The score of ``correspondence``: pairwise Hamming distances between the signs of feature
changes, the values of the image pairs, the random baseline and the p-value against it."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

import vizkit

Zeros = Literal["sign", "changed"]


def sign_distances(eps: Tensor, zeros: Zeros = "sign") -> np.ndarray:
    """Pairwise normalised Hamming distances between the signs of the rows of ``eps``.

    Args:
        eps: [n, D] changes of a feature vector (original minus occluded), one row per image.
        zeros: ``sign``: sign in {-1, 0, +1}, every position counts, distance / D; ``changed``:
            only positions where at least one of the two rows is non-zero count, distance / their
            number (NaN when there is none).

    Returns:
        [n, n] float64 matrix, symmetric, 0 on the diagonal.
    """
    if zeros not in ("sign", "changed"):
        raise vizkit.UsageError(f"--zeros must be sign or changed, not '{zeros}'")
    signs = torch.sign(eps.reshape(eps.shape[0], -1)).to(torch.int8)
    n, length = signs.shape
    out = np.zeros((n, n))
    for i in range(n):
        differ = signs[i][None] != signs  # [n, D]
        if zeros == "sign":
            out[i] = (differ.sum(dim=1).double() / length).numpy()
        else:
            counted = (signs[i][None] != 0) | (signs != 0)
            totals = counted.sum(dim=1).double()
            out[i] = torch.where(totals > 0, (differ & counted).sum(dim=1).double() / totals, torch.nan).numpy()
    np.fill_diagonal(out, 0.0)
    return out


def pair_values(matrix: np.ndarray, members: list[int]) -> np.ndarray:
    """The distances of the unordered pairs i < j among ``members`` (NaN pairs left out)."""
    values = [matrix[i, j] for a, i in enumerate(members) for j in members[a + 1 :]]
    array = np.asarray(values, dtype=np.float64)
    return array[~np.isnan(array)]


def p_below_random(part_mean: float, draw_means: np.ndarray) -> float | None:
    """One-sided Monte-Carlo rank p-value of "the part scores below a random occlusion"; None
    when the part has no score or no draw has one (``--zeros changed`` with a ``--tolerance``
    that no change exceeds): a missing score must not read as a small p."""
    draws = draw_means[~np.isnan(draw_means)]
    if math.isnan(part_mean) or draws.size == 0:
        return None
    return float((1 + np.sum(draws <= part_mean)) / (1 + draws.size))


def _random_distances(draws: np.ndarray, n: int) -> tuple[dict[str, float | None], np.ndarray]:
    """The random baseline of one layer from its ``draws`` ([draws, n, n] distance matrices):
    the mean and spread over every pair of every draw, and each draw's mean over its pairs."""
    everyone = list(range(n))
    draw_pairs = [pair_values(matrix, everyone) for matrix in draws]
    draw_means = np.array([values.mean() if values.size else np.nan for values in draw_pairs])
    pooled = np.concatenate(draw_pairs)
    scored = draw_means[~np.isnan(draw_means)]
    baseline = {
        "mean": _float(pooled.mean()) if pooled.size else None,
        "std": _float(pooled.std()) if pooled.size else None,
        "draw_std": _float(scored.std()) if scored.size else None,
    }
    return baseline, draw_means


def _float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)
