"""The ``deconvnet`` analysis: project a layer's strongest feature maps to pixel space (paper Fig. 1).

For each input image, the ``--top`` feature maps of ``--layer`` with the highest maximum
activation (or the maps given with ``--channels``) are projected down with the deconvnet, each
from its strongest activation, using the image's own pooling switches.

With several images the maps are chosen on the first one and kept for all (same map, same
tile, comparable across images), so a map that does not fire on a later image is drawn as a
"silent" tile; ``--rank each`` chooses each image's own strongest maps instead. Figures hold
``--maps-per-page`` maps each, at most ``--pages`` of them per image; the arrays hold every map.

``--switches`` chooses how the projections cross probabilistic max-pooling (Lee et al. 2009; see
:func:`vizkit.engine.switch_mode`): argmax (the default), expected or sampled (drawn from
``--seed``) switches; ordinary max-pools always unpool by their argmax switches, and the option on
a model without probabilistic pools is a usage error.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

import vizkit
from vizkit.engine import support_box
from vizkit.toolkit import report
from vizkit.toolkit.figures import projections_beside_patches


def run(
    ctx: vizkit.RunContext,
    layer: str,
    top: int,
    channels: str | None,
    method: Literal["autograd", "explicit"],
    target: Literal["max", "map"],
    rule: str,
    maps_per_page: int = 16,
    pages: int = 4,
    rank: Literal["first", "each"] = "first",
    switches: Literal["argmax", "expected", "sampled"] = "argmax",
) -> vizkit.Result:
    with vizkit.engine.switch_mode(switches, seed=ctx.seed) as mode:
        im = ctx.instrumented
        x = ctx.images()
        projection_rule = ctx.rule(rule)
        with im.configured(layers=[layer]), torch.no_grad():
            logits = im(x)
        forward_uses = mode.uses  # the forward's probabilistic pools; the projections' come after
        activation = im.activation(layer)
        if activation.dim() < 2:
            raise vizkit.UsageError(f"layer '{layer}' has no channels to project (shape {tuple(activation.shape)})")
        strengths = activation.flatten(2).amax(dim=2) if activation.dim() > 2 else activation
        n_channels = strengths.shape[1]
        strongest = strengths.argsort(dim=1, descending=True, stable=True)[:, : min(top, n_channels)].tolist()
        each = channels is None and rank == "each" and x.shape[0] > 1
        shared = vizkit.toolkit.select_channels(channels, n_channels) if channels is not None else strongest[0]
        chosen: list[int] | list[list[int]] = strongest if each else shared

        def project(images: torch.Tensor, maps: list[int]) -> vizkit.Projection:
            return vizkit.project(
                im, images, layer, maps, target=target, method=method, rule=projection_rule, chunk=ctx.batch_size
            )

        # one projection for every image (the same maps), or one per image (its own maps, row 0)
        projections = (
            [project(x[i : i + 1], maps) for i, maps in enumerate(strongest)] if each else [project(x, shared)]
        )
        values = torch.cat([p.values for p in projections])
        images_projected = torch.cat([p.images for p in projections])
        positions = torch.cat([p.positions for p in projections])
    _check_switches(switches, layer, mode.uses, mode.uses - forward_uses)
    crossed = f"{switches} switches at the probabilistic max-pools" if mode.uses > forward_uses else None
    predicted = _top5(logits, ctx) if isinstance(logits, torch.Tensor) and logits.dim() == 2 else None
    single = x.shape[0] == 1
    # float(): numpy has no bfloat16 (a float64 model's maps are stored as float32 anyway)
    squeeze: Callable[[torch.Tensor], np.ndarray] = (
        (lambda t: t[0].float().cpu().numpy()) if single else (lambda t: t.float().cpu().numpy())
    )
    result = vizkit.Result(
        summary={
            "layer": im.resolve_alias(layer),
            "channels": chosen,
            "activations": squeeze(values).tolist(),
            "predicted": predicted[0] if (single and predicted) else predicted,
            "images": ctx.image_names(),
            "target": target,
            "method": method,
            "rule": rule,
            "switches": switches,
        },
        arrays={
            "projections": squeeze(images_projected).astype(np.float32),
            "positions": squeeze(positions).astype(np.int64),
        },
    )
    count = len(projections[0].channels)
    drawn = min(count, maps_per_page * pages)
    if drawn < count:
        print(
            f"deconvnet: drawing the first {drawn} of {count} maps ({pages} page(s) of {maps_per_page}); "
            "the arrays hold all of them (raise --pages or --maps-per-page to draw more)",
            file=sys.stderr,
        )
    for index in range(x.shape[0]):
        base = "deconvnet" if single else f"deconvnet_{index}"
        projection, row = (projections[index], 0) if each else (projections[0], index)
        ranked_on_first = channels is None and not each
        figures = _figures(
            ctx,
            x[index],
            projection,
            row,
            index,
            layer,
            predicted,
            projection_rule,
            maps_per_page,
            drawn,
            ranked_on_first,
            crossed,
        )
        if len(figures) == 1:
            result.figures[base] = figures[0]
        else:
            for page, figure in enumerate(figures):
                result.figures[f"{base}_page{page + 1:02d}"] = figure
    return result


def _check_switches(switches: str, layer: str, uses: int, projected: int) -> None:
    """Switches other than argmax on a model without probabilistic max-pooling are a usage error
    (its max-pools always use argmax switches); from a layer below every probabilistic pool they
    change nothing, and a note says so."""
    if switches == "argmax":
        return
    if uses == 0:
        raise vizkit.UsageError(
            f"--switches {switches} applies to probabilistic max-pooling; this model has none "
            "(its max-pools always use argmax switches)"
        )
    if projected == 0:
        print(
            f"deconvnet: --switches {switches} changes nothing from layer '{layer}': "
            "no probabilistic max-pool lies below it",
            file=sys.stderr,
        )


def _top5(logits: torch.Tensor, ctx: vizkit.RunContext) -> list[list[dict]]:
    probabilities = logits.float().softmax(dim=1)  # a half-precision model's too
    values, indices = probabilities.topk(min(5, probabilities.shape[1]), dim=1)
    return [
        [{"index": int(i), "label": ctx.label(int(i)), "probability": round(float(p), 5)} for p, i in zip(vs, ids)]
        for vs, ids in zip(values, indices)
    ]


def _figures(
    ctx: vizkit.RunContext,
    image: torch.Tensor,
    projection: vizkit.Projection,
    row: int,
    index: int,
    layer: str,
    predicted: list[list[dict]] | None,
    projection_rule: vizkit.ProjectionRule,
    maps_per_page: int,
    drawn: int,
    ranked: bool,
    crossed: str | None = None,
) -> list:
    """Image ``index``'s pages (its projections are row ``row`` of ``projection``): its first
    ``drawn`` maps, ``maps_per_page`` to a page.

    A map that does not fire on this image (strongest activation 0, as after a ReLU: it can
    happen on every image but the one the maps were chosen on) has nothing to project; it is
    drawn as a "silent" tile, not as an empty projection beside an arbitrary patch at 0,0.
    """
    shown = vizkit.to_image(projection.images[row], channels_last=False)  # [k,3,H,W], sliced below
    total = len(projection.channels)
    values = projection.values[row].tolist()
    silent = [value == 0.0 for value in values]
    boxes, titles = [], []
    for j, channel in enumerate(projection.channels):
        if silent[j]:
            boxes.append((0, 0, 1, 1))  # unused: a silent tile has no box
            titles.append(f"map {channel}: silent")
            continue
        boxes.append(support_box(projection.images[row, j]))
        y, x = projection.positions[row, j].tolist()
        where = f" @{y},{x}" if y >= 0 else ""
        titles.append(f"map {channel}: {values[j]:.3g}{where}")
    names = ctx.image_names()
    caption = vizkit.toolkit.figures.shorten(names[index], 40) if index < len(names) else f"image {index}"
    if predicted:
        best = predicted[index][0]
        caption += f"\npredicted: {best['label']} ({best['probability']:.0%})"
    notes = [crossed] if crossed else []
    if ranked and index > 0:
        first = names[0] if names else "image 0"
        notes.append(f"maps ranked on the first image ({first}), the same maps for every image")
    if sum(silent[:drawn]):
        notes.append(f"{sum(silent[:drawn])} of the {drawn} maps drawn are silent on this image")
    n_pages = math.ceil(drawn / maps_per_page)
    pages = []
    for page in range(n_pages):
        lo, hi = page * maps_per_page, min(drawn, (page + 1) * maps_per_page)
        parts = list(notes)
        if n_pages > 1:
            parts.insert(0, f"page {page + 1} of {n_pages}: maps {lo + 1}-{hi} of {total}")
        if drawn < total:
            parts.append(f"{total - drawn} more maps not drawn (the arrays hold all {total}; see --pages)")
        pages.append(
            projections_beside_patches(
                ctx.preprocess.denormalize(image.cpu()),
                caption,
                list(shown[lo:hi]),
                boxes[lo:hi],
                titles[lo:hi],
                f"{projection_rule.title} of layer {layer}: each beside the image patch under it",
                silent=silent[lo:hi],
                note="; ".join(parts) or None,
                first_number=lo + 1,
            )
        )
    return pages


def report_view(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """The report's per-image rows: the predictions and the projected maps' activations (and,
    when each image ranked its own maps, which maps)."""
    channels = page.document.get("channels")
    own_maps = isinstance(channels, list) and bool(channels) and all(isinstance(c, list) for c in channels)
    keys = ["predicted", "channels", "activations"] if own_maps else ["predicted", "activations"]
    html, shown = report.per_image_table(page.document, keys)
    if "activations" in shown and isinstance(channels, list) and not own_maps:
        html = html.replace(
            "<th>activations</th>",
            f"<th>activations of maps {report.esc(', '.join(str(c) for c in channels))}</th>",
        )
    return html, shown


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="deconvnet",
            description="Project a layer's strongest feature maps to pixel space with the deconvnet (Fig. 1)",
            run=run,
            inputs="images",
            options=[
                vizkit.Option("layer", str, required=True, help="layer to project from (see `vizkit layers MODEL`)"),
                vizkit.Option(
                    "top",
                    int,
                    9,
                    help="number of strongest feature maps to project (unless --channels names them)",
                    minimum=1,
                    applies=lambda options: options["channels"] is None,
                ),
                vizkit.Option(
                    "maps_per_page",
                    int,
                    16,
                    help="feature maps per PNG page (a near-square grid; 16 stays readable)",
                    minimum=1,
                ),
                vizkit.Option(
                    "pages", int, 4, help="PNG pages to draw at most per image (the arrays hold every map)", minimum=1
                ),
                vizkit.Option(
                    "channels",
                    str,
                    None,
                    help="feature maps to project instead, e.g. 3,17,40 or 0-15",
                    parse=vizkit.toolkit.parse_channel_spec,
                ),
                vizkit.Option(
                    "method",
                    ("autograd", "explicit"),
                    "autograd",
                    help="projection path: autograd (any graph) or explicit (switch-based reverse pass)",
                ),
                vizkit.Option(
                    "target",
                    ("max", "map"),
                    "max",
                    help="project each map's strongest activation (max) or the whole map",
                ),
                vizkit.Option(
                    "rule",
                    str,
                    "deconvnet",
                    registry="rules",
                    help="what a ReLU does going down: the paper's deconvnet, guided backprop, or the plain gradient (for comparison)",
                ),
                vizkit.Option(
                    "rank",
                    ("first", "each"),
                    "first",
                    help="with several images, rank the maps on the first image (the same maps for all, comparable) "
                    "or on each image (its own strongest maps, none silent)",
                    applies=lambda options: options["channels"] is None,
                ),
                vizkit.Option(
                    "switches",
                    ("argmax", "expected", "sampled"),
                    "argmax",
                    help="how a projection crosses probabilistic max-pooling (Lee et al. 2009): all of a pooled "
                    "signal to the most probable unit (argmax), spread by P(unit on | pool on) (expected), or to "
                    "one unit drawn from it (sampled, by --seed); ordinary max-pools always use argmax switches",
                ),
            ],
            demo={"layer": "conv2", "top": 9, "rank": "each"},  # 43 px receptive fields: parts of the image
            demo_quick={"top": 4},
            view=vizkit.ReportView(report_view, paper="Fig. 1", paper_order=1),
        )
    )


def _class_projection(rule: str, request: vizkit.MapRequest) -> torch.Tensor:
    """The rule's projection of each image's target class score down to its pixels, channels
    summed (:func:`vizkit.engine.project_class`)."""
    from vizkit.engine import project_class

    with vizkit.instrument(request.model, layers=None, switches=False) as im:
        images = project_class(im, request.x, request.targets, rule=rule, chunk=request.batch_size)
    return images.float().sum(dim=1)


@vizkit.hookimpl
def register_map_methods(register) -> None:
    """The projection rules (deconvnet, guided, gradient) from the class score as map methods, so
    that ``vizkit run sanity`` checks the paper's deconvnet beside captum's methods."""
    from functools import partial

    from vizkit.engine import DeconvnetRule, GradientRule, GuidedRule

    for rule in (DeconvnetRule, GuidedRule, GradientRule):
        register(
            vizkit.MapMethod(
                rule.name,
                f"{rule.description}; projected from the class score",
                partial(_class_projection, rule.name),
            )
        )
