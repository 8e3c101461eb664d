"""The ``evolution`` analysis: how features develop during training (paper Fig. 4).

For a training run written by ``vizkit train`` (``--run DIR``: its ``run.json`` and the weight
snapshots ``weights_epochNNN.pt`` kept at the snapshot epochs), and for a chosen subset of
feature maps per layer: at every snapshot, the single strongest activation of each map over a
fixed sample of training images and its deconvnet projection. The figure has a block per layer,
rows = feature maps, columns = epochs, as in the paper (whose lower layers settle within a few
epochs while the upper ones only develop after 40-50).

The maps are picked at random (``--seed``) among those active at the last snapshot, so that no
row is blank by construction. Each snapshot's result is kept in ``--out`` as it is finished, so an
interrupted run continues with ``--resume`` without redoing finished snapshots. Unreadable files
in the sample are skipped (counted in result.json; the sample is that much smaller) or, with
``--strict``, stop the run.

The package, one job per module: :mod:`.analysis` (the run: the training run's snapshots, the
sample, the result), :mod:`.scan` (each snapshot's scan and the projections of the chosen maps),
:mod:`.cache` (finished snapshots kept for ``--resume``), :mod:`.figures` (the two figures); the
analysis and its options are registered here.
"""

from __future__ import annotations

import vizkit

from .analysis import model_of_run, run


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="evolution",
            description="Feature evolution during training: strongest activation per map at each snapshot epoch, projected (Fig. 4)",
            run=run,
            inputs="none",
            model_from=model_of_run,
            options=[
                vizkit.Option(
                    "run",
                    str,
                    required=True,
                    help="training run folder written by `vizkit train` (run.json + weights_epochNNN.pt)",
                ),
                vizkit.Option(
                    "layers", str, multiple=True, help="layers to follow (default: conv1..conv5); repeat the option"
                ),
                vizkit.Option(
                    "maps",
                    int,
                    6,
                    help="feature maps per layer, picked at random among those active at the last snapshot",
                    minimum=1,
                ),
                vizkit.Option(
                    "sample",
                    int,
                    512,
                    help="training images in the fixed sample (default source: the run's train/ folder)",
                    minimum=1,
                ),
                vizkit.Option("epochs", str, "all", help="snapshot epochs to show: all, or e.g. 1,5,20"),
                vizkit.Option("patch_size", int, 48, help="side of each projection tile", minimum=8, maximum=1024),
                vizkit.Option("rule", str, "deconvnet", registry="rules", help="projection rule"),
                vizkit.Option(
                    "resume", bool, False, help="reuse the snapshots an interrupted run finished (kept in --out)"
                ),
                vizkit.Option(
                    "checkpoint_seconds",
                    float,
                    60.0,
                    help="inside a snapshot, keep the scan's progress in --out this often (SIGINT/SIGTERM also keep it)",
                    minimum=0,
                ),
            ],
            demo={"run": "{train_run}", "sample": 32, "maps": 3},  # skipped by vizkit demo without a training run
            demo_quick={"sample": 16, "maps": 2},
            view=vizkit.ReportView(paper="Fig. 4", paper_order=4),  # the report's place: the generic rendering
        )
    )
