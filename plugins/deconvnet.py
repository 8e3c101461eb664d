"""The ``deconvnet`` analysis: project a layer's strongest feature maps to pixel space (paper Fig. 1).

For each input image, the ``--top`` feature maps of ``--layer`` with the highest maximum
activation (or the maps given with ``--channels``) are projected down with the deconvnet, each
from its strongest activation, using the image's own pooling switches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

import vizkit
from vizkit import projections_beside_patches, support_box


def run(
    ctx: vizkit.RunContext,
    layer: str,
    top: int,
    channels: str | None,
    method: Literal["autograd", "explicit"],
    target: Literal["max", "map"],
    rule: str,
) -> vizkit.Result:
    im = ctx.instrumented
    x = ctx.images()
    projection_rule = ctx.rule(rule)
    with im.configured(layers=[layer]), torch.no_grad():
        logits = im(x)
    activation = im.activation(layer)
    if activation.dim() < 2:
        raise vizkit.UsageError(f"layer '{layer}' has no channels to project (shape {tuple(activation.shape)})")
    strengths = activation.flatten(2).amax(dim=2) if activation.dim() > 2 else activation
    n_channels = strengths.shape[1]
    if channels is None:
        if top < 1:
            raise vizkit.UsageError(f"--top must be at least 1, not {top}")
        chosen = strengths[0].argsort(descending=True, stable=True)[: min(top, n_channels)].tolist()
    else:
        chosen = vizkit.select_channels(channels, n_channels)

    projection = vizkit.project(
        im, x, layer, chosen, target=target, method=method, rule=projection_rule, chunk=ctx.batch_size
    )
    predicted = _top5(logits, ctx) if isinstance(logits, torch.Tensor) and logits.dim() == 2 else None
    single = x.shape[0] == 1
    squeeze: Callable[[torch.Tensor], np.ndarray] = (
        (lambda t: t[0].cpu().numpy()) if single else (lambda t: t.cpu().numpy())
    )
    result = vizkit.Result(
        summary={
            "layer": im.resolve_alias(layer),
            "channels": chosen,
            "activations": squeeze(projection.values).tolist(),
            "predicted": predicted[0] if (single and predicted) else predicted,
            "images": ctx.image_names(),
            "target": target,
            "method": method,
            "rule": rule,
        },
        arrays={
            "projections": squeeze(projection.images).astype(np.float32),
            "positions": squeeze(projection.positions).astype(np.int64),
        },
    )
    for index in range(x.shape[0]):
        name = "deconvnet" if single else f"deconvnet_{index}"
        result.figures[name] = _figure(ctx, x[index], projection, index, layer, predicted, projection_rule)
    return result


def _top5(logits: torch.Tensor, ctx: vizkit.RunContext) -> list[list[dict]]:
    probabilities = logits.softmax(dim=1)
    values, indices = probabilities.topk(min(5, probabilities.shape[1]), dim=1)
    return [
        [{"index": int(i), "label": ctx.label(int(i)), "probability": round(float(p), 5)} for p, i in zip(vs, ids)]
        for vs, ids in zip(values, indices)
    ]


def _figure(ctx, image, projection, index, layer, predicted, projection_rule):
    shown = vizkit.to_image(projection.images[index])
    boxes = [support_box(p) for p in projection.images[index]]
    titles = []
    for j, channel in enumerate(projection.channels):
        row, col = projection.positions[index, j].tolist()
        where = f" @{row},{col}" if row >= 0 else ""
        titles.append(f"map {channel}: {projection.values[index, j].item():.3g}{where}")
    names = ctx.image_names()
    caption = names[index] if index < len(names) else f"image {index}"
    if predicted:
        best = predicted[index][0]
        caption += f"\npredicted: {best['label']} ({best['probability']:.0%})"
    return projections_beside_patches(
        ctx.preprocess.denormalize(image.cpu()),
        caption,
        list(shown),
        boxes,
        titles,
        f"{projection_rule.title} of layer {layer}: each beside the image patch under it",
    )


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
                vizkit.Option("top", int, 9, help="number of strongest feature maps to project"),
                vizkit.Option(
                    "channels",
                    str,
                    None,
                    help="feature maps to project instead, e.g. 3,17,40 or 0-15",
                    parse=vizkit.parse_channel_spec,
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
            ],
            demo={"layer": "conv5", "top": 9},
        )
    )
