"""The atlas's overview figure: per listed layer, the strongest exemplar of its most class-selective
(else most active) units, projection above patch, so the front page shows what the atlas holds."""

from __future__ import annotations

import numpy as np
import torch

import vizkit
from vizkit.toolkit.figures import new_figure

UNITS_SHOWN = 12  # per layer


def _chosen(layer: str, arrays: dict[str, np.ndarray], units: int) -> list[int]:
    """Up to :data:`UNITS_SHOWN` units of ``layer`` that fired, most selective first (most active
    without classes)."""
    images = arrays[f"{layer}/top_images"]
    fired: list[int] = np.flatnonzero(images[:, 0] >= 0).tolist() if images.size else []
    key = arrays.get(f"{layer}/selectivity")
    if key is None:
        key = arrays[f"{layer}/mean_max"]
    key = np.nan_to_num(np.asarray(key, dtype=np.float64), nan=-np.inf)
    order = sorted(fired, key=lambda u: (-key[u], u))
    return [int(u) for u in order[:UNITS_SHOWN]]


def overview_figure(layers: list[str], arrays: dict[str, np.ndarray], units: dict[str, int]):
    """One row pair per layer: the chosen units' top-1 projection (upper) and image patch (lower)."""
    figure = new_figure(1.0 * UNITS_SHOWN + 1.2, 2.1 * len(layers) + 0.5, dpi=100)
    grid = figure.add_gridspec(
        2 * len(layers), UNITS_SHOWN, hspace=0.22, wspace=0.06, left=0.09, right=0.99, top=0.93, bottom=0.02
    )
    figure.suptitle(
        "Unit atlas: each layer's most class-selective units, strongest exemplar (projection above, image patch below)",
        fontsize=9,
    )
    for row, layer in enumerate(layers):
        chosen = _chosen(layer, arrays, units[layer])
        selectivity = arrays.get(f"{layer}/selectivity")
        for column in range(UNITS_SHOWN):
            top = figure.add_subplot(grid[2 * row, column])
            bottom = figure.add_subplot(grid[2 * row + 1, column])
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(False)
            if column == 0:
                top.set_ylabel(layer, fontsize=8, rotation=0, ha="right", va="center")
            if column >= len(chosen):
                continue
            unit = chosen[column]
            projection = torch.from_numpy(arrays[f"{layer}/projections"][unit, 0].astype(np.float32))
            top.imshow(
                vizkit.to_image(projection[None], channels_last=False)[0].permute(1, 2, 0).numpy(),
                interpolation="nearest",
            )
            bottom.imshow(arrays[f"{layer}/patches"][unit, 0], interpolation="nearest")
            label = f"u{unit}"
            if selectivity is not None and np.isfinite(selectivity[unit]):
                label += f" s={selectivity[unit]:.2f}"
            top.set_title(label, fontsize=6.5, pad=2)
    return figure
