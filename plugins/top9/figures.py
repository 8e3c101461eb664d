"""top9's PNG pages: per map its k projections beside its k image patches, as near-square
mosaics, pages shaped so that none is capped more than it must be."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

import vizkit
from vizkit.toolkit.figures import new_figure, silent_panel, tile_mosaic

MAX_SIDE_INCHES = 20.0  # vizkit's figure cap (2000 px at 100 dpi): larger pages shrink to fit
BLOCK_INCHES = 3.0  # width of one map's block of projections (and of its block of patches)


def _first_layer_filters(ctx: vizkit.RunContext, layer: str, x: torch.Tensor) -> torch.Tensor | None:
    """The first convolution's filters when ``layer`` lies no deeper than it (layer 1), else None."""
    convs = ctx.instrumented.convolutions(x, until=layer)
    if len(convs) != 1 or convs[0][1].in_channels != x.shape[1]:
        return None
    return convs[0][1].weight.detach().cpu()


def mosaic_grid(k: int) -> tuple[int, int]:
    """Rows and columns of the near-square block that holds a map's k tiles: ceil(sqrt(k))
    columns (k=4: 2x2, 9: 3x3, 16: 4x4, 25: 5x5, 5: 2 rows of 3)."""
    columns = max(1, math.ceil(math.sqrt(k)))
    return max(1, math.ceil(k / columns)), columns


def _maps_per_row(
    maps_per_page: int,
    shown_maps: int,
    map_w: float,
    map_gap: float,
    block_h: float,
    title_h: float,
    margins: float,
    side: float,
) -> int:
    """Maps side by side on a page: 2 up to 8 maps a page, else about sqrt(maps / 2), at most 4;
    and when a page of that shape would be capped (tall pages of many maps), the number that
    keeps the page nearest to square instead, so it is capped least (4 a row made 100 maps a
    page 25 rows tall, shrunk to a quarter, the titles running over each other)."""
    usual = 2 if maps_per_page <= 8 else min(4, round(math.sqrt(maps_per_page / 2)))
    count = max(1, min(maps_per_page, shown_maps))

    def scale(per_row: int) -> float:
        rows = math.ceil(count / per_row)
        width = per_row * map_w + (per_row - 1) * map_gap + 2 * side
        height = rows * block_h + (rows - 1) * title_h + margins
        return min(1.0, MAX_SIDE_INCHES / width, MAX_SIDE_INCHES / height)

    square = max(1, round(math.sqrt(count * (block_h + title_h) / (map_w + map_gap))))
    return square if scale(square) > scale(usual) + 1e-9 else usual


