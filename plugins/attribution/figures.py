"""The analysis's figures: every map drawn as captum's ``visualize_image_attr`` draws it,
beside each image; per image the rank-correlation matrix and the deletion curves; and, when
``--metrics`` asks for them, per image the insertion and ROAD curves."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

import vizkit
from vizkit.toolkit.figures import LABEL_COLOURS, new_figure, shorten, silent_panel

from .methods import DECONVNET, make_method
from .metrics import Comparison, best_column, ranks_pixels

if TYPE_CHECKING:  # only annotations: matplotlib loads when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIGNS = ("absolute_value", "all", "positive", "negative")
OVERLAYS = ("blended_heat_map", "heat_map", "masked_image", "alpha_scaling")


def draw_map(ax: Axes, map_2d: np.ndarray, image: np.ndarray, sign: str, outlier_perc: float, overlay: str) -> None:
    """One map as captum's ``visualize_image_attr`` draws it (sign, percentile clipping, overlay)."""
    from captum.attr import visualization

    selected = {
        "all": map_2d,
        "positive": np.maximum(map_2d, 0),
        "negative": np.minimum(map_2d, 0),
        "absolute_value": np.abs(map_2d),
    }[sign]
    # captum cannot scale an empty map, and draws a uniform one fully saturated: say what it is instead
    if not np.any(selected) or selected.max() == selected.min():
        if not np.any(map_2d):
            text = "all zero"
        elif not np.any(selected):
            text = f"no {sign} values"
        else:
            text = f"constant\n({float(selected.flat[0]):.3g} everywhere)"
        ax.imshow(image.mean(axis=2), cmap="gray", vmin=0, vmax=1, alpha=0.5)
        ax.text(
            0.5,
            0.5,
            text,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=10,
            color="darkred",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
        ax.set_xticks([]), ax.set_yticks([])
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "normalize by value approximately 0": tiny gradients are fine
        visualization.visualize_image_attr(
            map_2d[..., None],
            image,
            method=overlay,
            sign=sign,
            outlier_perc=outlier_perc,
            plt_fig_axis=(ax.figure, ax),
            use_pyplot=False,
        )


def maps_figure(
    ctx: vizkit.RunContext,
    x: Tensor,
    columns: list[str],
    maps: np.ndarray,
    targets: Tensor,
    probability: list[float],
    seconds: dict[str, float],
    layer: str,
    units: list[dict[str, Any]],
    shown: dict[str, Any],
    score: str,
) -> Figure:
    """Each image (a row) beside its maps (a column per method, the deconvnet's last).

    Args:
        ctx: the run's context (image names, labels, the preprocessing to undo).
        x: the images, [N, 3, H, W], preprocessed.
        columns: the maps' names, the methods' then ``deconvnet``.
        maps: [K, N, H, W], one per column and image.
        targets: each image's target class, [N].
        probability: each image's probability of its target.
        seconds: what each column took, shown in its title.
        layer: the deconvnet column's layer.
        units: the deconvnet column's unit of each image (its ``channel``).
        shown: :func:`draw_map`'s ``sign``, ``outlier_perc`` and ``overlay``.
        score: what the methods explain (logit or probability), for the title.
    """
    names = ctx.image_names()
    n, k = x.shape[0], len(columns)
    figure = new_figure(2.4 * (k + 1), 2.75 * n + 0.5)
    grid = figure.add_gridspec(n, k + 1, wspace=0.05, hspace=0.3)
    for i in range(n):
        image = vizkit.toolkit.figures.hwc(ctx.preprocess.denormalize(x[i].cpu()))
        ax = figure.add_subplot(grid[i, 0])
        vizkit.toolkit.figures.show(
            ax,
            image,
            f"{shorten(names[i], 30)}\ntarget {ctx.label(int(targets[i]))} (p={probability[i]:.3g})",
            fontsize=7,
        )
        for j, column in enumerate(columns):
            ax = figure.add_subplot(grid[i, j + 1])
            if column == DECONVNET and units[i].get("activation") == 0.0:  # the unit does not fire
                channel = units[i]["channel"]
                silent_panel(ax, f"silent: map {channel} does not\nfire on this image (max 0),\nnothing to project")
            else:
                draw_map(ax, maps[j, i], image, **shown)
            if i == 0:
                if column == DECONVNET:
                    title = f"vizkit deconvnet ({seconds[DECONVNET]:.2f} s)\n{layer} map {units[i]['channel']}"
                else:
                    title = f"{column}\n{make_method(column).label}\n{seconds[column]:.2f} s"
                ax.set_title(title, fontsize=8)
            elif column == DECONVNET:
                ax.set_title(f"map {units[i]['channel']}", fontsize=7)
    figure.suptitle(
        f"Attributions of the target's {score}, drawn as captum's visualize_image_attr ({shown['overlay']}, sign {shown['sign']}, outlier_perc {shown['outlier_perc']:g}); "
        "last column: vizkit's deconvnet projection of the layer unit contributing most to the target",
        fontsize=8,
    )
    return figure


def comparison_figure(ctx: vizkit.RunContext, columns: list[str], comparison: Comparison, targets: Tensor) -> Figure:
    """A row per image: the maps' rank-correlation matrix and their deletion curves (with the
    random reference), the best map named.

    Args:
        ctx: the run's context (image names, labels).
        columns: the maps' names, the methods' then ``deconvnet``.
        comparison: the maps compared (:func:`.metrics.compare`).
        targets: each image's target class, [N].
    """
    maps, correlation, fractions = comparison.maps, comparison.correlation, comparison.fractions
    curves, auc = comparison.curves, comparison.auc
    names = ctx.image_names()
    n, k = correlation.shape[0], len(columns)
    row_height = 3.4 + 0.15 * k
    figure = new_figure(4.0 + 0.3 * k + 7.5, row_height * n)
    made = figure.subfigures(n, 1, hspace=0.02)
    rows = list(np.ravel(made)) if isinstance(made, np.ndarray) else [made]
    for i, row in enumerate(rows):
        # one heading per image; the panels' own titles stay short, so nothing collides
        best = best_column(columns, auc[:, i], maps[:, i])
        target = ctx.label(int(targets[i]))
        row.suptitle(f"{shorten(names[i], 60)}  —  target {target}", fontsize=9, fontweight="bold", x=0.01, ha="left")
        grid = row.add_gridspec(
            1, 2, width_ratios=[1.0, 1.15], wspace=0.28, left=0.09, right=0.80, bottom=0.2, top=0.86
        )
        ax = row.add_subplot(grid[0, 0])
        shown = ax.imshow(correlation[i], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(k), columns, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(k), columns, fontsize=6)
        for p in range(k):
            for q in range(k):
                value = correlation[i, p, q]
                text = "—" if not np.isfinite(value) else f"{value:.2f}"
                ax.text(
                    q, p, text, ha="center", va="center", fontsize=5, color="white" if abs(value) > 0.6 else "black"
                )
        ax.set_title("Spearman rank correlation of |map|", fontsize=8)
        row.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)

        ax = row.add_subplot(grid[0, 1])
        for j in np.argsort(auc[:, i], kind="stable"):  # the legend lists the best first
            column = [*columns, "random"][j]
            note = ""
            if column != "random" and not ranks_pixels(maps[j, i]):
                note = ", all zero: random order" if not np.any(maps[j, i]) else ", constant: random order"
            label = f"{column} ({auc[j, i]:.3g}{note})"
            ax.plot(fractions, curves[j, i], label=label, linewidth=1.2, **_style(j, column))
        ax.set_xlabel("fraction of pixels removed, most |attributed| first", fontsize=7)
        ax.set_xlim(0, 1)
        _curve_axes(ax, target, "map (AUC)", legend_size=6)
        verdict = f"best: {best}" if best is not None else "no single best: tied or uniform maps"
        ax.set_title(f"deletion curves: lower AUC = the model depends on it ({verdict})", fontsize=8)
    return figure


