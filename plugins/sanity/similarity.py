"""How alike two maps are, the four ways Adebayo et al. (2018) measured it.

- ``spearman``: Spearman rank correlation of the signed maps' pixels (ties share their average
  rank);
- ``spearman_abs``: the same of their absolute values (a map whose sign flips everywhere still
  ranks the same pixels);
- ``ssim``: the structural similarity index of the two |maps|, each scaled to [0, 1] by its own
  maximum (:func:`vizkit.toolkit.ssim`, scikit-image's definition: 7x7 windows, data range 1);
- ``hog``: Pearson correlation of the histograms of oriented gradients of the two scaled |maps|
  (scikit-image's ``hog``: 9 orientations, 16x16-pixel cells, 2x2-cell blocks), which compares
  their edges' directions rather than their values.

Each is 1 for identical maps. A constant map ranks no pixel and has no edges: its similarity
to anything is undefined (NaN), and the tables say so rather than show a number.
"""

from __future__ import annotations

import numpy as np

import vizkit

METRICS = ("spearman", "spearman_abs", "ssim", "hog")
TITLES = {
    "spearman": "Spearman rank correlation",
    "spearman_abs": "Spearman rank correlation of |map|",
    "ssim": "SSIM",
    "hog": "HOG similarity",
}
HOG_CELL = 16  # pixels per HOG cell side


def _constant(values: np.ndarray) -> bool:
    return values.size == 0 or float(values.max()) == float(values.min())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels (NaN when either is constant)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if _constant(a) or _constant(b):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def scaled(map_2d: np.ndarray) -> np.ndarray:
    """|map| divided by its maximum: [0, 1] (an all-zero map stays zero)."""
    values = np.abs(np.asarray(map_2d, dtype=np.float64))
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else values


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the two scaled |maps| (NaN when either is constant)."""
    x, y = scaled(a), scaled(b)
    if _constant(x) or _constant(y) or min(x.shape) < 3:
        return float("nan")
    return vizkit.toolkit.ssim(x, y, data_range=1.0)


def hog_features(map_2d: np.ndarray) -> np.ndarray:
    """The HOG descriptor of the scaled |map| (cells of ``HOG_CELL`` pixels, or the map's shorter
    side where the map is smaller)."""
    from skimage.feature import hog

    values = scaled(map_2d)
    cell = max(2, min(HOG_CELL, min(values.shape) // 2))
    return hog(values, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2), feature_vector=True)


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the two maps' HOG descriptors (NaN when either has no edges, or
    the maps are smaller than two cells of 2 pixels a side)."""
    if min(np.shape(a)) < 4:
        return float("nan")
    x, y = hog_features(a), hog_features(b)
    if _constant(x) or _constant(y):
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def similarities(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRICS` between two [H, W] maps."""
    return {
        "spearman": spearman(a, b),
        "spearman_abs": spearman(np.abs(a), np.abs(b)),
        "ssim": ssim(a, b),
        "hog": hog_similarity(a, b),
    }
