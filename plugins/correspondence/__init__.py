"""The ``correspondence`` analysis: does occluding the same part change the features the same way?
(paper §7, Table 1, Fig. 8)

For a set of images of one kind of object with named parts marked (``--landmarks``, e.g. the eyes
and nose of frontal dog faces), each part is covered in every image by a square of ``--size``
input pixels filled with ``--fill``, and, as a baseline, ``--random`` squares of the same size are
placed at random points on the object. For layer l and image i, ``eps_i = x_i - x~_i`` is the
change of the flattened layer output; for every pair of images the score is the Hamming distance
between ``sign(eps_i)`` and ``sign(eps_j)`` divided by the vector length, reported as mean ± std
over the pairs. Lower = the occlusion changes the features of different images the same way.

Choices the paper leaves open, made here:

* **Exact zeros** (``--zeros``). ``sign`` (default, the paper's formula read literally): sign is
  -1, 0 or +1 and all positions count, so a unit that does not change in either image counts as
  agreement. ``changed``: only positions that change in at least one of the two images count
  (the distance is normalised by their number), so units far from both occluders or dead in both
  do not dilute the score.
* **Float noise.** Every occluded copy goes through the model in a batch whose first row is its
  own unoccluded image, so unchanged units give exactly equal outputs; ``--tolerance`` (a
  fraction of the layer's largest unoccluded |activation|) treats smaller changes as zero.
* **Pairs** are the unordered pairs i < j of images that both have the part; std is over those
  pairs (population std). **Random**: draw k places one square in every image; a draw's score is
  the mean over its pairs; ``mean`` and ``std`` are over all pairs of all draws, ``draw_std`` the
  std of the draws' means.
* **Significance** (the paper gives none): ``p_vs_random`` is a one-sided Monte-Carlo rank test of
  "the part scores below a random square": the fraction of the ``--random`` draws (plus the part
  itself) whose mean is at most the part's, (1 + #{draws <= part}) / (1 + draws). It is exact
  when a part's occlusion is exchangeable with a random one under the null; its resolution is
  1 / (1 + draws), so use more draws for smaller p-values.
* **Random squares** are centred uniformly inside the object: its ``box`` when the landmarks give
  one, else the box around the image's parts grown by ``--size`` on every side; either is mapped
  to input pixels and clipped to the crop.

The package, one job per module: :mod:`.landmarks` (the landmarks file), :mod:`.squares` (the
occluding squares: the parts' and the random ones), :mod:`.statistics` (the sign distances, their
pairs, the p-values), :mod:`.analysis` (the feature changes and the run), :mod:`.figures` (Fig. 8
and Table 1), :mod:`.view` (its report view); the analysis and its options are registered here.
"""

from __future__ import annotations

from typing import Any

import vizkit

from .analysis import run
from .statistics import sign_distances  # the score alone, usable on any features (README)
from .view import report_view

__all__ = ["register_analyses", "sign_distances"]


@vizkit.hookimpl
def register_analyses(register: Any) -> None:
    register(
        vizkit.Analysis(
            name="correspondence",
            description="Correspondence: does occluding the same part change the features of different images the same way? (Table 1, Fig. 8)",
            run=run,
            inputs="none",
            options=[
                vizkit.Option(
                    "landmarks",
                    str,
                    required=True,
                    help="JSON of images with named parts, e.g. shared/data/dog_landmarks.json",
                ),
                vizkit.Option(
                    "layers",
                    str,
                    required=True,
                    help="layers to compare, comma-separated (e.g. conv5,fc7)",
                    parse=vizkit.toolkit.parse_layers,
                ),
                vizkit.Option(
                    "size", int, 40, help="side of each occluding square, in input pixels", minimum=1, maximum=4096
                ),
                vizkit.Option(
                    "random",
                    int,
                    20,
                    help="random squares per image (the baseline; also the p-values' draws)",
                    minimum=1,
                    maximum=10_000,
                ),
                vizkit.Option(
                    "fill", str, "mean", help="occluder colour: mean (dataset mean), zero (black), or R,G,B in 0-255"
                ),
                vizkit.Option(
                    "zeros",
                    ("sign", "changed"),
                    "sign",
                    help="sign: every unit counts, 0 is its own sign; changed: only units that change in either image",
                ),
                vizkit.Option(
                    "tolerance",
                    float,
                    0.0,
                    help="changes below this fraction of the layer's largest activation count as zero",
                    minimum=0,
                    maximum=1,
                ),
            ],
            demo={"landmarks": "{landmarks}", "layers": "conv5,fc7", "random": 10},  # a resource vizkit demo finds
            demo_quick={"random": 4},
            view=vizkit.ReportView(
                report_view, paper="Fig. 8, Table 1", paper_order=8, key_figure="correspondence_table"
            ),
        )
    )
