"""The ``occlusion`` figure of one image: the paper's five panels (a)-(e) in a row, and its map
projected in the other images below."""

from __future__ import annotations

from typing import Any

import numpy as np

import vizkit
from vizkit.toolkit.figures import label_key, new_figure, shorten, show, silent_panel

from .grid import OcclusionGrid, occluded_batch


def _overlay(ax, image: np.ndarray, values: np.ndarray, grid: OcclusionGrid, title: str, **imshow: Any):
    ax.imshow(image, interpolation="bilinear")
    shown = ax.imshow(values, extent=grid.extent(), alpha=0.65, interpolation="nearest", **imshow)
    ax.set_xlim(0, image.shape[1]), ax.set_ylim(image.shape[0], 0)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return shown


def _colorbar(figure: Any, shown: Any, ax: Any) -> None:
    """A small colour bar beside ``ax``, its ticks in plain numbers (an offset such as "+5.4e2"
    above a nearly constant map's bar ran into the panel's title)."""
    bar = figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    bar.ax.tick_params(labelsize=6)
    bar.ax.yaxis.get_major_formatter().set_useOffset(False)


MAX_OTHER_PROJECTIONS = 8  # projections of the strongest map in other images drawn per figure


def _silent_text(channel: int, where: str = "this image") -> str:
    """What a panel of map ``channel`` says when the map does not fire on the image."""
    return f"silent: map {channel} does not\nfire on {where} (max 0),\nnothing to project"


def _other_projections(
    figure: Any, row: Any, names: list[str], index: int, projection: Any, channel: int, what: str, aspect: float
) -> None:
    """Panel (c)'s second row: the map of image ``index`` projected in each other image (a
    silent panel where the map does not fire on that image)."""
    others = len(names) - 1
    shown_others = min(others, MAX_OTHER_PROJECTIONS)
    other_row = row.subgridspec(1, max(shown_others, 5), wspace=0.3)
    for slot, j in enumerate([j for j in range(len(names)) if j != index][:shown_others]):
        ax = figure.add_subplot(other_row[slot])
        title = f"in {shorten(names[j])}"
        if float(projection.values[j, index]) == 0.0:
            silent_panel(
                ax, _silent_text(channel), title=title, fontsize=6, title_fontsize=7, aspect=aspect, title_loc="center"
            )
            continue
        show(ax, vizkit.to_image(projection.images[j, index]), title, fontsize=7)
    more = f" (first {shown_others} of {others})" if others > shown_others else ""
    figure.text(
        0.01,
        row.get_position(figure).y1 + 0.035,
        f"(c) {what} projected from its strongest activation in the other images{more}",
        fontsize=9,
        ha="left",
    )


def _label_panel(ax: Any, ctx: vizkit.RunContext, image: np.ndarray, labels: np.ndarray, grid: OcclusionGrid) -> None:
    """Panel (e): the most probable label at each occluder position in colour-blind-safe colours,
    the commonest first, with a legend entry for every colour (the rarest labels beyond the
    palette share one grey, "other")."""
    key = label_key(labels)
    _overlay(ax, image, key.codes(labels), grid, "(e) most probable label", **key.imshow_args())
    ax.legend(
        handles=key.legend_handles(ctx.label, counted="positions"),
        fontsize=6,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0,
        title="label (positions)",
        title_fontsize=6,
    )


def _figure(ctx, x, index, maps, grid, projection, strongest, targets, layer, fill_value, how):
    from matplotlib.patches import Rectangle

    image = vizkit.toolkit.figures.hwc(ctx.preprocess.denormalize(x[index].cpu()))
    others = x.shape[0] - 1
    # the paper's five panels (a)-(e) in one row; the same map projected in the other images, if
    # any, in a second row below (in one row they shrank every panel as images were added)
    figure = new_figure(17.0, 3.6 + (3.3 if others else 0.0))
    rows = figure.add_gridspec(
        2 if others else 1, 1, height_ratios=[1.0, 0.92] if others else None, hspace=0.38, top=0.86, bottom=0.03
    )
    grid_spec = rows[0].subgridspec(1, 5, wspace=0.3)
    names = ctx.image_names()
    probability = maps["true_class_prob"][index]

    # (a) the image with the occluder at its most damaging position
    ax = figure.add_subplot(grid_spec[0])
    row, col = np.unravel_index(int(probability.argmin()), probability.shape)
    y0, x0 = grid.top_left(row, col)
    occluded = vizkit.toolkit.figures.hwc(
        ctx.preprocess.denormalize(occluded_batch(x[index].cpu(), [(y0, x0)], grid.size, fill_value)[0])
    )
    show(
        ax, occluded, f"(a) {shorten(names[index], 34)}\noccluder {grid.size}px at its most damaging place", fontsize=8
    )
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), grid.size, grid.size, fill=False, edgecolor="yellow", linewidth=1.2))

    # (b) total activity of the strongest feature map (silent: the map does not fire on the image,
    # wherever the occluder is, so the panel would be one flat colour)
    channel = int(strongest[index])
    aspect = image.shape[0] / image.shape[1]  # a silent panel keeps the image panels' shape
    ax = figure.add_subplot(grid_spec[1])
    activity = maps["feature_activity"][index]
    title = f"(b) total activity of {layer}\nmap {channel}"
    if not np.any(activity):
        silent_panel(
            ax,
            _silent_text(channel, "any occluded copy"),
            title=title,
            fontsize=7,
            title_fontsize=8,
            aspect=aspect,
            title_loc="center",
        )
    else:
        shown = _overlay(ax, image, activity, grid, title, cmap="viridis")
        _colorbar(figure, shown, ax)

    # (c) deconvnet projection of that map's strongest activation, and in the other images
    ax = figure.add_subplot(grid_spec[2])
    if float(projection.values[index, index]) == 0.0:
        silent_panel(
            ax,
            _silent_text(channel),
            title=f"(c) map {channel} projected",
            fontsize=7,
            title_fontsize=8,
            aspect=aspect,
            title_loc="center",
        )
    else:
        show(ax, vizkit.to_image(projection.images[index, index]), f"(c) map {channel} projected", fontsize=8)
    if others:
        _other_projections(figure, rows[1], names, index, projection, channel, f"map {channel} of {layer}", aspect)

    # (d) probability of the true class
    ax = figure.add_subplot(grid_spec[3])
    shown = _overlay(
        ax,
        image,
        probability,
        grid,
        f"(d) p({ctx.label(int(targets[index]))})",
        cmap="magma",
        vmin=0.0,
        vmax=max(1e-6, float(probability.max())),
    )
    _colorbar(figure, shown, ax)

    # (e) most probable label
    _label_panel(figure.add_subplot(grid_spec[4]), ctx, image, maps["top_label"][index], grid)
    figure.suptitle(
        f"Occlusion sensitivity: {shorten(names[index], 48)}, target {ctx.label(int(targets[index]))} ({how}, "
        f"{grid.size}px square, stride {grid.stride})",
        fontsize=10,
    )
    return figure
