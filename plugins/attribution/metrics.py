"""How the attribution maps are compared: Spearman rank correlation of the pixels' |map|, and
the faithfulness curves of :mod:`.faithfulness`: deletion (the target's probability as the most
attributed pixels are removed first) with the area under it, the map with the lowest area being
the one that found what the model depends on; on request insertion and ROAD."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

import vizkit

from .faithfulness import RoadCurves, perturbation_curves, pixel_order, road_curves

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
    image in random order); inside a square, row by row (:func:`.faithfulness.pixel_order`)."""
    return pixel_order(map_2d, rng, patch, shape)


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
    counts = np.round(fractions * image.shape[-2] * image.shape[-1]).astype(np.int64)
    target_t = torch.tensor([target], device=image.device)
    with im.configured(layers=None, switches=False):
        return perturbation_curves(
            im, image[None], np.zeros(1, np.int64), order[None], target_t, counts, baseline, batch_size
        )[0]


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
    deconvnet's), N images, F removed fractions, P ROAD percentages; the deletion (and
    insertion) curves' last row is the random reference (the squares in random order)."""

    maps: np.ndarray  # [K, N, H, W], each attribution summed over channels
    correlation: np.ndarray  # [N, K, K], Spearman rank correlation of |map|
    fractions: np.ndarray  # [F], from 0 to 1
    patch: int  # side of the squares the deletion removes
    curves: np.ndarray  # [K + 1, N, F], P(target) as the fractions are removed
    auc: np.ndarray  # [K + 1, N], the areas under the curves
    seconds: float  # what the deletion curves took
    insertion: np.ndarray | None = None  # [K + 1, N, F], P(target) with only the fractions kept
    insertion_auc: np.ndarray | None = None  # [K + 1, N]
    road: RoadCurves | None = None  # [K, N, P] each, MoRF and LeRF
    seconds_metrics: dict[str, float] = field(default_factory=dict)  # per metric

    @property
    def metrics(self) -> list[str]:
        """The faithfulness metrics computed (deletion always)."""
        return ["deletion"] + ["insertion"] * (self.insertion is not None) + ["road"] * (self.road is not None)

    def arrays(self) -> dict[str, np.ndarray]:
        """The comparison's arrays as the result stores them (float32; ROAD's top-1 as bool)."""
        arrays = {
            "maps": self.maps.astype(np.float32),
            "rank_correlation": self.correlation.astype(np.float32),
            "deletion_fractions": self.fractions.astype(np.float32),
            "deletion_probability": self.curves,
            "deletion_auc": self.auc.astype(np.float32),
        }
        if self.insertion is not None and self.insertion_auc is not None:
            arrays["insertion_probability"] = self.insertion.astype(np.float32)
            arrays["insertion_auc"] = self.insertion_auc.astype(np.float32)
        if self.road is not None:
            arrays["road_percentages"] = self.road.percentages.astype(np.float32)
            for order in ("morf", "lerf"):
                arrays[f"road_{order}_probability"] = getattr(self.road, order).astype(np.float32)
                arrays[f"road_{order}_correct"] = getattr(self.road, f"{order}_correct").astype(bool)
        return arrays

    @property
    def relative_auc(self) -> np.ndarray:
        """[K + 1, N]: each area as a fraction of the unaltered image's probability."""
        return self.auc / np.maximum(self.curves[:, :, 0], 1e-12)


