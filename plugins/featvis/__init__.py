"""The ``featvis`` analysis: feature visualization by optimisation (issue 29), the image each unit
wants, and how far to trust it.

For the chosen units of a layer (or classes of the output) it optimises pictures in one batch per
chunk of units: Lucid's decorrelated Fourier basis or pixels, transformation robustness, DVT's
regularisers and total variation, the channel / neuron / logit / direction objectives and Lucid's
diversity term. Each picture is then judged against the unit's natural exemplars (``--data``,
scored with the same objective, or a top9 / atlas result's exemplars with ``--exemplars``): the
activation it reaches over the best natural exemplar's, and the unit's rank among all units of the
layer on it (Borowski et al., ICLR 2021; Geirhos et al., 2023: a synthetic picture alone is not
to be trusted). The figure shows the exemplars beside the pictures.

One job per module: :mod:`.parametrization`, :mod:`.transforms`, :mod:`.objectives`,
:mod:`.optimize` (the core, usable from Python), :mod:`.natural` (the exemplars), :mod:`.analysis`
(the run), :mod:`.figures`, :mod:`.view` (the report's table).
"""

from __future__ import annotations

import vizkit

from . import objectives, transforms
from .analysis import run
from .optimize import optimize

__all__ = ["optimize", "run"]


def _transforms(value: object) -> str:
    text = str(value)
    transforms.build(None if text == "none" else text)  # an unknown name: one line
    return text


def _regularizers(value: object) -> str:
    text = str(value)
    if text != "auto":
        objectives.build(text)
    return text


@vizkit.hookimpl
def register_analyses(register) -> None:
    from .view import report_view

    register(
        vizkit.Analysis(
            name="featvis",
            description="Feature visualization by optimisation: the image each unit wants, beside its natural exemplars, with how far to trust it",
            run=run,
            inputs="none",
            options=[
                vizkit.Option(
                    "layer", str, None, help="the layer whose units are visualised (not for --objective logit)"
                ),
                vizkit.Option(
                    "units",
                    str,
                    None,
                    help="units (or classes): 0,5,17, ranges 0-15, all, or top:N (strongest natural exemplars); default: the first 16",
                ),
                vizkit.Option(
                    "objective",
                    tuple(objectives.OBJECTIVES),
                    "channel",
                    help="channel (the map's mean), neuron (its centre), logit (a class score) or direction (--directions)",
                ),
                vizkit.Option("steps", int, 512, help="optimisation steps (Adam)", minimum=1, maximum=100_000),
                vizkit.Option(
                    "param",
                    ("fourier", "pixel"),
                    "fourier",
                    help="image parametrisation: fourier (Lucid's decorrelated spectrum) or pixel",
                ),
                vizkit.Option("decorrelate", bool, True, help="decorrelate colours (ImageNet's colour statistics)"),
                vizkit.Option(
                    "color_from_data",
                    bool,
                    False,
                    help="estimate the colour decorrelation from --data instead",
                    applies=lambda o: o["decorrelate"],
                ),
                vizkit.Option(
                    "transforms",
                    str,
                    "standard",
                    help="transformation robustness: standard (Lucid's), none, or a list of pad,jitter,scale,rotate",
                    parse=_transforms,
                ),
                vizkit.Option(
                    "regularize",
                    str,
                    "auto",
                    help="regularisers: l2,tv,blur,clip, none, or auto (none for fourier, l2,blur,clip for pixel)",
                    parse=_regularizers,
                ),
                vizkit.Option(
                    "diversity",
                    int,
                    1,
                    help="pictures per unit, pushed apart by a diversity term",
                    minimum=1,
                    maximum=64,
                ),
                vizkit.Option(
                    "diversity_weight",
                    float,
                    1.0,
                    help="the diversity term's weight, in units of the unit's mean activation",
                    minimum=0,
                    maximum=1e6,
                    applies=lambda o: o["diversity"] > 1,
                ),
                vizkit.Option("size", int, 128, help="picture side in pixels", minimum=16, maximum=1024),
                vizkit.Option(
                    "lr", float, 0.05, help="Adam's learning rate", minimum=0, exclusive_minimum=True, maximum=10
                ),
                vizkit.Option(
                    "exemplars",
                    str,
                    None,
                    help="a top9 or atlas result folder whose exemplars are the natural yardstick",
                ),
                vizkit.Option(
                    "shown", int, 4, help="natural exemplars shown beside each picture", minimum=0, maximum=64
                ),
                vizkit.Option(
                    "directions",
                    str,
                    None,
                    help="for --objective direction: a .npy or text file of [U, channels] vectors",
                    applies=lambda o: o["objective"] == "direction",
                ),
                vizkit.Option(
                    "redirect",
                    bool,
                    True,
                    help="let the gradient through ReLUs that block all of it (Lucid's redirected ReLU), so units off at the start can be woken",
                ),
                vizkit.Option("resume", bool, False, help="continue an interrupted run from what it kept in --out"),
                vizkit.Option(
                    "workers", int, 2, help="data-loading worker processes for --data", minimum=0, maximum=128
                ),
            ],
            # the atlas's conv3 exemplars (the demo runs it first) as the natural yardstick
            demo={"layer": "conv3", "units": "0-7", "steps": 128, "size": 96, "exemplars": "{result:atlas}"},
            demo_quick={"units": "0-3", "steps": 32},
            view=report_view(),
        )
    )
