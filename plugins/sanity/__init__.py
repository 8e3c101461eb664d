"""The ``sanity`` analysis: can I trust this map? Adebayo et al.'s sanity checks ("Sanity Checks
for Saliency Maps", NeurIPS 2018) and faithfulness metrics, for every map method vizkit has.

A map that explains a model should change when the model's weights are replaced by random ones,
and a map that explains a class should change with the class. For each image and each chosen
map method (``--method``: the projection rules from the class score, captum's attributions,
occlusion, or any plugin's :class:`vizkit.MapMethod`) the run draws the map

- on the trained model;
- on copies of it whose layers are re-drawn from the logits down (``--randomize cascading``:
  the top k steps re-drawn; ``independent``: step k alone), with each layer's own initialiser
  from ``--seed`` (:mod:`.randomize`); the caller's model is never touched;
- for a random other class (the random-logit test);
- on a second model (``--compare-model``, e.g. one trained on shuffled labels:
  ``vizkit train --shuffle-labels``);

and compares each with the trained model's map: Spearman rank correlation of the maps and of
their absolute values, SSIM, and HOG similarity (:mod:`.similarity`). The trained maps' deletion,
insertion and ROAD scores (``--metrics``) say how faithful they are to what the model uses.

One job per module: :mod:`.randomize` (steps and randomized copies), :mod:`.similarity` (the
four metrics), :mod:`.checkpoint` (``--resume``), :mod:`.analysis` (the run), :mod:`.figures`
(Fig. 2 and the curves), :mod:`.view` (the report's "can I trust this map?" tables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import vizkit

from .analysis import run
from .randomize import parse_modes


def _metrics(text: str) -> list[str]:
    if str(text).strip().lower() == "none":
        return []
    from vizkit_plugins.attribution.faithfulness import parse_metrics

    return parse_metrics(text)


def _uses_any(*methods: str) -> Callable[[dict[str, Any]], bool]:
    """Whether --method names one of ``methods`` (or all): their options apply only then."""

    def applies(options: dict[str, Any]) -> bool:
        chosen = {m.strip().lower() for m in str(options["method"]).split(",")}
        return "all" in chosen or bool(chosen & set(methods))

    return applies


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="sanity",
            description="can I trust this map? model and label randomization (Adebayo et al.) and faithfulness, for every map method",
            run=run,
            inputs="images",
            options=[
                vizkit.Option(
                    "method",
                    str,
                    "all",
                    help="map methods, comma-separated, or all (`vizkit list map-methods`): deconvnet, guided, gradient "
                    "(projections of the class score), captum's saliency, integratedgradients, guidedbackprop, ..., occlusion",
                ),
                vizkit.Option(
                    "randomize",
                    str,
                    "cascading",
                    help="model randomization: cascading (from the logits down, one more step each time), independent "
                    "(one step at a time), or both, comma-separated",
                    parse=parse_modes,
                ),
                vizkit.Option(
                    "target",
                    str,
                    "auto",
                    help="class to explain: auto (the model's top-1), an index or a label name; or one per image, comma-separated",
                ),
                vizkit.Option(
                    "layers",
                    str,
                    "auto",
                    help="what each randomization step re-draws: auto (each layer with weights, or each block on deep "
                    "models) or module names, comma-separated (a block re-draws every layer in it)",
                ),
                vizkit.Option(
                    "layer",
                    str,
                    None,
                    help="module the layer methods (layergradcam, guidedgradcam) read (default: the model's last with spatial maps)",
                ),
                vizkit.Option(
                    "steps",
                    int,
                    32,
                    help="integratedgradients: steps along the path",
                    minimum=1,
                    maximum=10_000,
                    applies=_uses_any("integratedgradients"),
                ),
                vizkit.Option(
                    "window",
                    int,
                    32,
                    help="occlusion: side of the square window, in input pixels",
                    minimum=1,
                    maximum=4096,
                    applies=_uses_any("occlusion"),
                ),
                vizkit.Option(
                    "stride",
                    int,
                    16,
                    help="occlusion: step between windows, in input pixels",
                    minimum=1,
                    maximum=4096,
                    applies=_uses_any("occlusion"),
                ),
                vizkit.Option(
                    "baseline",
                    str,
                    "mean",
                    help="colour of removed pixels (integratedgradients, occlusion, deletion, insertion): mean, zero or R,G,B",
                ),
                vizkit.Option(
                    "metrics",
                    str,
                    "deletion,insertion,road",
                    help="faithfulness of the trained model's maps: deletion, insertion, road, all, or none",
                    parse=_metrics,
                ),
                vizkit.Option(
                    "deletion_steps",
                    int,
                    20,
                    help="deletion and insertion curves: steps from 0 to 100% of the pixels",
                    minimum=1,
                    maximum=10_000,
                ),
                vizkit.Option(
                    "deletion_patch",
                    int,
                    8,
                    help="deletion and insertion curves: pixels go in squares of this side, by mean |map|",
                    minimum=1,
                ),
                vizkit.Option(
                    "compare_model",
                    str,
                    None,
                    help="a second model spec (e.g. trained on shuffled labels, `vizkit train --shuffle-labels`) whose maps are compared with the model's",
                ),
                vizkit.Option(
                    "compare_weights",
                    str,
                    None,
                    help="state_dict file for --compare-model (loaded with weights_only=True), e.g. a shuffled-label run's weights.pt",
                ),
                vizkit.Option("resume", bool, False, help="continue an interrupted run from the maps kept in --out"),
            ],
            demo={"method": "deconvnet,guided,gradient,saliency,layergradcam", "metrics": "deletion,insertion"},
            demo_quick={"method": "deconvnet,gradient", "metrics": "deletion"},
            demo_images=1,  # one image, as Adebayo et al.'s Fig. 2
            view=vizkit.ReportView(_view),
        )
    )


def _view(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    from .view import report_view

    return report_view(page)
