"""The ``top9`` analysis: the strongest activations of feature maps across a dataset (paper Fig. 2).

Scan pass: one pass over ``--data`` keeps, per feature map, the k strongest activations with at
most one per image (the image's strongest location in that map), as a running top-k: memory is
O(maps x k) whatever the dataset size. It checkpoints every ``--checkpoint-every`` batches into
``--out``; ``--resume`` continues from there. Under ``torchrun`` each process scans a shard and
the per-process top-k are merged (ties go to the smaller image index, so the result is the
single-process one). Unreadable files in ``--data`` are skipped (never a winner; their count goes
to result.json, also across a resume and across processes) or, with ``--strict``, stop the scan.

Projection pass: only the winning images are run again, each once for all the maps that chose
it; each winning activation is projected with the deconvnet using that image's own switches,
and the image patch under its receptive field is cut out.

Report: a unit browser of every map's card (:mod:`.view`, its script and style sheet beside it).

The package, one job per module: :mod:`.scan` (the running top-k scan, its checkpoints, the
merge across processes), :mod:`.figures` (the PNG pages), :mod:`.analysis` (the run),
:mod:`.view` (the report's unit browser); the analysis and its options are registered here.
"""

from __future__ import annotations

import vizkit

from .analysis import run
from .view import report_view


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="top9",
            description="Top-k activating patches of feature maps across a dataset, with their deconvnet projections (Fig. 2)",
            run=run,
            inputs="data",
            options=[
                vizkit.Option("layer", str, required=True, help="layer whose feature maps to rank"),
                vizkit.Option(
                    "channels",
                    str,
                    "all",
                    help="feature maps: all, a range 0-63, or a list 3,7,9",
                    parse=vizkit.toolkit.parse_channel_spec,
                ),
                vizkit.Option(
                    "k", int, 9, help="activations kept per map (one per image at most)", minimum=1, maximum=10_000
                ),
                vizkit.Option(
                    "patch_size", int, 64, help="side of the stored projection and patch crops", minimum=8, maximum=1024
                ),
                vizkit.Option("maps_per_page", int, 8, help="feature maps per PNG page", minimum=1),
                vizkit.Option("pages", int, 8, help="PNG pages to draw at most (the arrays hold every map)", minimum=1),
                vizkit.Option("resume", bool, False, help="continue an interrupted scan from its checkpoint in --out"),
                vizkit.Option(
                    "checkpoint_every", int, 20, help="batches between scan checkpoints (0: by time only)", minimum=0
                ),
                vizkit.Option(
                    "checkpoint_seconds",
                    float,
                    60.0,
                    help="also write the scan checkpoint when this many seconds have passed since the last one "
                    "(SIGINT/SIGTERM also write it)",
                    minimum=0,
                ),
                vizkit.Option("workers", int, 2, help="data-loading worker processes", minimum=0, maximum=128),
                vizkit.Option(
                    "rule",
                    str,
                    "deconvnet",
                    registry="rules",
                    help="projection rule (the paper's deconvnet by default)",
                ),
            ],
            # conv3: its 75 px receptive field is a part of the 144 px input (conv5's is all of it)
            demo={"layer": "conv3", "channels": "0-15", "pages": 2, "workers": 0},
            demo_quick={"channels": "0-7", "pages": 1},
            view=report_view(),  # the report's unit browser (view.py)
        )
    )
