"""The ``atlas`` analysis: every unit of every chosen layer, from one pass over a data set, each on
a linkable page of its own (issue 28).

One scan over ``--data`` records every listed layer at once and keeps, per unit, the exact top-k
images (the top9 analysis's streaming top-k and tie rule), its activity statistics (mean, the
fraction of images where it fires, a histogram of its per-image maxima), its mean per-image
maximum per class and its class selectivity (Morcos et al. 2018); memory is O(units x k), whatever
the data's size, and the scan is resumable (SIGINT/SIGTERM) and sharded by torchrun. Then, on rank
0: the winners' deconvnet projections and patches in batches (:func:`vizkit.toolkit.project_winners`
on :func:`vizkit.engine.project_units`), the connections of each unit to the previous and next
listed layer (weights where one conv or linear layer joins them, else correlation of per-image
maxima), and with ``--ablation N`` each unit's map zeroed on N labelled images: the per-class
accuracy and the loss it leaves.

The package, one job per module: :mod:`.scan` (the accumulators), :mod:`.connections`,
:mod:`.ablation`, :mod:`.analysis` (the run), :mod:`.figures` (the overview figure), :mod:`.view`
(the report's atlas index and per-unit pages).
"""

from __future__ import annotations

import vizkit

from .analysis import run
from .view import report_view


def _even(value: object) -> int:
    number = int(value)  # type: ignore[call-overload]
    if number % 2:
        raise vizkit.UsageError(f"--bins must be even (half the bins hold negative maxima), not {number}")
    return number


def _layers_option(value: object) -> str:
    vizkit.toolkit.parse_layers(str(value))  # at least one name
    return str(value)


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="atlas",
            description="A unit atlas: every unit of the chosen layers, its top-k exemplars, statistics, class selectivity, ablation and connections, one page each",
            run=run,
            inputs="data",
            options=[
                vizkit.Option(
                    "layers",
                    str,
                    required=True,
                    help="layers to describe, comma-separated (e.g. conv1,conv3,conv5)",
                    parse=_layers_option,
                ),
                vizkit.Option(
                    "k", int, 9, help="exemplar images kept per unit (one location per image)", minimum=1, maximum=1000
                ),
                vizkit.Option(
                    "patch_size", int, 48, help="side of the stored projection and patch crops", minimum=8, maximum=512
                ),
                vizkit.Option(
                    "ablation",
                    int,
                    0,
                    help="zero each unit's map on this many labelled images and measure accuracy and loss (0: no ablation)",
                    minimum=0,
                    maximum=1_000_000,
                ),
                vizkit.Option(
                    "ablation_data",
                    str,
                    None,
                    help="held-out ImageFolder tree for --ablation (default: images of --data)",
                ),
                vizkit.Option("ablation_layers", str, None, help="layers to ablate (default: every one of --layers)"),
                vizkit.Option(
                    "connections",
                    int,
                    5,
                    help="connected units listed per unit in each direction",
                    minimum=1,
                    maximum=1000,
                ),
                vizkit.Option(
                    "bins",
                    int,
                    32,
                    help="histogram bins of each unit's per-image maxima (even)",
                    minimum=2,
                    maximum=1024,
                    parse=_even,
                ),
                vizkit.Option("resume", bool, False, help="continue an interrupted run from what it kept in --out"),
                vizkit.Option(
                    "checkpoint_every", int, 20, help="batches between scan checkpoints (0: by time only)", minimum=0
                ),
                vizkit.Option(
                    "checkpoint_seconds",
                    float,
                    60.0,
                    help="also checkpoint the scan when this many seconds have passed",
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
            # conv1, conv3, conv5: edges, parts, objects; no ablation (the demo's data may have no classes)
            demo={"layers": "conv1,conv3,conv5", "workers": 0},
            view=report_view(),
        )
    )