def _draw_map(
    figure: Any,
    inner: Any,
    channel: int,
    row: np.ndarray,
    arrays: dict[str, np.ndarray],
    m: int,
    filters: torch.Tensor | None,
    grid: tuple[int, int],
    n_images: int,
    shrink: float,
) -> None:
    """Map ``m`` (``channel``, its winners' values ``row``) in its cell ``inner`` of a page: its
    filter (layer 1), its projections and its patches as ``grid`` mosaics; an empty labelled panel
    when it never fired."""
    extra = 1 if filters is not None else 0
    k = int((np.isfinite(row) & (arrays["image_index"][m] >= 0)).sum())
    if k == 0:  # never fired on these images: the silent panel of every figure
        silent_panel(
            figure.add_subplot(inner[0, extra:]),
            f"silent: map {channel} never fired on these {n_images} images\n(max activation 0), so there is nothing to project",
            title=f"map {channel}: silent",
            fontsize=max(4.0, 7 * shrink),
            title_fontsize=max(4.0, 8 * shrink),
        )
        return
    projections = torch.from_numpy(arrays["projections"][m, :k].astype(np.float32))
    display = vizkit.to_image(projections, channels_last=False).permute(0, 2, 3, 1).numpy()
    patches = arrays["patches"][m, :k].astype(np.float32) / 255
    if filters is not None:
        ax = figure.add_subplot(inner[0, 0])
        weight = filters[channel]
        ax.imshow(
            ((weight - weight.min()) / (weight.max() - weight.min() + 1e-12)).permute(1, 2, 0).numpy(),
            interpolation="nearest",
        )
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title("filter", fontsize=max(4.0, 7 * shrink))
    for offset, tiles in enumerate((display, patches)):
        ax = figure.add_subplot(inner[0, extra + offset])
        ax.imshow(tile_mosaic(tiles, rows=grid[0], columns=grid[1]), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        if offset == 0:
            ax.set_title(
                f"map {channel}  (top {k}: {row[0]:.3g} .. {row[k - 1]:.3g})",
                fontsize=max(4.0, 8 * shrink),
                loc="left",
            )


def figure_pages(
    layer: str,
    channels: list[int],
    values: np.ndarray,
    arrays: dict[str, np.ndarray],
    filters: torch.Tensor | None,
    maps_per_page: int,
    pages: int,
    n_images: int,
) -> dict:
    """The PNG pages: ``maps_per_page`` maps a page, at most ``pages`` pages; per map its k
    projections and, beside them, the k image patches, each block a near-square grid
    (:func:`mosaic_grid`) of one shape for every map, so a map with fewer winners leaves cells
    empty rather than changing shape. Layer-1 maps also show their filter. A page never exceeds
    ``MAX_SIDE_INCHES`` on a side."""
    figures = {}
    shown_maps = min(len(channels), maps_per_page * pages)
    n_pages = math.ceil(shown_maps / maps_per_page)
    cells = max(1, values.shape[1])
    grid_rows, grid_columns = mosaic_grid(cells)
    size, gap = arrays["patches"].shape[2], 2
    block_w = BLOCK_INCHES
    block_h = block_w * (grid_rows * size + (grid_rows - 1) * gap) / (grid_columns * size + (grid_columns - 1) * gap)
    extra = 1 if filters is not None else 0
    filter_w = 1.0 * extra
    map_w = 2 * block_w + filter_w + 0.15 * (1 + extra)  # the blocks and the gaps between them
    title_h, map_gap, top, bottom, side = 0.4, 0.45, 0.85, 0.15, 0.2
    per_row = _maps_per_row(maps_per_page, shown_maps, map_w, map_gap, block_h, title_h, top + bottom, side)
    for page in range(n_pages):
        maps = list(range(page * maps_per_page, min(shown_maps, (page + 1) * maps_per_page)))
        rows = math.ceil(len(maps) / per_row)
        width = per_row * map_w + (per_row - 1) * map_gap + 2 * side
        height = rows * block_h + (rows - 1) * title_h + top + bottom
        figure = new_figure(width, height, max_side=MAX_SIDE_INCHES)
        scale = figure.get_figwidth() / width  # 1 unless the page was capped
        # a capped page shrinks every gap with it: below 0.6 the fonts shrink too (not under 4 pt),
        # or the titles of neighbouring maps and the suptitle run into each other
        shrink = min(1.0, scale / 0.6)
        figure.subplots_adjust(left=side / width, right=1 - side / width, top=1 - top / height, bottom=bottom / height)
        outer = figure.add_gridspec(rows, per_row, wspace=map_gap / map_w, hspace=title_h / block_h)
        ratios = [filter_w] * extra + [block_w, block_w]
        for slot, m in enumerate(maps):
            r, c = divmod(slot, per_row)
            inner = outer[r, c].subgridspec(1, 2 + extra, width_ratios=ratios, wspace=0.15 / (map_w / (2 + extra)))
            _draw_map(
                figure, inner, channels[m], values[m], arrays, m, filters, (grid_rows, grid_columns), n_images, shrink
            )
        notes = [f"page {page + 1} of {n_pages}"] if n_pages > 1 else []
        if shown_maps < len(channels):
            notes.append(f"{len(channels) - shown_maps} more maps not drawn (the arrays hold all {len(channels)})")
        figure.suptitle(
            f"Top-{values.shape[1]} activations of layer {layer} over {n_images} images: "
            "deconvnet projections beside their image patches" + (f"\n{'; '.join(notes)}" if notes else ""),
            fontsize=10 if scale > 0.6 else max(5.0, 8 * shrink),
            y=1 - 0.1 / height,
            va="top",
        )
        figures[f"top9_page{page + 1:02d}"] = figure
    return figures
