"""The featvis figures: per unit its synthetic picture(s) and, where known, its strongest natural
exemplars beside them (Borowski et al. recommend showing both), labelled with how far to trust
the picture: the activation it reaches over the best natural exemplar's, and the unit's rank
among the layer's units on it. Drawn as one canvas per page (one ``imshow``), labels on top."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vizkit.toolkit.figures import new_figure

from .natural import Natural

TILE = 96  # px of every picture in the figure
GAP = 3  # px between pictures of a cell
CELL_GAP = 14  # px between cells
LABEL = 30  # px above a cell for its two label lines
PAGE_WIDTH = 1500  # px a page aims at
ROWS_PER_PAGE = 8
DPI = 100


def _tile(picture: np.ndarray, side: int = TILE) -> np.ndarray:
    """uint8 [H, W, 3] resized to [side, side, 3] (bilinear, antialiased)."""
    if picture.shape[0] == side and picture.shape[1] == side:
        return picture
    tensor = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)[None].float()
    small = F.interpolate(tensor, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return small[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def unit_strip(pictures: np.ndarray, gap: int = 2) -> np.ndarray:
    """A unit's K pictures [K, S, S, 3] side by side (white gaps): its file for pages."""
    count, size = pictures.shape[0], pictures.shape[1]
    strip = np.full((size, count * size + (count - 1) * gap, 3), 255, dtype=np.uint8)
    for index, picture in enumerate(pictures):
        strip[:, index * (size + gap) : index * (size + gap) + size] = picture
    return strip


def _label(record: dict[str, Any], units: int) -> tuple[str, str]:
    first = str(record["label"])
    rank = record["rank"][0]
    parts = [f"rank {rank}/{units}"]
    ratio = (record.get("ratio") or [None])[0]
    if ratio is not None:
        parts.insert(0, f"{ratio:.2f}x best natural")
    elif "ratio" in record:
        parts.insert(0, "no natural exemplar fires")
    return first, " · ".join(parts)


def grid_figures(
    pictures: np.ndarray, natural: Natural | None, records: list[dict[str, Any]], title: str, units: int
) -> dict[str, Any]:
    """``featvis`` (and ``featvis_2``, ... beyond one page): per unit a cell of its K pictures
    [U, K, S, S, 3] then its natural exemplars (thumbnails), labelled."""
    count, k = pictures.shape[:2]
    shown = 0 if natural is None else int(natural.thumbnails.shape[1])
    tiles = k + shown
    cell_width = tiles * TILE + (tiles - 1) * GAP + (GAP * 3 if shown else 0)
    columns = max(1, min(count, (PAGE_WIDTH + CELL_GAP) // (cell_width + CELL_GAP)))
    per_page = columns * ROWS_PER_PAGE
    pages = math.ceil(count / per_page)
    figures: dict[str, Any] = {}
    for page in range(pages):
        first = page * per_page
        members = list(range(first, min(count, first + per_page)))
        rows = math.ceil(len(members) / columns)
        width = columns * cell_width + (columns - 1) * CELL_GAP
        height = rows * (LABEL + TILE) + (rows - 1) * CELL_GAP
        canvas = np.full((height, width, 3), 255, dtype=np.uint8)
        labels = []
        for slot, unit in enumerate(members):
            row, column = divmod(slot, columns)
            top = row * (LABEL + TILE + CELL_GAP) + LABEL
            left = column * (cell_width + CELL_GAP)
            x = left
            for index in range(k):
                canvas[top : top + TILE, x : x + TILE] = _tile(pictures[unit, index])
                x += TILE + GAP
            if shown and natural is not None:
                x += GAP * 3
                canvas[top : top + TILE, x - GAP * 2 : x - GAP] = 120  # a rule: synthetic | natural
                for index in range(shown):
                    if natural.images[unit, index] >= 0:
                        canvas[top : top + TILE, x : x + TILE] = _tile(natural.thumbnails[unit, index])
                    else:
                        canvas[top : top + TILE, x : x + TILE] = 235
                    x += TILE + GAP
            labels.append((left, top - LABEL, *_label(records[unit], units)))
        figure = new_figure(width / DPI, (height + 40) / DPI, dpi=DPI)
        axes = figure.add_axes((0, 0, 1, height / (height + 40)))
        axes.imshow(canvas, interpolation="nearest")
        axes.set_xlim(-0.5, width - 0.5)
        axes.set_ylim(height - 0.5, -0.5)
        axes.axis("off")
        for left, top, line1, line2 in labels:
            axes.text(left, top + 2, line1, fontsize=8, fontweight="bold", va="top", ha="left")
            axes.text(left, top + 14, line2, fontsize=7, va="top", ha="left", color="#333333")
        suffix = f" (page {page + 1} of {pages})" if pages > 1 else ""
        legend = "synthetic" + (f" | {shown} strongest natural exemplars" if shown else "")
        figure.suptitle(f"{title}{suffix}\n{legend}", fontsize=10, y=1.0, va="top")
        figures["featvis" if page == 0 else f"featvis_{page + 1}"] = figure
    return figures
