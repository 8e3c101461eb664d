"""The ``probes`` figures: Table 7 as a plot of accuracy against depth, and as a table."""

from __future__ import annotations

from typing import Any

import numpy as np

from vizkit.toolkit.figures import new_figure


def accuracy_figure(
    layers: list[str], kinds: list[str], accuracy: np.ndarray, dims: dict[str, int], train: int, classes: int
) -> Any:
    """Table 7 as a plot: mean per-class accuracy against layer, error bars = std over folds."""
    figure = new_figure(max(6.0, 1.1 * len(layers) + 2), 4.0)
    ax = figure.add_subplot(1, 1, 1)
    x = np.arange(len(layers))
    for k, kind in enumerate(kinds):
        ax.errorbar(
            x + (k - (len(kinds) - 1) / 2) * 0.08,
            100 * accuracy[:, k].mean(axis=1),
            yerr=100 * accuracy[:, k].std(axis=1),
            marker="o",
            capsize=3,
            linewidth=1.2,
            label=kind,
        )
    ax.set_xticks(x, [f"{layer}\n(d={dims[layer]})" for layer in layers], fontsize=7)
    ax.set_ylabel("mean per-class accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        f"Linear probes on frozen features: {classes} classes, {train} training images per class, "
        f"{accuracy.shape[2]} folds",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def table_figure(layers: list[str], kinds: list[str], accuracy: np.ndarray, dims: dict[str, int]) -> Any:
    cells = [
        [f"{dims[layer]}"]
        + [f"{100 * accuracy[l, k].mean():.1f} ± {100 * accuracy[l, k].std():.1f}" for k in range(len(kinds))]
        for l, layer in enumerate(layers)
    ]
    best = [int(np.argmax(accuracy[:, k].mean(axis=1))) for k in range(len(kinds))]
    colours = [
        ["white"] + ["#fff2b3" if best[k] == l else "white" for k in range(len(kinds))] for l in range(len(layers))
    ]
    figure = new_figure(2.2 + 1.6 * (len(kinds) + 1), 0.8 + 0.32 * len(layers))
    ax = figure.add_subplot(1, 1, 1)
    ax.axis("off")
    drawn = ax.table(
        cellText=cells, cellColours=colours, rowLabels=layers, colLabels=["dim", *kinds], loc="center", cellLoc="center"
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1.0, 1.4)
    ax.set_title(
        "Mean per-class accuracy (%), mean ± std over folds; best layer per classifier highlighted", fontsize=8
    )
    return figure
