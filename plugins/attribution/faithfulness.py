"""Faithfulness metrics of attribution maps, batched: deletion, insertion and ROAD.

Each metric perturbs an image along the order a map gives its pixels and follows the model's
probability of the target class:

- **deletion** (most relevant first): the first pixels of the order are set to a baseline colour,
  step by step from none to all; a map that found what the model depends on makes the
  probability fall early, so a *lower* area under the curve is better (Samek et al. 2017's
  region perturbation, Petsiuk et al. 2018's deletion).
- **insertion**: the reverse, starting from the baseline image and putting the most relevant
  pixels back first; a *higher* area is better (Petsiuk et al. 2018).
- **ROAD** (Rong et al., ICML 2022, "remove and debias"): the removed pixels are not set to a
  colour, whose sharp edges leak the removed shape to the model, but imputed by *noisy linear
  imputation*: each one becomes the weighted mean of its 8 neighbours (1/6 for the four sides,
  1/12 for the corners), all removed pixels at once as one sparse linear system, plus Gaussian
  noise. Both orders: MoRF (most relevant first, lower is better) and LeRF (least relevant
  first, higher is better), at given percentages of the pixels.

Quantus (0.6) computes the same curves with one forward per step over the images
(``PixelFlipping``, ``RegionPerturbation``, ``ROAD``) and builds each ROAD system entry by
entry; here every perturbed image of every step, map and image goes through the model in
batches of ``batch_size``, and the ROAD systems of a batch are assembled with array operations
and solved as one block-diagonal system. ``tests/test_faithfulness.py`` checks the curves equal
Quantus's on the same settings, ``bench/faithfulness.py`` times both.

The plain API: :func:`deletion`, :func:`insertion`, :func:`road` (or :func:`evaluate` for
several) take a model (any callable from images to logits), the images ``[N, C, H, W]``, the
maps ``[N, H, W]`` (or ``[K, N, H, W]``: K maps of every image), the targets ``[N]`` and a
:class:`FaithfulnessSettings`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

import vizkit

METRICS = ("deletion", "insertion", "road")
ROAD_OFFSETS = (  # (row, column) offset of a neighbour and its weight in the imputation (Rong et al.)
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)
Model = Callable[[Tensor], Tensor]


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    """``deletion,insertion,road`` (or ``all``) as a list of metric names, in that order."""
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    names: set[str] = set()
    for part in (str(p).strip().lower() for p in parts):
        if not part:
            continue
        if part == "all":
            names.update(METRICS)
        elif part in METRICS:
            names.add(part)
        else:
            raise vizkit.UsageError(f"unknown metric '{part}' in --metrics; use {', '.join(METRICS)} or all")
    if not names:
        raise vizkit.UsageError("--metrics needs at least one metric, e.g. deletion,insertion,road")
    return [name for name in METRICS if name in names]


def parse_percentages(text: str | Sequence[float]) -> tuple[float, ...]:
    """``10,20,...`` as increasing percentages strictly between 0 and 100 (at 100 every pixel
    is removed and the imputation has no known neighbour to start from)."""
    parts = text if isinstance(text, (list, tuple)) else [p for p in str(text).split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise vizkit.UsageError(
            f"--road-percentages expects numbers between 0 and 100, e.g. 10,50,90; not '{text}'"
        ) from None
    if not values or not all(0 < v < 100 for v in values):
        raise vizkit.UsageError(f"--road-percentages must be between 0 and 100 (both excluded), not '{text}'")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class FaithfulnessSettings:
    """How the curves are computed.

    Attributes:
        steps: deletion and insertion: steps from 0 to 100% of the pixels (``steps + 1`` points).
        patch: deletion and insertion: pixels go in squares of this side, by mean |map| (1: pixel
            by pixel; squares cut by the right and bottom border are averaged over their pixels).
        baseline: deletion and insertion: the colour of removed pixels, a number or one value per
            channel, in the model's input space (0: the mean colour after normalisation).
        percentages: ROAD: the percentages of pixels imputed (strictly between 0 and 100).
        noise: ROAD: standard deviation of the Gaussian noise added to the imputed values.
        absolute: order the pixels by |map| (True) or by the signed map.
        batch_size: perturbed images per forward.
        seed: breaks ties between equally relevant pixels and draws ROAD's noise.
    """

    steps: int = 20
    patch: int = 1
    baseline: float | Tensor = 0.0
    percentages: tuple[float, ...] = field(default=(10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0))
    noise: float = 0.01
    absolute: bool = True
    batch_size: int = 64
    seed: int = 0

    @property
    def fractions(self) -> np.ndarray:
        """The deletion and insertion curves' fractions of pixels, 0 to 1."""
        return np.linspace(0.0, 1.0, self.steps + 1)


