"""The ``occlusion`` run: the tracked layer and map, the maps, the fast mode's fidelity against
exact occlusion, the deconvnet projections, the result and its figures."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

import vizkit
from vizkit.data import parse_fill, resolve_target

from .figures import _figure
from .grid import OcclusionGrid
from .maps import occlusion_maps


def _logits_layer_and_map(ctx: vizkit.RunContext, x: Tensor, layer: str | None) -> tuple[Tensor, str, Tensor]:
    """One forward of ``x``: the logits, the layer whose map is tracked (``--layer``, else the
    default one) and each image's strongest map of it."""
    im = ctx.instrumented
    with im.configured(layers=[layer] if layer else "all"), torch.no_grad():
        logits = im(x)  # one forward gives the logits and the layer
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise vizkit.UsageError("occlusion needs a classifier: the model must output [N, classes] logits")
    num_classes = logits.shape[1]
    vizkit.data.check_labels(ctx.labels, num_classes)
    layer = im.resolve_alias(layer) if layer else vizkit.toolkit.default_layer(ctx.model, im, num_classes)
    activation = im.activation(layer)  # unknown layer -> clear error listing valid ones
    if activation.dim() != 4:
        raise vizkit.UsageError(f"layer '{layer}' has no spatial feature maps (shape {tuple(activation.shape)})")
    return logits, layer, activation.flatten(2).amax(2).argmax(1)  # the strongest map, per image


def run(
    ctx: vizkit.RunContext,
    target: str,
    layer: str | None,
    size: int,
    stride: int,
    fill: str,
    mode: str,
    tau: float,
    drill_down: float,
    check: int,
    explain: bool,
) -> vizkit.Result:
    x = ctx.images()
    im = ctx.instrumented
    height, width = x.shape[-2:]
    if size > min(height, width):  # the Option's range holds it at 1 or more
        raise vizkit.UsageError(f"--size must be between 1 and {min(height, width)}, not {size}")
    fill_value = parse_fill(fill, ctx.preprocess)
    logits, layer, strongest = _logits_layer_and_map(ctx, x, layer)
    fixed = resolve_target(target, ctx.labels, logits.shape[1])
    targets = logits.argmax(1) if fixed is None else torch.full((x.shape[0],), fixed, dtype=torch.long)

    grid = OcclusionGrid(height, width, size, stride)
    costs: list[vizkit.engine.OcclusionCost] = []
    started = time.perf_counter()
    maps = occlusion_maps(
        im,
        x,
        layer,
        strongest,
        targets,
        grid,
        fill_value,
        mode=mode,
        batch_size=ctx.batch_size,
        progress=ctx.progress,
        tau=tau,
        drill_down=drill_down,
        costs=costs,
    )
    seconds = time.perf_counter() - started
    fidelity = _fidelity(ctx, x, layer, strongest, targets, grid, fill_value, maps, check) if mode == "fast" else None
    if explain:
        for name, cost in zip(ctx.image_names(), costs):
            print(f"occlusion cost, {name}: {explain_cost(cost)}", file=sys.stderr)

    # projection.images[j, i]: the strongest map of image i, projected in image j
    projection = vizkit.project(im, x, layer, strongest.tolist())
    labels_seen = sorted({int(v) for v in np.unique(maps["top_label"])})
    result = vizkit.Result(
        summary={
            "strongest_map": strongest.tolist(),
            "target": targets.tolist(),
            "target_name": [ctx.label(t) for t in targets.tolist()],
            "labels_seen": {str(i): ctx.label(i) for i in labels_seen},
            "positions": grid.count,
            "grid": [grid.rows, grid.cols],
            "layer": layer,
            "mode": mode,
            "tau": tau if mode == "fast" else 1.0,
            "drill_down": drill_down if mode == "fast" else 1.0,
            "positions_evaluated": [cost.positions for cost in costs] if costs else [grid.count] * x.shape[0],
            "cost": [cost.as_dict() for cost in costs],
            "fidelity": fidelity,
            "seconds_maps": round(seconds, 3),  # the occlusion maps alone (result.json's seconds: the whole run)
            "unoccluded_probability": [float(p) for p in logits.float().softmax(1)[torch.arange(x.shape[0]), targets]],
            "min_probability": [float(m.min()) for m in maps["true_class_prob"]],
            "images": ctx.image_names(),
        },
        arrays={**maps, "centers_y": grid.centers_y(), "centers_x": grid.centers_x()},
    )
    for index in range(x.shape[0]):
        name = "occlusion" if x.shape[0] == 1 else f"occlusion_{index}"
        how = "exact" if mode != "fast" else f"fast, approximate: tau {tau:g}, drill-down {drill_down:g}"
        result.figures[name] = _figure(
            ctx, x, index, maps, grid, projection, strongest, targets, layer, fill_value, how
        )
    return result


