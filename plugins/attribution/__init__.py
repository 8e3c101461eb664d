"""The ``attribution`` analysis: captum's attribution methods beside the deconvnet, compared.

Every method in :data:`METHODS` (Saliency, InputXGradient, IntegratedGradients, GuidedBackprop,
Deconvolution, GuidedGradCam, LayerGradCam, Occlusion, and NoiseTunnel around any of them as
``nt-<method>``) runs on the loaded model, its preprocessing, labels and target, and explains the
target's logit (``--score probability``: its softmax probability). Beside them, vizkit's own
deconvnet projection of the layer unit that contributes most to the target (activation times
gradient) is drawn the same way, and every map is compared: pairwise Spearman rank correlation
of the pixels' |attribution|, and a deletion curve (the target's probability as the most
attributed pixels are set to ``--baseline``; a lower area under it means the map found what the
model depends on); ``--metrics`` adds insertion curves and ROAD (:mod:`.faithfulness`).

captum runs on a private copy of the model (the parameters are shared, nothing of the caller's
model is hooked): every nn.ReLU module is replaced, and every ReLU call of a forward (module or
functional: ``F.relu``, ``torch.relu``, ``x.relu_()``) goes to a fresh non-in-place ``nn.ReLU``
of its own, so captum's ReLU hooks (GuidedBackprop, Deconvolution, GuidedGradCam) see each call
once. Without it captum treats functional ReLUs as plain ones (GoogLeNet, Inception) and gives
wrong maps without a word (:class:`vizkit.engine.CanonicalModel`).

The package, one job per module: :mod:`.methods` (the captum methods, ``--method``),
:mod:`.metrics` (rank correlation, the comparison), :mod:`.faithfulness` (deletion, insertion and
ROAD curves, batched, with a plain API), :mod:`.figures` (the two figures),
:mod:`.analysis` (the run), :mod:`.view` (its report view); the analysis and its options are
registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import vizkit

from .analysis import SCORES, run
from .faithfulness import METRICS, parse_metrics, parse_percentages
from .figures import OVERLAYS, SIGNS
from .methods import DESCRIPTIONS, METHODS, NT_PREFIX, NT_TYPES, captum_map, parse_methods
from .view import report_view


def _uses(method: str) -> Callable[[dict[str, Any]], bool]:
    """Whether --method includes ``method`` (alone or inside a NoiseTunnel): its options apply
    only then (result.json's params leave them out otherwise)."""
    return lambda options: any(name.removeprefix(NT_PREFIX) == method for name in options["method"])


def _noise_tunnel(options: dict[str, Any]) -> bool:
    """Whether --method includes a NoiseTunnel (``nt-<method>``): --samples, --nt-type, --stdev apply only then."""
    return any(name.startswith(NT_PREFIX) for name in options["method"])


def _road(options: dict[str, Any]) -> bool:
    """Whether --metrics includes road: --road-percentages and --road-noise apply only then."""
    return "road" in options["metrics"]


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="attribution",
            description="captum's attribution methods side by side with the deconvnet: maps, rank correlation, deletion curves",
            run=run,
            inputs="images",
            options=[
                vizkit.Option(
                    "method",
                    str,
                    "all",
                    help=f"comma-separated: {', '.join(METHODS)}, all (those eight), or nt-<method> for NoiseTunnel around it",
                    parse=parse_methods,
                ),
                vizkit.Option(
                    "target",
                    str,
                    "auto",
                    help="class to explain: auto (the model's top-1), an index or a label name; or one per image, comma-separated",
                ),
                vizkit.Option(
                    "layer",
                    str,
                    None,
                    help="module for layergradcam, guidedgradcam and the deconvnet column (default: the model's own, else its last module with spatial maps)",
                ),
                vizkit.Option(
                    "score",
                    SCORES,
                    "logit",
                    help="what the methods explain: logit or probability (softmax)",
                ),
                vizkit.Option(
                    "steps",
                    int,
                    50,
                    help="integratedgradients: steps along the path (n_steps)",
                    minimum=1,
                    maximum=10_000,
                    applies=_uses("integratedgradients"),
                ),
                vizkit.Option(
                    "baseline",
                    str,
                    "mean",
                    help="colour of removed pixels (integratedgradients, occlusion, deletion): mean (zero after normalisation), zero (black) or R,G,B",
                ),
                vizkit.Option(
                    "window",
                    int,
                    32,
                    help="occlusion: side of the square window, in input pixels",
                    minimum=1,
                    maximum=4096,
                    applies=_uses("occlusion"),
                ),
                vizkit.Option(
                    "stride",
                    int,
                    16,
                    help="occlusion: step between windows, in input pixels",
                    minimum=1,
                    maximum=4096,
                    applies=_uses("occlusion"),
                ),
                vizkit.Option(
                    "samples",
                    int,
                    10,
                    help="nt-<method>: noisy samples per image (nt_samples)",
                    minimum=1,
                    maximum=10_000,
                    applies=_noise_tunnel,
                ),
                vizkit.Option(
                    "nt_type",
                    NT_TYPES,
                    "smoothgrad",
                    help=f"nt-<method>: how samples combine: {', '.join(NT_TYPES)}",
                    applies=_noise_tunnel,
                ),
                vizkit.Option(
                    "stdev",
                    float,
                    0.15,
                    help="nt-<method>: noise std as a fraction of the input's range",
                    minimum=0,
                    exclusive_minimum=True,
                    applies=_noise_tunnel,
                ),
                vizkit.Option(
                    "deletion_steps",
                    int,
                    20,
                    help="deletion curve: steps from 0 to 100% of the pixels removed",
                    minimum=1,
                    maximum=10_000,
                ),
                vizkit.Option(
                    "deletion_patch",
                    int,
                    16,
                    help="deletion curve: pixels go in squares of this side, by mean |attribution| (1: pixel by pixel)",
                    minimum=1,
                ),
                vizkit.Option(
                    "metrics",
                    str,
                    "deletion",
                    help=f"faithfulness metrics, comma-separated: {', '.join(METRICS)} or all; deletion is always computed "
                    "(insertion: most relevant pixels put back first onto the --baseline image; road: Rong et al.'s "
                    "noisy linear imputation, most and least relevant first)",
                    parse=parse_metrics,
                ),
                vizkit.Option(
                    "road_percentages",
                    str,
                    "10,20,30,40,50,60,70,80,90",
                    help="road: percentages of the pixels imputed, comma-separated, between 0 and 100",
                    parse=parse_percentages,
                    applies=_road,
                ),
                vizkit.Option(
                    "road_noise",
                    float,
                    0.01,
                    help="road: standard deviation of the noise added to imputed pixels (in the model's input space)",
                    minimum=0,
                    maximum=10,  # normalised images span a few units: more is noise alone
                    applies=_road,
                ),
                vizkit.Option(
                    "sign",
                    SIGNS,
                    "absolute_value",
                    help=f"figure: which values to show, as captum's visualize_image_attr: {', '.join(SIGNS)}",
                ),
                vizkit.Option(
                    "outlier_perc",
                    float,
                    2.0,
                    help="figure: the largest values, holding this percent of the total, are drawn saturated (captum's outlier_perc)",
                    minimum=0,
                    maximum=100,
                    exclusive_maximum=True,
                ),
                vizkit.Option(
                    "overlay",
                    OVERLAYS,
                    "blended_heat_map",
                    help=f"figure: captum's drawing method: {', '.join(OVERLAYS)}",
                ),
                vizkit.Option(
                    "rule",
                    str,
                    "deconvnet",
                    registry="rules",
                    help="the comparison column's projection rule (the paper's deconvnet by default)",
                ),
            ],
            demo={
                "method": "saliency,integratedgradients,guidedbackprop,layergradcam",
                "steps": 16,
                "deletion_steps": 10,
            },
            demo_quick={"method": "saliency,layergradcam", "deletion_steps": 5},
            view=vizkit.ReportView(report_view),  # beyond the paper: its section follows the paper's
        )
    )


@vizkit.hookimpl
def register_map_methods(register) -> None:
    """captum's eight methods as map methods: ``vizkit run sanity`` checks them like vizkit's own."""
    for name, method in METHODS.items():
        register(vizkit.MapMethod(name, DESCRIPTIONS[name], partial(captum_map, name), needs_layer=method.needs_layer))