@dataclass(frozen=True)
class RoadCurves:
    """ROAD's curves of one set of maps (leading dims as the maps' without H, W; P percentages)."""

    percentages: np.ndarray  # [P]
    morf: np.ndarray  # [..., P] P(target), most relevant pixels imputed first
    lerf: np.ndarray  # [..., P] P(target), least relevant first
    morf_correct: np.ndarray  # [..., P] whether the target is still the top-1 class (Quantus's score)
    lerf_correct: np.ndarray  # [..., P]


def pixel_order(
    map_2d: np.ndarray | None,
    rng: np.random.Generator,
    patch: int = 1,
    shape: tuple[int, int] | None = None,
    absolute: bool = True,
    descending: bool = True,
) -> np.ndarray:
    """Flat pixel indices in the order the curves remove them: ``patch`` x ``patch`` squares
    (those at the right and bottom may be cut by the border), the one with the largest mean
    |map| (or map, ``absolute`` False) first (last, ``descending`` False), ties in random
    order (``map_2d`` None: the squares of a ``shape`` image in random order); inside a square,
    row by row."""
    height, width = map_2d.shape if map_2d is not None else shape  # type: ignore[misc]
    rows, cols = np.divmod(np.arange(height * width), width)
    square = (rows // patch) * -(-width // patch) + cols // patch
    count = int(square.max()) + 1
    score = np.zeros(count)
    if map_2d is not None:
        values = np.abs(map_2d) if absolute else np.asarray(map_2d, dtype=np.float64)
        score = np.bincount(square, weights=values.ravel(), minlength=count) / np.bincount(square)
    rank = np.empty(count, dtype=np.int64)
    rank[np.lexsort((rng.permutation(count), -score if descending else score))] = np.arange(count)
    return np.lexsort((np.arange(height * width), rank[square]))


def _colour(baseline: float | Tensor, images: Tensor) -> Tensor:
    """The baseline as a [1, C, 1, 1] tensor on the images' device and dtype."""
    value = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).reshape(-1)
    return value.reshape(1, -1, 1, 1).expand(1, images.shape[1], 1, 1)


_CHANNELS_LAST_FAILED: set[int] = set()  # ids of models a channels-last input broke (a .view on it)