def _with_reference(flat: np.ndarray, maps: int, images: int) -> np.ndarray:
    """``[N * (K + R), F]`` curves, per image K maps' then R random orders' -> ``[K + 1, N, F]``,
    the random draws averaged into the last row."""
    per_image = flat.reshape(images, maps + RANDOM_DRAWS, -1)
    return np.concatenate(
        [per_image[:, :maps].transpose(1, 0, 2), per_image[:, maps:].mean(axis=1, keepdims=True).transpose(1, 0, 2)]
    ).astype(np.float32)


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
    metrics: Sequence[str] = ("deletion",),
    percentages: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    noise: float = 0.01,
) -> Comparison:
    """The rank correlations and faithfulness curves of ``maps`` ([K, N, H, W], of images ``x``).

    Every perturbed image of every map, image and step of a metric goes through the model in
    batches (:func:`.faithfulness.perturbation_curves`, :func:`.faithfulness.road_curves`).

    Args:
        im: the instrumented model the curves run through (recording nothing).
        x: the images, [N, 3, H, W], preprocessed.
        maps: the attribution maps, [K, N, H, W].
        targets: each image's target class, [N].
        baseline: the [3] colour removed pixels take (deletion, insertion).
        steps: the deletion and insertion curves' steps from 0 to 100% of the pixels.
        patch: deletion and insertion remove pixels in squares of this side (1: pixel by pixel).
        rng: draws the order of tied squares, the random reference's orders and ROAD's noise seed.
        batch_size: perturbed images per forward.
        metrics: deletion (always computed), insertion, road.
        percentages: ROAD's percentages of pixels imputed.
        noise: ROAD's noise standard deviation.
    """
    correlation = np.stack([spearman_matrix(maps[:, i]) for i in range(x.shape[0])])
    fractions = np.linspace(0.0, 1.0, steps + 1)
    count_k, count_n = maps.shape[:2]
    height, width = x.shape[-2:]
    started = time.perf_counter()
    orders = []
    for i in range(count_n):  # the maps' orders, then the random reference's (drawn as before: same seed, same curves)
        orders += [deletion_order(maps[k, i], rng, patch) for k in range(count_k)]
        orders += [deletion_order(None, rng, patch, (height, width)) for _ in range(RANDOM_DRAWS)]
    image_index = np.repeat(np.arange(count_n), count_k + RANDOM_DRAWS)
    counts = np.round(fractions * height * width).astype(np.int64)
    seconds: dict[str, float] = {}
    with im.configured(layers=None, switches=False):
        flat = perturbation_curves(im, x, image_index, np.stack(orders), targets, counts, baseline, batch_size)
        curves = _with_reference(flat, count_k, count_n)
        seconds["deletion"] = round(time.perf_counter() - started, 3)
        insertion = insertion_auc = road = None
        if "insertion" in metrics:
            started = time.perf_counter()
            flat = perturbation_curves(
                im, x, image_index, np.stack(orders), targets, counts, baseline, batch_size, insert=True
            )
            insertion = _with_reference(flat, count_k, count_n)
            insertion_auc = np.array([[area_under(fractions, curve) for curve in rows] for rows in insertion])
            seconds["insertion"] = round(time.perf_counter() - started, 3)
        if "road" in metrics:
            started = time.perf_counter()
            road = _road(im, x, maps, targets, rng, batch_size, percentages, noise)
            seconds["road"] = round(time.perf_counter() - started, 3)
    auc = np.array([[area_under(fractions, curve) for curve in rows] for rows in curves])
    return Comparison(
        maps, correlation, fractions, patch, curves, auc, seconds["deletion"], insertion, insertion_auc, road, seconds
    )


def _road(
    im: vizkit.Instrumented,
    x: Tensor,
    maps: np.ndarray,
    targets: Tensor,
    rng: np.random.Generator,
    batch_size: int,
    percentages: Sequence[float],
    noise: float,
) -> RoadCurves:
    """ROAD's MoRF and LeRF curves ``[K, N, P]`` of every map, pixel by pixel by |map|; the
    noise seeded from ``rng`` (MoRF's seed, LeRF's the next)."""
    count_k, count_n = maps.shape[:2]
    image_index = np.tile(np.arange(count_n), count_k)
    seed = int(rng.integers(2**31 - 2))
    shape = (count_k, count_n, len(percentages))
    results = []
    for descending, order_seed in ((True, seed), (False, seed + 1)):
        orders = np.stack(
            [pixel_order(maps[k, i], rng, descending=descending) for k in range(count_k) for i in range(count_n)]
        )
        probability, correct = road_curves(
            im, x, image_index, orders, targets, percentages, noise, order_seed, batch_size
        )
        results.append((probability.reshape(shape), correct.reshape(shape)))
    (morf, morf_correct), (lerf, lerf_correct) = results
    return RoadCurves(np.asarray(percentages, dtype=np.float64), morf, lerf, morf_correct, lerf_correct)
