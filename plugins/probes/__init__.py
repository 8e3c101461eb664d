"""The ``probes`` analysis: how linearly separable are the classes in each layer's features?
(paper §8, Table 7)

The model is frozen. For an ImageFolder tree (``--data``, e.g. Caltech-101), ``--folds`` random
splits draw, per class, ``--train-per-class`` training images and up to ``--test-per-class`` test
images from the rest (seeded; classes with too few images are reported and dropped; the indices
are saved). Every image that any fold uses goes through the model once: the features of all
``--layers`` are written to an on-disk cache (:func:`vizkit.toolkit.extract_features`), so a second run
with other classifiers, folds or training sizes skips extraction. An unreadable image file is
left out (warned about, counted in result.json) and the folds are drawn again as if it were not
there, so the result is the one for the readable images alone. For each layer, fold and
classifier (``svm``: one-vs-rest squared-hinge linear SVM; ``softmax``: multinomial logistic
regression; both L2, in torch, :mod:`vizkit.toolkit.linear`), the regularisation C is chosen by
cross-validation on the training split only, the probe is refitted on the whole training split and
scored by the mean of per-class accuracies on the test split (the paper's metric); the table
reports mean ± std over folds.

The package, one job per module: :mod:`.folds` (the classes used and the folds drawn),
:mod:`.extraction` (the features of every image a fold uses, cached), :mod:`.fitting` (the probes
fitted and scored, C chosen by cross-validation), :mod:`.analysis` (the run), :mod:`.figures`
(Table 7 as a plot and a table), :mod:`.view` (its report view); the analysis and its options are
registered here.
"""

from __future__ import annotations

from typing import Any

import vizkit

from .analysis import run
from .fitting import CLASSIFIERS
from .folds import DEFAULT_EXCLUDE
from .view import report_view


@vizkit.hookimpl
def register_analyses(register: Any) -> None:
    register(
        vizkit.Analysis(
            name="probes",
            description="Linear probes (SVM, softmax) on each layer's frozen features: accuracy vs depth (Table 7)",
            run=run,
            inputs="data",
            options=[
                vizkit.Option(
                    "layers",
                    str,
                    required=True,
                    help="layers to probe, comma-separated",
                    parse=vizkit.toolkit.parse_layers,
                ),
                vizkit.Option("train_per_class", int, 30, help="training images per class and fold", minimum=2),
                vizkit.Option(
                    "test_per_class",
                    int,
                    50,
                    help="test images per class and fold, at most (from the rest)",
                    minimum=1,
                ),
                vizkit.Option(
                    "folds", int, 5, help="random train/test splits (seeded with --seed)", minimum=1, maximum=1000
                ),
                vizkit.Option(
                    "classifiers",
                    CLASSIFIERS,
                    "svm,softmax",
                    help="svm (one-vs-rest squared hinge) and/or softmax, comma-separated",
                    comma_separated=True,
                ),
                vizkit.Option(
                    "pool", str, "none", help="none, avg (global average) or max:S (adaptive max-pool to SxS)"
                ),
                vizkit.Option(
                    "exclude",
                    str,
                    DEFAULT_EXCLUDE,
                    multiple=True,
                    help="class folders to leave out (the paper drops Caltech's background class)",
                ),
                vizkit.Option(
                    "cache",
                    str,
                    None,
                    help="feature cache root (default: $VIZKIT_CACHE/features or ~/.cache/vizkit/features)",
                    output_folder=True,
                ),
                vizkit.Option("cache_dtype", ("float32", "float16"), "float32", help="how features are stored"),
                vizkit.Option("workers", int, 2, help="data-loading worker processes", minimum=0, maximum=128),
                vizkit.Option(
                    "cv_folds",
                    int,
                    3,
                    help="cross-validation folds on the training split that choose C",
                    minimum=2,
                    # a one-value --grid fixes C: no cross-validation runs
                    applies=lambda options: len({v.strip() for v in str(options["grid"]).split(",") if v.strip()}) > 1,
                ),
                vizkit.Option(
                    "grid",
                    str,
                    ",".join(f"{c:g}" for c in vizkit.toolkit.PROBE_GRID),
                    help="C values cross-validation chooses from, comma-separated",
                ),
                vizkit.Option(
                    "resume",
                    bool,
                    False,
                    help="continue an interrupted feature extraction from the cache (without it, it starts over)",
                ),
            ],
            # the demo's 30 images a class (10 with --quick); one C, no search: a grid's end is often
            # chosen on so few images (ties go to the smaller C), a warning a demo user cannot act on
            demo={
                "layers": "conv2,conv3,conv5,fc7",
                "train_per_class": 20,
                "test_per_class": 10,
                "folds": 3,
                "grid": "0.001",
                "workers": 0,
            },
            demo_quick={
                "layers": "conv3,fc7",
                "train_per_class": 6,
                "test_per_class": 4,
                "folds": 2,
                "classifiers": "svm",
            },
            view=vizkit.ReportView(report_view, paper="Table 7", paper_order=9.5),
        )
    )
