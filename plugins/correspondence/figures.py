"""The ``correspondence`` figures: the occluded images (Fig. 8) and the table of distances
(Table 1)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

import vizkit
from vizkit.toolkit.figures import new_figure

from .landmarks import LandmarkedImage
from .squares import Square


def occlusion_figure(
    ctx: vizkit.RunContext,
    images: Tensor,
    entries: list[LandmarkedImage],
    squares: list[list[Square]],
    parts: list[str],
    mapped: list[dict[str, tuple[float, float]]],
    fill: Tensor,
) -> Any:
    """Fig. 8: one row per image, one column per part and one for the first random draw."""
    from matplotlib.patches import Rectangle

    n, columns = len(entries), len(parts) + 1
    figure = new_figure(1.9 * (columns + 0.2), 1.95 * n + 0.5)
    for i in range(n):
        for c in range(columns):
            ax = figure.add_subplot(n, columns, i * columns + c + 1)
            square = squares[i][c] if c < len(parts) else squares[i][len(parts)]
            present = c >= len(parts) or parts[c] in mapped[i]
            shown = square.apply(images[i], fill) if present else images[i]
            vizkit.toolkit.figures.show(ax, ctx.preprocess.denormalize(shown.cpu()))
            if present:
                ax.add_patch(
                    Rectangle(
                        (square.left - 0.5, square.top - 0.5),
                        square.size,
                        square.size,
                        fill=False,
                        edgecolor="yellow",
                        linewidth=1.2,
                    )
                )
            if i == 0:
                ax.set_title("random (draw 1)" if c == len(parts) else parts[c].replace("_", " "), fontsize=8)
            if c == 0:
                ax.set_ylabel(vizkit.toolkit.figures.shorten(entries[i].path.stem, 22), fontsize=7)
    figure.suptitle("Correspondence: the same part occluded in every image (and a random square)", fontsize=9)
    figure.subplots_adjust(left=0.06, right=0.99, top=0.92, bottom=0.01, wspace=0.04, hspace=0.08)
    return figure


def table_figure(
    table: dict,
    random_table: dict,
    parts: list[str],
    layers: list[str],
    zeros: str,
    size: int,
    draws: int,
    tolerance: float = 0.0,
) -> Any:
    """Table 1: parts (and random) as rows, layers as columns, mean ± std; lowest per column bold."""
    rows = [*parts, "random"]
    cells, colours = [], []
    best = {
        layer: min((table[p][layer]["mean"] for p in parts if table[p][layer]["mean"] is not None), default=None)
        for layer in layers
    }
    for row in rows:
        line, tint = [], []
        for layer in layers:
            stats = random_table[layer] if row == "random" else table[row][layer]
            if stats["mean"] is not None:
                text = f"{stats['mean']:.3f} ± {stats['std']:.3f}"
            else:
                text = "n/a (no change > tolerance)" if tolerance > 0 else "n/a (no unit changed)"
            if row != "random" and stats["p_vs_random"] is not None:
                text += f"\np = {stats['p_vs_random']:.3f}"
            line.append(text)
            bold = row != "random" and best[layer] is not None and stats["mean"] == best[layer]
            tint.append("#fff2b3" if bold else "white")
        cells.append(line)
        colours.append(tint)
    figure = new_figure(1.6 + 2.0 * len(layers), 0.9 + 0.55 * len(rows))
    ax = figure.add_subplot(1, 1, 1)
    ax.axis("off")
    drawn = ax.table(
        cellText=cells,
        cellColours=colours,
        rowLabels=[r.replace("_", " ") for r in rows],
        colLabels=layers,
        loc="center",
        cellLoc="center",
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1.0, 2.2)
    for (r, c), cell in drawn.get_celld().items():
        if r > 0 and c >= 0 and colours[r - 1][c] != "white":
            cell.get_text().set_fontweight("bold")
    ax.set_title(
        f"Sign-change Hamming distance (lower = more consistent), {size}px squares, zeros: {zeros}"
        + (f", tolerance {tolerance:g}" if tolerance > 0 else "")
        + ";\n"
        f"p: rank among {draws} random draws (one-sided, part < random)",
        fontsize=8,
    )
    return figure
