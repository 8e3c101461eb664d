"""The summary of one transformation's curves: per layer how soon and how linearly the features
move, and how long the target's probability and the top-1 label hold."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from .transforms import IDENTITY, Transform


def _family_summary(
    family: Transform,
    per_image: list[tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], Tensor]],
    layers: list[str],
    targets: list[int],
    p0: np.ndarray,
    originals: Tensor,
    arrays: dict[str, np.ndarray],
) -> dict[str, Any]:
    """One transformation's curves, stored into ``arrays``, and their summary: per layer how
    soon and how linearly its features move, and how long the target's probability and the
    top-1 label hold."""
    n = len(per_image)
    t = family.name
    identity = IDENTITY[t]
    arrays[f"{t}_steps"] = np.asarray(family.steps, dtype=np.float32)
    probabilities = np.stack([_softmax(logits[t])[:, targets[i]] for i, (_, logits, _) in enumerate(per_image)])
    arrays[f"{t}_prob"] = probabilities.astype(np.float32)
    arrays[f"{t}_top1"] = np.stack([logits[t].argmax(axis=1) for _, logits, _ in per_image]).astype(np.int64)
    centre = family.steps.index(identity)
    nearest = min((s for s in range(len(family.steps)) if s != centre), key=lambda s: abs(family.steps[s] - identity))
    layer_summary = {}
    for layer in layers:
        distance = np.stack([d[t][layer] for d, _, _ in per_image])
        arrays[f"{t}_distance_{layer}"] = distance.astype(np.float32)
        peak = distance.max(axis=1)
        layer_summary[layer] = {
            "first_step": family.steps[nearest],
            # how much of its largest change a layer already shows at the smallest step
            "first_step_fraction": _mean([distance[i, nearest] / peak[i] for i in range(n) if peak[i] > 0]),
            "linearity_r2": _mean([_linearity(family.steps, distance[i], identity, t == "rotate") for i in range(n)]),
            "max_distance": _mean(list(peak)),
        }
    return {
        "layers": layer_summary,
        "prob_half_range": [_half_range(family.steps, probabilities[i], identity) for i in range(n)],
        "prob_above_half_fraction": _mean([float((probabilities[i] >= 0.5 * p0[i]).mean()) for i in range(n)]),
        "top1_kept_fraction": _mean(
            [float((arrays[f"{t}_top1"][i] == int(originals[i].argmax())).mean()) for i in range(n)]
        ),
    }


def _half_range(steps: tuple[float, ...], probability: np.ndarray, identity: float) -> list[float]:
    """The contiguous range of steps around the identity where P(true) stays >= half its value at
    the identity."""
    centre = steps.index(identity)
    keep = probability >= 0.5 * probability[centre]
    low = high = centre
    while low > 0 and keep[low - 1]:
        low -= 1
    while high < len(steps) - 1 and keep[high + 1]:
        high += 1
    return [steps[low], steps[high]]


def _linearity(steps: tuple[float, ...], distance: np.ndarray, identity: float, circular: bool) -> float | None:
    """R^2 of distance as a linear function of |step - identity| (angles: the shorter way round)."""
    x = np.abs(np.asarray(steps) - identity)
    if circular:
        x = np.minimum(x % 360, 360 - x % 360)
    if distance.std() == 0:
        return None
    r = np.corrcoef(x, distance)[0, 1]
    return float(r * r)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _mean(values: list[Any]) -> float | None:
    """The mean of the finite values, to 6 significant digits (not decimals: a relative distance
    of 3e-7 is not 0.0); None if there is none."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(f"{float(np.mean(kept)):.6g}") if kept else None