def _forward(model: Model, batch: Tensor) -> Tensor:
    """The model's logits for a perturbed ``batch``, given to it in channels-last memory format
    on the CPU (oneDNN's convolutions ran SqueezeNet 1.5x faster so, same values to 1e-6); a
    model that cannot take it (a ``.view`` of a strided tensor) gets the plain layout, then on."""
    if batch.device.type != "cpu" or batch.dim() != 4 or id(model) in _CHANNELS_LAST_FAILED:
        return model(batch)
    try:
        return model(batch.contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        _CHANNELS_LAST_FAILED.add(id(model))
        return model(batch)


def _probabilities(model: Model, batch: Tensor, targets: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """P(target) of each image of ``batch`` and whether the target is the top-1 class."""
    logits = _forward(model, batch).float()
    rows = torch.arange(batch.shape[0], device=logits.device)
    targets = targets.to(logits.device)
    probability = logits.softmax(1)[rows, targets]
    return probability.cpu().numpy(), (logits.argmax(1) == targets).cpu().numpy()


def perturbation_curves(
    model: Model,
    images: Tensor,
    image_index: np.ndarray,
    orders: np.ndarray,
    targets: Tensor,
    counts: np.ndarray,
    baseline: float | Tensor,
    batch_size: int,
    insert: bool = False,
) -> np.ndarray:
    """P(target) as the first ``counts`` pixels of each order are removed (or, ``insert``,
    are the only ones kept, the rest set to ``baseline``): ``[R, F]`` for R orders of
    ``images[image_index]`` and F counts, every (order, count) pair one image of a batch.

    Args:
        model: images -> logits (called under ``torch.inference_mode``).
        images: ``[N, C, H, W]``.
        image_index: ``[R]``, the image each order belongs to.
        orders: ``[R, H * W]`` flat pixel indices, most relevant first.
        targets: ``[N]`` the class followed in each image.
        counts: ``[F]`` pixels removed (inserted) at each point of the curve.
        baseline: the colour removed pixels take (a number or one value per channel).
        batch_size: perturbed images per forward.
        insert: insertion instead of deletion.
    """
    count_r, pixels = orders.shape
    height, width = images.shape[-2:]
    rank = np.empty_like(orders)
    rank[np.arange(count_r)[:, None], orders] = np.arange(pixels)  # each pixel's place in its order
    rank_t = torch.as_tensor(rank, device=images.device).reshape(count_r, 1, height, width)
    colour = _colour(baseline, images)
    index_t = torch.as_tensor(image_index, device=images.device)
    job_rows, job_cols = np.divmod(np.arange(count_r * len(counts)), len(counts))  # (order, count) pairs
    rows_t = torch.as_tensor(job_rows, device=images.device)
    limits_t = torch.as_tensor(counts[job_cols], device=images.device).reshape(-1, 1, 1, 1)
    curves = np.zeros((count_r, len(counts)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(job_rows), batch_size):
            rows = rows_t[start : start + batch_size]
            removed = rank_t[rows] < limits_t[start : start + batch_size]  # [B, 1, H, W]
            if insert:
                removed = ~removed
            batch = torch.where(removed, colour, images[index_t[rows]])
            probability, _ = _probabilities(model, batch, targets[index_t[rows]])
            curves[job_rows[start : start + batch_size], job_cols[start : start + batch_size]] = probability
    return curves


def _as_stack(maps: np.ndarray | Tensor, images: Tensor) -> tuple[np.ndarray, tuple[int, ...]]:
    """Maps as ``[K, N, H, W]`` float64 and the leading shape to give the results back in."""
    values = maps.detach().float().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    n, _, height, width = images.shape
    if values.shape[-3:] != (n, height, width) or values.ndim not in (3, 4):
        raise vizkit.UsageError(
            f"maps must be [N, H, W] or [K, N, H, W] for images {tuple(images.shape)}, not {values.shape}"
        )
    lead = values.shape[:-2]
    return values.reshape(-1, n, height, width).astype(np.float64), lead


def _orders(stack: np.ndarray, rng: np.random.Generator, patch: int, absolute: bool, descending: bool) -> np.ndarray:
    """``[K * N, H * W]`` the orders of a ``[K, N, H, W]`` stack, maps in (K, N) order."""
    return np.stack(
        [
            pixel_order(m, rng, patch, absolute=absolute, descending=descending)
            for m in stack.reshape(-1, *stack.shape[2:])
        ]
    )


def _curve(
    model: Model,
    images: Tensor,
    maps: np.ndarray | Tensor,
    targets: Tensor,
    settings: FaithfulnessSettings,
    insert: bool,
) -> np.ndarray:
    stack, lead = _as_stack(maps, images)
    rng = np.random.default_rng(settings.seed)
    orders = _orders(stack, rng, settings.patch, settings.absolute, descending=True)
    image_index = np.tile(np.arange(images.shape[0]), stack.shape[0])
    pixels = images.shape[-2] * images.shape[-1]
    counts = np.round(settings.fractions * pixels).astype(np.int64)
    curves = perturbation_curves(
        model, images, image_index, orders, targets, counts, settings.baseline, settings.batch_size, insert
    )
    return curves.reshape(*lead, len(counts))


def deletion(
    model: Model, images: Tensor, maps: np.ndarray | Tensor, targets: Tensor, settings: FaithfulnessSettings
) -> np.ndarray:
    """Deletion curves: P(target) at ``settings.fractions`` of the most relevant pixels set to
    the baseline; ``[N, F]`` (``[K, N, F]`` for ``[K, N, H, W]`` maps). Lower area: better."""
    return _curve(model, images, maps, targets, settings, insert=False)


def insertion(
    model: Model, images: Tensor, maps: np.ndarray | Tensor, targets: Tensor, settings: FaithfulnessSettings
) -> np.ndarray:
    """Insertion curves: P(target) with only the most relevant ``settings.fractions`` of the
    pixels kept, the others at the baseline; ``[N, F]`` (``[K, N, F]``). Higher area: better."""
    return _curve(model, images, maps, targets, settings, insert=True)


def area_under(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under curves (last axis) over the fraction of pixels (0 to 1)."""
    return np.sum((curves[..., 1:] + curves[..., :-1]) * np.diff(fractions), axis=-1) / 2.0


# ---------------------------------------------------------------------------- ROAD
def road_counts(pixels: int, percentages: Sequence[float]) -> list[int]:
    """Pixels imputed at each percentage: ``int(pixels * p / 100)``, as Quantus counts them."""
    return [int(pixels * p / 100) for p in percentages]


def impute(images: np.ndarray, removed: Sequence[np.ndarray], noise: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Noisy linear imputation (Rong et al. 2022) of a batch: each removed pixel of
    ``images[b]`` (``[B, C, H, W]``) becomes the weighted mean of its in-image neighbours (1/6
    the sides, 1/12 the corners), removed neighbours being unknowns too; every channel and
    every image is one right-hand side / block of a single sparse system.

    Args:
        images: ``[B, C, H, W]``.
        removed: per image, the flat pixel indices removed (each list's order is its unknowns'
            order, which is the order ``noise`` follows).
        noise: per image, ``[C, len(removed[b])]`` added to the solution (None: none).

    Returns:
        the imputed images, float64.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    batch, channels, height, width = images.shape
    flat = images.reshape(batch, channels, height * width).astype(np.float64)
    sizes = np.array([len(r) for r in removed])
    total = int(sizes.sum())
    out = flat.copy()
    if total == 0:
        return out.reshape(images.shape)
    image_of = np.repeat(np.arange(batch), sizes)  # the image of each unknown
    pixel = np.concatenate([np.asarray(r, dtype=np.int64) for r in removed])
    # the unknowns numbered in nested-dissection order, image after image: LU without pivoting
    # then fills in little (a symmetric, diagonally dominant system needs no pivoting); with
    # SuperLU's own column ordering (spsolve's, Quantus's) the factorisation took about twice as
    # long on a 224 x 224 image with 90% of its pixels removed (0.9 s against 0.4 s)
    order = _dissection(image_of, *np.divmod(pixel, width))
    image_of, pixel = image_of[order], pixel[order]
    variable = np.full((batch, height * width), -1, dtype=np.int64)  # unknown id of a removed pixel
    variable[image_of, pixel] = np.arange(total)
    row, col = np.divmod(pixel, width)
    rhs = np.zeros((total, channels))
    diagonal = np.zeros(total)
    entries_row, entries_col, entries_value = [], [], []
    for (d_row, d_col), weight in ROAD_OFFSETS:
        r, c = row + d_row, col + d_col
        valid = (r >= 0) & (c >= 0) & (r < height) & (c < width)
        ids = np.nonzero(valid)[0]
        neighbour = r[ids] * width + c[ids]
        unknown = variable[image_of[ids], neighbour]
        known = unknown < 0
        rhs[ids[known]] -= weight * flat[image_of[ids[known]], :, neighbour[known]]
        entries_row.append(ids[~known])
        entries_col.append(unknown[~known])
        entries_value.append(np.full(int((~known).sum()), weight))
        diagonal[ids] -= weight
    entries_row.append(np.arange(total))
    entries_col.append(np.arange(total))
    entries_value.append(diagonal)
    system = coo_matrix(
        (np.concatenate(entries_value), (np.concatenate(entries_row), np.concatenate(entries_col))),
        shape=(total, total),
    ).tocsc()
    factors = splu(system, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    solution = factors.solve(rhs).reshape(total, channels)
    if noise is not None:
        solution = solution + np.concatenate([np.asarray(n).T for n in noise], axis=0)[order]
    out[image_of, :, pixel] = solution
    return out.reshape(images.shape)


def _dissection(group: np.ndarray, rows: np.ndarray, cols: np.ndarray, leaf: int = 64) -> np.ndarray:
    """A nested-dissection order of the pixels at (``rows``, ``cols``), the pixels of each
    ``group`` (an image of a batch) together, groups in increasing order: a region is cut by
    the middle row or column of its longer side, the two halves ordered (recursively) before the
    cut, pixels of a region of at most ``leaf`` (or of a cut) in their given order. With
    8-neighbour coupling one line of pixels separates the halves, so the halves' unknowns never
    meet in the elimination and the fill-in stays near O(n log n). All regions of a level are
    cut at once, with array operations: each pixel's key is its region's rank, in the order the
    regions come out (left half, right half, cut: 0, 1, 2 appended to the parent's key)."""
    count = len(rows)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    key = np.unique(group, return_inverse=True)[1].reshape(-1).astype(np.int64)
    final = np.zeros(count, dtype=bool)  # in a cut: never cut again
    while True:
        regions = int(key.max()) + 1
        active = ~final & (np.bincount(key, minlength=regions)[key] > leaf)
        if not active.any():
            return np.argsort(key, kind="stable")
        k, r, c = key[active], rows[active], cols[active]
        low_r, high_r = np.full(regions, r.max()), np.full(regions, r.min())
        low_c, high_c = np.full(regions, c.max()), np.full(regions, c.min())
        np.minimum.at(low_r, k, r)
        np.maximum.at(high_r, k, r)
        np.minimum.at(low_c, k, c)
        np.maximum.at(high_c, k, c)
        by_row = (high_r - low_r) >= (high_c - low_c)
        middle = np.where(by_row, (low_r + high_r) // 2, (low_c + high_c) // 2)[k]
        axis = np.where(by_row[k], r, c)
        digit = np.zeros(count, dtype=np.int64)
        digit[active] = np.where(axis < middle, 0, np.where(axis > middle, 1, 2))
        final[active] |= axis == middle
        child = key * 3 + digit
        present = np.zeros(3 * regions, dtype=np.int64)
        present[child] = 1
        key = (np.cumsum(present) - 1)[child]  # dense ranks, in the same order


def _road_noise(seed: int, channels: int, counts: Sequence[int], images: int, std: float) -> list[list[np.ndarray]]:
    """``[P][N]`` noise arrays ``[C, count]``: drawn percentage by percentage, image by image,
    from numpy's legacy generator seeded with ``seed`` (the order and generator Quantus draws
    them in from ``np.random`` seeded the same), so a seed reproduces them."""
    state = np.random.RandomState(seed)
    return [[std * state.randn(channels, k) for _ in range(images)] for k in counts]


def road_curves(
    model: Model,
    images: Tensor,
    image_index: np.ndarray,
    orders: np.ndarray,
    targets: Tensor,
    percentages: Sequence[float],
    noise: float,
    seed: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One ROAD order's curves: P(target) and top-1 correctness ``[R, P]`` as the first
    ``int(H * W * p / 100)`` pixels of each order are imputed; the noise of order r's image at
    percentage p is the same stream Quantus draws for ``np.random.seed(seed)``, as if the R
    orders were its batch."""
    count_r = orders.shape[0]
    channels, height, width = images.shape[1:]
    counts = road_counts(height * width, percentages)
    draws = _road_noise(seed, channels, counts, count_r, noise)
    jobs = [(r, p) for r in range(count_r) for p in range(len(counts))]
    source = images.detach().cpu().numpy()
    curves = np.zeros((count_r, len(counts)), dtype=np.float32)
    correct = np.zeros((count_r, len(counts)), dtype=bool)
    with torch.inference_mode():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            imputed = impute(
                source[image_index[[r for r, _ in chunk]]],
                [orders[r, : counts[p]] for r, p in chunk],
                [draws[p][r] for r, p in chunk] if noise else None,
            )
            batch = torch.as_tensor(imputed, dtype=images.dtype, device=images.device)
            rows = [r for r, _ in chunk]
            cols = [p for _, p in chunk]
            probability, top1 = _probabilities(
                model, batch, targets[torch.as_tensor(image_index[rows], device=targets.device)]
            )
            curves[rows, cols] = probability
            correct[rows, cols] = top1
    return curves, correct


def road(
    model: Model, images: Tensor, maps: np.ndarray | Tensor, targets: Tensor, settings: FaithfulnessSettings
) -> RoadCurves:
    """ROAD (Rong et al. 2022) in both orders at ``settings.percentages``: P(target) and
    top-1 correctness as the most (MoRF) or least (LeRF) relevant pixels are imputed with
    noisy linear imputation; ``[N, P]`` each (``[K, N, P]`` for ``[K, N, H, W]`` maps).
    MoRF's noise is drawn from ``settings.seed``, LeRF's from ``settings.seed + 1``."""
    stack, lead = _as_stack(maps, images)
    rng = np.random.default_rng(settings.seed)
    image_index = np.tile(np.arange(images.shape[0]), stack.shape[0])
    results = []
    for descending, seed in ((True, settings.seed), (False, settings.seed + 1)):
        orders = _orders(stack, rng, 1, settings.absolute, descending)
        results.append(
            road_curves(
                model,
                images,
                image_index,
                orders,
                targets,
                settings.percentages,
                settings.noise,
                seed,
                settings.batch_size,
            )
        )
    shape = (*lead, len(settings.percentages))
    (morf, morf_correct), (lerf, lerf_correct) = results
    return RoadCurves(
        np.asarray(settings.percentages, dtype=np.float64),
        morf.reshape(shape),
        lerf.reshape(shape),
        morf_correct.reshape(shape),
        lerf_correct.reshape(shape),
    )


def evaluate(
    model: Model,
    images: Tensor,
    maps: np.ndarray | Tensor,
    targets: Tensor,
    metrics: Sequence[str] = METRICS,
    settings: FaithfulnessSettings | None = None,
) -> dict[str, np.ndarray]:
    """Several metrics at once, as named arrays: ``deletion``/``insertion`` curves and their
    ``*_auc``, ``road_morf``/``road_lerf`` curves, their means over the percentages
    (``road_morf_mean``, ``road_lerf_mean``) and top-1 correctness (``road_*_correct``)."""
    settings = settings or FaithfulnessSettings()
    out: dict[str, np.ndarray] = {}
    for name in parse_metrics(list(metrics)):
        if name in ("deletion", "insertion"):
            curves = _curve(model, images, maps, targets, settings, insert=name == "insertion")
            out[name] = curves
            out[f"{name}_auc"] = area_under(settings.fractions, curves)
        else:
            result = road(model, images, maps, targets, settings)
            for order in ("morf", "lerf"):
                out[f"road_{order}"] = getattr(result, order)
                out[f"road_{order}_mean"] = getattr(result, order).mean(axis=-1)
                out[f"road_{order}_correct"] = getattr(result, f"{order}_correct")
    return out