def explain_cost(cost: vizkit.engine.OcclusionCost) -> str:
    """The multiply-adds of a full forward, needed and executed per position, the bound; then,
    one indented line each, every place where the changed window became the whole map, why,
    and its share of the needed multiply-adds (an SE block's global pool makes every map after
    it whole: the bound says what that leaves)."""
    numbers = cost.as_dict()
    line = (
        f"full forward {numbers['macs_full_forward'] / 1e9:.3f} GMAC; per position needed "
        f"{numbers['macs_needed_per_position'] / 1e9:.3f} GMAC, executed {numbers['macs_executed_per_position'] / 1e9:.3f}"
        f" GMAC (padding x{numbers['padding_overhead']:.2f}); bound {numbers['bound']:.2f}x full forwards"
        f" over {cost.positions} positions"
    )
    return "\n".join([line, *(f"  {entry.describe(cost.needed)}" for entry in cost.whole_maps)])


def _fidelity(ctx, x, layer, strongest, targets, grid, fill, maps, check: int) -> dict[str, Any] | None:
    """Fast mode against exact incremental occlusion at ``check`` random positions: what the
    approximation costs, in the scale of each map (see :func:`fidelity_entry`)."""
    if check == 0:
        return None
    whole = check >= grid.count
    cells = np.arange(grid.count) if whole else np.sort(ctx.rng.choice(grid.count, size=check, replace=False))
    report: dict[str, Any] = {"positions_checked": len(cells), "per_image": []}
    for i in range(x.shape[0]):
        engine = vizkit.engine.IncrementalOcclusion(ctx.instrumented, x[i : i + 1], layer)
        exact_p, exact_a, exact_top = [], [], []
        for start in range(0, len(cells), ctx.batch_size):
            part = [grid.top_left(*divmod(int(k), grid.cols)) for k in cells[start : start + ctx.batch_size]]
            with torch.no_grad():
                logits, sums = engine.evaluate(part, grid.size, fill, channel=int(strongest[i]))
            p = logits.float().softmax(1)
            exact_p.append(p[:, int(targets[i])].cpu().numpy())
            exact_a.append(sums.float().cpu().numpy())
            exact_top.append(p.argmax(1).cpu().numpy())
        exact = {
            "true_class_prob": np.concatenate(exact_p),
            "feature_activity": np.concatenate(exact_a),
            "top_label": np.concatenate(exact_top),
        }
        report["per_image"].append(fidelity_entry({key: maps[key][i] for key in exact}, exact, cells))
    return report


def fidelity_entry(fast: dict[str, np.ndarray], exact: dict[str, np.ndarray], cells: np.ndarray) -> dict[str, float]:
    """One image's error of the fast maps (``fast``: whole [rows, cols] maps) against the exact
    values at the flat indices ``cells`` (``exact``: 1-D, one value per cell), in the scale of
    each map: a target's probability may span 0-1 or 0-0.013 (a class that is not the top
    one), so absolute errors alone say little.

    ``max_abs_delta_p`` and ``mean_abs_delta_p`` are absolute; ``probability_range`` is the
    map's max - min (over the fast map and the exact values checked: the exact map's own range
    is known only where all of it is checked); ``max_abs_delta_p_relative`` and
    ``mean_abs_delta_p_relative`` divide by it, ``max_abs_delta_activity_relative`` likewise
    for the activity map. With every cell checked, ``ssim_probability`` and ``ssim_activity``
    are SSIM (:func:`vizkit.toolkit.ssim`) with ``data_range`` the exact map's range, not 1: on
    a map spanning 0-0.013 a range of 1 would make any two maps look alike. SSIM compares
    neighbourhoods of the grid, so a random sample of positions gets the relative errors only."""
    entry: dict[str, float] = {}
    for key, name in (("true_class_prob", "p"), ("feature_activity", "activity")):
        shown, truth = fast[key].astype(np.float64), exact[key].astype(np.float64)
        delta = np.abs(shown.reshape(-1)[cells] - truth)
        span = float(max(shown.max(), truth.max()) - min(shown.min(), truth.min()))
        relative = delta / span if span > 0 else np.zeros_like(delta)
        if name == "p":
            entry["max_abs_delta_p"] = round(float(delta.max()), 6)
            entry["mean_abs_delta_p"] = round(float(delta.mean()), 6)
            entry["probability_range"] = round(span, 6)
            entry["mean_abs_delta_p_relative"] = round(float(relative.mean()), 4)
        entry[f"max_abs_delta_{name}_relative"] = round(float(relative.max()), 4)
    agreement = fast["top_label"].reshape(-1)[cells] == exact["top_label"]
    entry["top_label_agreement"] = round(float(agreement.mean()), 4)
    if len(cells) == fast["true_class_prob"].size:
        shape = fast["true_class_prob"].shape
        for key, name in (("true_class_prob", "probability"), ("feature_activity", "activity")):
            entry[f"ssim_{name}"] = round(vizkit.toolkit.ssim(fast[key], exact[key].reshape(shape)), 4)
    return entry
