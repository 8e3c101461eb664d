"""The ``invariance`` analysis: how features and the prediction change under translation, scale
and rotation (paper §5, Fig. 5).

Each image is resized as the model's preprocessing says (shorter side to ``resize``), and then,
before the centre crop and the normalisation, transformed with torchvision
(``torchvision.transforms.v2.functional``, bilinear): ``translate`` moves it vertically by t input
pixels (positive = down), ``scale`` zooms by s about the centre, ``rotate`` turns it by a degrees
counter-clockwise about the centre. The centre crop follows, so translation and rotation first
bring in the image's own margin; what no image covers is filled with the dataset mean colour
(zero after normalisation, as the occluders of ``occlusion`` are). Every transform's steps are
``--steps`` values spread evenly over its range, plus the identity if the grid misses it; the
identity is the untransformed image itself, so its distance is exactly 0.

For every image, transform and step: the Euclidean distance between the flattened output of each
``--layers`` entry for the transformed and the original image (``--normalize norm``: divided by
the original's norm, so layers share an axis), the softmax probability of the target class and the
top-1 label. Each batch holds the original as its first row, so distances are not blurred by the
float differences between batches of different sizes.

The package, one job per module: :mod:`.transforms` (the transformations and their steps),
:mod:`.measure` (the distances and logits of every image at every step), :mod:`.summary` (how
soon and how linearly features move, how long the prediction holds), :mod:`.analysis` (the run),
:mod:`.figures` (Fig. 5 and the top-1 bands); the analysis, its options and its report view
(per-image rows) are registered here.
"""

from __future__ import annotations

from typing import Any

import vizkit
from vizkit.toolkit import report

from .analysis import run
from .transforms import TRANSFORMS


def _measures(transform: str) -> Any:
    """Whether --transforms includes ``transform``: its --range-* applies only then (result.json's
    params leave it out otherwise)."""
    return lambda options: transform in options["transforms"]


@vizkit.hookimpl
def register_analyses(register: Any) -> None:
    register(
        vizkit.Analysis(
            name="invariance",
            description="Invariance curves: feature distance and true-class probability under translation, scale and rotation (Fig. 5)",
            run=run,
            inputs="images",
            options=[
                vizkit.Option(
                    "target",
                    str,
                    multiple=True,
                    help="true class: auto (the model's top-1), an index or a name; once for all images or once per image",
                ),
                vizkit.Option(
                    "layers",
                    str,
                    required=True,
                    help="layers to measure, comma-separated (the paper: layer 1 and layer 7)",
                    parse=vizkit.toolkit.parse_layers,
                ),
                vizkit.Option(
                    "transforms",
                    TRANSFORMS,
                    "translate,scale,rotate",
                    help="any of translate, scale, rotate, comma-separated",
                    comma_separated=True,
                ),
                vizkit.Option(
                    "steps",
                    int,
                    25,
                    help="steps per transformation (the identity is added when the grid misses it)",
                    minimum=2,
                    maximum=1000,
                ),
                vizkit.Option(
                    "range_translate",
                    str,
                    "-60,60",
                    help="vertical translation LOW,HIGH in input pixels (positive = down)",
                    applies=_measures("translate"),
                ),
                vizkit.Option(
                    "range_scale",
                    str,
                    "1.0,1.8",
                    help="scale LOW,HIGH about the centre",
                    applies=_measures("scale"),
                ),
                vizkit.Option(
                    "range_rotate",
                    str,
                    "0,360",
                    help="rotation LOW,HIGH in degrees, counter-clockwise",
                    applies=_measures("rotate"),
                ),
                vizkit.Option(
                    "normalize",
                    ("none", "norm"),
                    "none",
                    help="norm: divide each distance by the norm of the original's features",
                ),
            ],
            demo={"layers": "conv1,fc7", "steps": 13},
            demo_quick={"steps": 5},
            view=report.per_image_view(  # the report's rows
                ["target_name", "target", "original_probability"], paper="Fig. 5", paper_order=5
            ),
        )
    )
