"""How the attribution maps are compared: Spearman rank correlation of the pixels' |map|, and
deletion curves (the target's probability as the most attributed pixels are removed first) with
the area under them; the map with the lowest area is the one that found what the model depends on."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

import vizkit

RANDOM_DRAWS = 3  # random deletion orders averaged into the reference curve


def to_2d(attribution: Tensor | np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, H, W]: the sum over channels, sign kept (as captum's figures do)."""
    values = attribution.detach().float().cpu().numpy() if isinstance(attribution, Tensor) else np.asarray(attribution)
    return values.astype(np.float64).sum(axis=1)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties sharing their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman_matrix(maps: np.ndarray) -> np.ndarray:
    """[K, H, W] -> [K, K] Spearman rank correlation of the pixels' |map| (NaN where a map is
    constant)."""
    ranks = np.stack([average_ranks(np.abs(m).ravel()) for m in maps])
    ranks -= ranks.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ranks, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = (ranks @ ranks.T) / np.outer(norms, norms)
    return np.clip(matrix, -1.0, 1.0)


def deletion_order(
    map_2d: np.ndarray | None, rng: np.random.Generator, patch: int = 1, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Flat pixel indices in the order a deletion curve removes them: ``patch`` x ``patch``
    squares (those at the right and bottom may be cut by the border), the one with the largest
    mean |attribution| first, ties in random order (``map_2d`` None: the squares of a ``shape``
    image in random order); inside a square, row by row."""
    height, width = map_2d.shape if map_2d is not None else shape  # type: ignore[misc]
    rows, cols = np.divmod(np.arange(height * width), width)
    square = (rows // patch) * -(-width // patch) + cols // patch
    count = int(square.max()) + 1
    score = np.zeros(count)
    if map_2d is not None:
        score = np.bincount(square, weights=np.abs(map_2d).ravel(), minlength=count) / np.bincount(square)
    rank = np.empty(count, dtype=np.int64)
    rank[np.lexsort((rng.permutation(count), -score))] = np.arange(count)
    return np.lexsort((np.arange(height * width), rank[square]))


def deletion_curve(
    im: vizkit.Instrumented,
    image: Tensor,
    order: np.ndarray,
    target: int,
    fractions: np.ndarray,
    baseline: Tensor,
    batch_size: int,
) -> np.ndarray:
    """P(target) as the first ``fractions`` of ``order`` (pixels of [3, H, W] ``image``) are set
    to ``baseline``, through the instrumented model (recording nothing)."""
    height, width = image.shape[-2:]
    counts = np.round(fractions * height * width).astype(np.int64)
    order_t = torch.as_tensor(order, device=image.device)
    colour = baseline.to(image.device, image.dtype).reshape(3, 1)
    probabilities = []
    with im.configured(layers=None, switches=False), torch.no_grad():
        for start in range(0, len(counts), batch_size):
            batch = image.unsqueeze(0).repeat(len(counts[start : start + batch_size]), 1, 1, 1)
            flat = batch.view(batch.shape[0], 3, -1)
            for row, count in enumerate(counts[start : start + batch_size]):
                flat[row][:, order_t[: int(count)]] = colour
            probabilities.append(im(batch).float().softmax(1)[:, target].cpu())
    return torch.cat(probabilities).numpy()


def area_under(fractions: np.ndarray, curve: np.ndarray) -> float:
    """Trapezoidal area under a deletion curve over the removed fraction (0 to 1)."""
    return float(np.sum((curve[1:] + curve[:-1]) * np.diff(fractions)) / 2.0)


def best_column(columns: list[str], auc: np.ndarray, maps: np.ndarray) -> str | None:
    """The column with the lowest deletion AUC among the maps that rank pixels (not constant:
    an all-zero or uniform map is deleted in random order); None when none does, or when
    several share the lowest AUC (identical curves name no winner)."""
    scored = [(float(auc[k]), column) for k, column in enumerate(columns) if ranks_pixels(maps[k])]
    if not scored:
        return None
    lowest = min(score for score, _ in scored)
    winners = [column for score, column in scored if score == lowest]
    return winners[0] if len(winners) == 1 else None


def ranks_pixels(map_2d: np.ndarray) -> bool:
    """Whether |map| orders the pixels at all (it is not the same everywhere)."""
    magnitude = np.abs(map_2d)
    return bool(magnitude.size) and bool(magnitude.max() > magnitude.min())


@dataclass(frozen=True)
class Comparison:
    """Every map of every image compared with the others: K maps (the methods' and the
    deconvnet's), N images, F removed fractions; the deletion curves' last row is the random
    reference (the squares removed in random order)."""

    maps: np.ndarray  # [K, N, H, W], each attribution summed over channels
    correlation: np.ndarray  # [N, K, K], Spearman rank correlation of |map|
    fractions: np.ndarray  # [F], from 0 to 1
    patch: int  # side of the squares the deletion removes
    curves: np.ndarray  # [K + 1, N, F], P(target) as the fractions are removed
    auc: np.ndarray  # [K + 1, N], the areas under the curves
    seconds: float  # what the deletion curves took

    def arrays(self) -> dict[str, np.ndarray]:
        """The comparison's arrays as the result stores them (float32)."""
        return {
            "maps": self.maps.astype(np.float32),
            "rank_correlation": self.correlation.astype(np.float32),
            "deletion_fractions": self.fractions.astype(np.float32),
            "deletion_probability": self.curves,
            "deletion_auc": self.auc.astype(np.float32),
        }

    @property
    def relative_auc(self) -> np.ndarray:
        """[K + 1, N]: each area as a fraction of the unaltered image's probability."""
        return self.auc / np.maximum(self.curves[:, :, 0], 1e-12)


def compare(
    im: vizkit.Instrumented,
    x: Tensor,
    maps: np.ndarray,
    targets: Tensor,
    baseline: Tensor,
    steps: int,
    patch: int,
    rng: np.random.Generator,
    batch_size: int,
) -> Comparison:
    """The rank correlations and deletion curves of ``maps`` ([K, N, H, W], of images ``x``).

    Args:
        im: the instrumented model the deletion curves run through (recording nothing).
        x: the images, [N, 3, H, W], preprocessed.
        maps: the attribution maps, [K, N, H, W].
        targets: each image's target class, [N].
        baseline: the [3] colour removed pixels take.
        steps: the deletion curves' steps from 0 to 100% of the pixels removed.
        patch: pixels are removed in squares of this side (1: pixel by pixel).
        rng: draws the order of tied squares and the random reference's orders.
        batch_size: occluded images per forward.
    """
    correlation = np.stack([spearman_matrix(maps[:, i]) for i in range(x.shape[0])])
    fractions = np.linspace(0.0, 1.0, steps + 1)
    started = time.perf_counter()
    curves = np.zeros((len(maps) + 1, x.shape[0], len(fractions)), dtype=np.float32)
    height, width = x.shape[-2:]
    for i in range(x.shape[0]):
        target = int(targets[i])
        orders = [deletion_order(maps[k, i], rng, patch) for k in range(len(maps))]
        for k, order in enumerate(orders):
            curves[k, i] = deletion_curve(im, x[i], order, target, fractions, baseline, batch_size)
        random_orders = [deletion_order(None, rng, patch, (height, width)) for _ in range(RANDOM_DRAWS)]
        curves[-1, i] = np.mean(  # the reference: squares in random order, averaged over a few draws
            [deletion_curve(im, x[i], order, target, fractions, baseline, batch_size) for order in random_orders],
            axis=0,
        )
    auc = np.array([[area_under(fractions, curve) for curve in rows] for rows in curves])
    return Comparison(maps, correlation, fractions, patch, curves, auc, round(time.perf_counter() - started, 3))
