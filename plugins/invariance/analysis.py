"""The ``invariance`` run: the transformations, every image measured, the targets, the summary,
the result and its figures."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

import vizkit

from .figures import curves_figure, top1_figure
from .measure import _measure_images
from .summary import _family_summary
from .transforms import make_transforms, parse_range


def _targets(target: tuple[str, ...], n: int, labels: Any, classes: int, logits: Tensor) -> list[int]:
    given = list(target) or ["auto"]
    if len(given) not in (1, n):
        raise vizkit.UsageError(f"give one --target for all images or one per image ({n}), not {len(given)}")
    given = given * n if len(given) == 1 else given
    out = []
    for i, value in enumerate(given):
        fixed = vizkit.data.resolve_target(value, labels, classes)
        out.append(int(logits[i].argmax()) if fixed is None else fixed)
    return out


def run(
    ctx: vizkit.RunContext,
    target: tuple[str, ...],
    layers: list[str],
    transforms: list[str],
    steps: int,
    range_translate: str,
    range_scale: str,
    range_rotate: str,
    normalize: str,
) -> vizkit.Result:
    ranges = {
        "translate": parse_range(range_translate, "--range-translate"),
        "scale": parse_range(range_scale, "--range-scale"),
        "rotate": parse_range(range_rotate, "--range-rotate"),
    }
    families = make_transforms(transforms, steps, ranges)
    if not ctx.image_paths:
        raise vizkit.UsageError("invariance needs image files (--image FILE ...): it transforms them before cropping")
    preprocess = ctx.preprocess
    fill = list(preprocess.mean)  # the dataset mean colour, zero after normalisation
    started = time.perf_counter()
    per_image, first_resized = _measure_images(ctx, families, layers, fill, normalize)
    n = len(per_image)
    originals = torch.stack([first for _, _, first in per_image])
    classes = originals.shape[1]
    vizkit.data.check_labels(ctx.labels, classes)
    targets = _targets(target, n, ctx.labels, classes, originals)
    p0 = originals.softmax(dim=1)[torch.arange(n), torch.tensor(targets)].numpy()

    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    for family in families:
        summary[family.name] = _family_summary(family, per_image, layers, targets, p0, originals, arrays)
    names = [ctx.label(t) for t in targets]
    result = vizkit.Result(
        summary={
            "images": [str(p) for p in ctx.image_paths],
            "target": targets,
            "target_name": names,
            "original_probability": [round(float(p), 6) for p in p0],
            "layers": layers,
            "transforms": {f.name: list(f.steps) for f in families},
            "normalize": normalize,
            "fill": "dataset mean",
            "seconds_measure": round(time.perf_counter() - started, 3),
            "summary": summary,
        },
        arrays=arrays,
    )
    result.figures["invariance"] = curves_figure(
        ctx,
        first_resized,
        families,
        layers,
        arrays,
        names,
        normalize,
        fill,
    )
    result.figures["invariance_top1"] = top1_figure(ctx, families, arrays, names)
    return result
