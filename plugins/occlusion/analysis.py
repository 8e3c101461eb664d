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
    """One line: the multiply-adds of a full forward, needed and executed per position, the bound."""
    numbers = cost.as_dict()
    return (
        f"full forward {numbers['macs_full_forward'] / 1e9:.3f} GMAC; per position needed "
        f"{numbers['macs_needed_per_position'] / 1e9:.3f} GMAC, executed {numbers['macs_executed_per_position'] / 1e9:.3f}"
        f" GMAC (padding x{numbers['padding_overhead']:.2f}); bound {numbers['bound']:.2f}x full forwards"
        f" over {cost.positions} positions"
    )


def _fidelity(ctx, x, layer, strongest, targets, grid, fill, maps, check: int) -> dict[str, Any] | None:
    """Fast mode against exact incremental occlusion at ``check`` random positions (all of them,
    and SSIM of the maps, when ``check`` covers the grid): what the approximation costs."""
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
        fast_p = maps["true_class_prob"][i].reshape(-1)[cells]
        fast_top = maps["top_label"][i].reshape(-1)[cells]
        delta = np.abs(fast_p - np.concatenate(exact_p))
        entry = {
            "max_abs_delta_p": round(float(delta.max()), 5),
            "mean_abs_delta_p": round(float(delta.mean()), 5),
            "top_label_agreement": round(float((fast_top == np.concatenate(exact_top)).mean()), 4),
        }
        if whole:
            shape = (grid.rows, grid.cols)
            entry["ssim_probability"] = round(
                vizkit.toolkit.ssim(maps["true_class_prob"][i], np.concatenate(exact_p).reshape(shape)), 4
            )
            entry["ssim_activity"] = round(
                vizkit.toolkit.ssim(maps["feature_activity"][i], np.concatenate(exact_a).reshape(shape)), 4
            )
        report["per_image"].append(entry)
    return report
