"""How alike two maps are: the structural similarity index (SSIM) used to judge approximate maps."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None, window: int = 7) -> float:
    """Mean structural similarity of two 2-D maps (Wang et al. 2004), as scikit-image's
    ``structural_similarity`` computes it by default: uniform ``window`` x ``window`` windows,
    sample (co)variances, K1 = 0.01, K2 = 0.03, averaged over the windows inside the map.

    Args:
        a: the map under test, 2-D.
        b: the reference map, same shape.
        data_range: the range the values can span; default: ``b``'s max - min (1 if constant).
        window: side of the square window, odd; shrunk to the map's smaller side (kept odd).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2-D maps of the same shape, not {a.shape} and {b.shape}")
    side = min(window, *a.shape)
    side -= 1 - side % 2  # odd
    if side < 1:
        raise ValueError(f"ssim needs maps of at least 1x1, not {a.shape}")
    if data_range is None:
        data_range = float(b.max() - b.min()) or 1.0
    count = side * side
    windows_a = sliding_window_view(a, (side, side)).reshape(*np.subtract(a.shape, side - 1), count)
    windows_b = sliding_window_view(b, (side, side)).reshape(*np.subtract(b.shape, side - 1), count)
    mean_a, mean_b = windows_a.mean(-1), windows_b.mean(-1)
    correction = count / (count - 1) if count > 1 else 1.0  # sample covariance
    var_a = windows_a.var(-1) * correction
    var_b = windows_b.var(-1) * correction
    cov = ((windows_a - mean_a[..., None]) * (windows_b - mean_b[..., None])).mean(-1) * correction
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())
