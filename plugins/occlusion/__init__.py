"""The ``occlusion`` analysis: occlusion sensitivity maps (paper Fig. 7).

A square of ``--size`` pixels filled with ``--fill`` (default: the dataset mean, zero after
normalisation) slides over each preprocessed image with ``--stride``, kept inside the image
(the positions captum's ``Occlusion`` uses). For every position it records the total activation
of one feature map of ``--layer`` (the map with the strongest response in the unoccluded
image), the softmax probability of the target class and the most probable label.

``--mode batched`` runs many occluded copies per forward pass. ``--mode exact`` (default)
recomputes, for each position, only the window of each layer that the occluder can change and
patches it into the unoccluded image's cached activations (incremental inference, as in Krypton,
Nakandala et al. 2019); results equal the batched ones to float rounding. Graphs or ops whose
changed window cannot be bounded fall back to batched computation from that op on.

The package, one job per module: :mod:`.grid` (the occluder positions and the occluded copies),
:mod:`.maps` (the maps over the grid: batched, exact or fast, with adaptive drill-down),
:mod:`.analysis` (the run, the fast mode's fidelity check, the cost line), :mod:`.figures` (the
five panels per image); the analysis, its options and its report view (per-image rows) are
registered here.
"""

from __future__ import annotations

import vizkit
from vizkit.toolkit.report import per_image_view

from .analysis import run
from .maps import FAST_DRILL_DOWN, FAST_TAU, MODES


def _fast_mode(options: dict) -> bool:
    """--tau, --drill-down and --check apply in fast mode only (result.json's params leave them out otherwise)."""
    return options["mode"] == "fast"


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="occlusion",
            description="Occlusion sensitivity: feature activity, true-class probability and top label per occluder position (Fig. 7)",
            run=run,
            inputs="images",
            options=[
                vizkit.Option(
                    "target", str, "auto", help="true class: auto (the model's top-1), an index, or a label name"
                ),
                vizkit.Option(
                    "layer",
                    str,
                    None,
                    help="layer whose strongest map's activity is tracked (default: the last conv layer)",
                ),
                vizkit.Option(
                    "size", int, 48, help="side of the grey square, in input pixels", minimum=1, maximum=4096
                ),
                vizkit.Option(
                    "stride", int, 8, help="step between occluder positions, in input pixels", minimum=1, maximum=4096
                ),
                vizkit.Option(
                    "fill", str, "mean", help="occluder colour: mean (dataset mean), zero (black), or R,G,B in 0-255"
                ),
                vizkit.Option(
                    "mode",
                    MODES,
                    "exact",
                    help="exact: incremental recomputation of changed windows; fast: approximate incremental "
                    "(--tau, --drill-down); batched: full forward per position",
                ),
                vizkit.Option(
                    "tau",
                    float,
                    FAST_TAU,
                    help="fast mode: cap each layer's changed window at this fraction of the layer's size (1: off)",
                    minimum=0,
                    maximum=1,
                    exclusive_minimum=True,
                    applies=_fast_mode,
                ),
                vizkit.Option(
                    "drill_down",
                    float,
                    FAST_DRILL_DOWN,
                    help="fast mode: a coarse pass (positions up to 16 px apart), then, halving the spacing level "
                    "by level, only this fraction of each level's positions where the change from the unoccluded image "
                    "bends most (1: off)",
                    minimum=0,
                    maximum=1,
                    applies=_fast_mode,
                ),
                vizkit.Option(
                    "check",
                    int,
                    32,
                    help="fast mode: positions recomputed exactly to report the approximation's error, relative "
                    "to the map's range, in result.json (0: none; the grid size or more: all, adding SSIM)",
                    minimum=0,
                    applies=_fast_mode,
                ),
                vizkit.Option("explain", bool, False, help="print the multiply-add cost model and its bound"),
            ],
            demo={"size": 48, "stride": 16},
            view=per_image_view(  # the report's per-image rows
                [
                    "target_name",
                    "target",
                    "unoccluded_probability",
                    "min_probability",
                    "strongest_map",
                    "positions_evaluated",
                ],
                paper="Fig. 7",
                paper_order=7,
            ),
        )
    )