def _curve_axes(ax: Any, target: str, legend_title: str, legend_size: float) -> None:
    """What every curve panel shares: p(target) from 0 up, a light grid, the legend outside."""
    ax.set_ylabel(f"p({target})", fontsize=7)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=legend_size,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0,
        title=legend_title,
        title_fontsize=6,
    )


def _style(j: int, column: str) -> dict[str, Any]:
    """A column's line style: the colour-blind-safe label palette (no grey: the random
    reference's dashed line is grey), its second round dash-dotted; deconvnet black dotted."""
    if column == "random":
        return {"color": "grey", "linestyle": "--"}
    if column == DECONVNET:
        return {"color": "black", "linestyle": ":"}
    palette = len(LABEL_COLOURS)
    return {"color": LABEL_COLOURS[j % palette], "linestyle": "-" if j < palette else "-."}


def faithfulness_figure(
    ctx: vizkit.RunContext, columns: list[str], comparison: Comparison, targets: Tensor
) -> Figure | None:
    """A row per image with the curves ``--metrics`` added to deletion: the insertion curves
    (with the random reference) and ROAD's, most relevant first and least relevant first (the
    same line, faint and with dots), over the percentages imputed; None when neither was asked
    for."""
    insertion, road = comparison.insertion, comparison.road
    if insertion is None and road is None:
        return None
    names = ctx.image_names()
    panels = [name for name, data in (("insertion", insertion), ("road", road)) if data is not None]
    n = comparison.maps.shape[1]
    figure = new_figure(1.5 + 5.2 * len(panels), 3.4 * n)
    made = figure.subfigures(n, 1, hspace=0.02)
    rows = list(np.ravel(made)) if isinstance(made, np.ndarray) else [made]
    for i, row in enumerate(rows):
        target = ctx.label(int(targets[i]))
        row.suptitle(f"{shorten(names[i], 60)}  —  target {target}", fontsize=9, fontweight="bold", x=0.01, ha="left")
        grid = row.add_gridspec(1, len(panels), wspace=0.75, left=0.08, right=0.84, bottom=0.18, top=0.84)
        for p, panel in enumerate(panels):
            ax = row.add_subplot(grid[0, p])
            if panel == "insertion" and insertion is not None and comparison.insertion_auc is not None:
                for j, column in enumerate([*columns, "random"]):
                    auc = comparison.insertion_auc[j, i]
                    ax.plot(comparison.fractions, insertion[j, i], label=f"{column} ({auc:.3g})", **_style(j, column))
                ax.set_xlabel("fraction of pixels kept, most |attributed| first", fontsize=7)
                ax.set_title("insertion: higher AUC = the map's pixels carry the score", fontsize=8)
                title = "map (AUC)"
            elif road is not None:
                for j, column in enumerate(columns):
                    style = _style(j, column)
                    morf, lerf = road.morf[j, i], road.lerf[j, i]
                    ax.plot(road.percentages, morf, label=f"{column} ({morf.mean():.3g} / {lerf.mean():.3g})", **style)
                    ax.plot(road.percentages, lerf, alpha=0.45, marker="o", markersize=2.5, **style)
                ax.set_xlabel("% of pixels imputed (ROAD)", fontsize=7)
                ax.set_title("ROAD: MoRF (lower better), LeRF (faint, dotted; higher)", fontsize=8)
                title = "map (MoRF / LeRF mean)"
            _curve_axes(ax, target, title, legend_size=5.5)
    return figure
