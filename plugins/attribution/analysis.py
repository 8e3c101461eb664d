"""The ``attribution`` run: the methods on the canonical copy of the model, the deconvnet column
beside them, every map compared, the result and its figures."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import vizkit
from vizkit.data import resolve_targets
from vizkit.engine import CanonicalModel

from .figures import comparison_figure, faithfulness_figure, maps_figure
from .methods import DECONVNET, NT_PREFIX, MethodSettings, make_method
from .metrics import Comparison, best_column, compare, ranks_pixels, to_2d

SCORES = ("logit", "probability")


def _check_canonical(canonical: CanonicalModel, layer: str, logits: Tensor) -> nn.Module:
    """The copy's ``layer`` module, refused unless it runs once per forward; and the copy's
    output on the first image must be the model's (a ReLU whose in-place effect the model
    relies on, without using its result, would change it)."""
    if canonical.layer_calls != 1:
        raise vizkit.UsageError(
            f"--layer '{layer}' runs {canonical.layer_calls} times in one forward; captum's layer methods need a "
            "module that runs once: pick its block or another layer"
        )
    expected = logits[:1].softmax(1) if canonical.probability else logits[:1]
    got = canonical.probe_output
    scale = float(expected.abs().max()) or 1.0
    if got is None or got.shape != expected.shape or float((got - expected).abs().max()) > 1e-3 * scale:
        raise vizkit.VizkitError(
            "captum's copy of the model (each ReLU call a separate, not in-place module) computes other outputs "
            "than the model: does it rely on an in-place ReLU whose result it does not use?"
        )
    return canonical.layer(layer)


def _deconvnet_column(
    ctx: vizkit.RunContext,
    canonical: CanonicalModel,
    module: nn.Module,
    x: Tensor,
    layer: str,
    targets: Tensor,
    rule: str,
) -> tuple[Tensor, list[dict[str, Any]], float]:
    """vizkit's projection of the unit of ``layer`` that contributes most to each image's target
    (activation x gradient, captum's LayerGradientXActivation on the copy), the units, and the
    seconds it took."""
    from captum.attr import LayerGradientXActivation

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        contribution = LayerGradientXActivation(canonical, module).attribute(x.clone(), target=targets).detach()
    if contribution.dim() != 4:
        raise vizkit.UsageError(f"layer '{layer}' has no spatial feature maps (shape {tuple(contribution.shape)})")
    n, _channels, rows, cols = contribution.shape
    best = contribution.flatten(1).argmax(1)
    channel, rest = best // (rows * cols), best % (rows * cols)
    position = torch.stack([rest // cols, rest % cols], dim=1)
    projection = vizkit.project(
        ctx.instrumented,
        x,
        layer,
        channel.reshape(n, 1),
        position=position.reshape(n, 1, 2),
        rule=ctx.rule(rule),
        chunk=ctx.batch_size,
    )
    units = [
        {
            "channel": int(channel[i]),
            "position": position[i].tolist(),
            "activation": float(projection.values[i, 0]),
            "contribution": float(contribution.flatten(1)[i, best[i]]),
        }
        for i in range(n)
    ]
    return projection.images[:, 0].detach(), units, round(time.perf_counter() - started, 3)


def _mean_of_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _significant(value: float, digits: int = 5) -> float:
    """``value`` rounded to ``digits`` significant digits (rounding to decimal places turned a
    probability of 3e-16 into 0)."""
    return float(f"{value:.{digits}g}")


def _check_combinations(method: list[str], window: int, stride: int, overlay: str, sign: str, side: int) -> None:
    """What the options' declared ranges cannot say: bounds set by the images' ``side`` (the
    shorter one) or by another option."""
    occluding = any(name.removeprefix(NT_PREFIX) == "occlusion" for name in method)
    if occluding and window > side:  # the Option's range holds it at 1 or more
        raise vizkit.UsageError(f"--window must be between 1 and {side}, not {window}")
    if occluding and stride > window:  # captum's Occlusion asserts it
        raise vizkit.UsageError(f"--stride {stride} must be at most --window {window} (the windows would skip pixels)")
    if overlay == "alpha_scaling" and sign == "all":
        raise vizkit.UsageError("--overlay alpha_scaling cannot show both signs: choose another --sign")


def _baseline_colour(baseline: str, preprocess: vizkit.Preprocess) -> Tensor:
    """``--baseline`` as the [3] normalised colour of removed pixels."""
    try:
        return vizkit.data.parse_fill(baseline, preprocess)
    except vizkit.UsageError:
        raise vizkit.UsageError(
            f"--baseline expects mean, zero, or R,G,B with values 0-255; not '{baseline}'"
        ) from None


def _logits_and_layer(ctx: vizkit.RunContext, x: Tensor, layer: str | None) -> tuple[Tensor, str]:
    """The model's logits for ``x`` and the layer the layer methods and the deconvnet column
    look at: ``--layer``, else the default one (a module that runs once, captum hooks it)."""
    im = ctx.instrumented
    with im.configured(layers=[layer] if layer else "all", switches=False), torch.no_grad():
        logits = im(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise vizkit.UsageError("attribution needs a classifier: the model must output [N, classes] logits")
    num_classes = logits.shape[1]
    vizkit.data.check_labels(ctx.labels, num_classes)
    layer = (
        im.resolve_alias(layer) if layer else vizkit.toolkit.default_layer(ctx.model, im, num_classes, hookable=True)
    )
    activation = im.activation(layer)  # unknown layer -> an error listing the valid ones
    if activation.dim() != 4:
        raise vizkit.UsageError(f"layer '{layer}' has no spatial feature maps (shape {tuple(activation.shape)})")
    return logits, layer


def _run_methods(
    ctx: vizkit.RunContext,
    method: list[str],
    canonical: CanonicalModel,
    module: nn.Module,
    x: Tensor,
    targets: Tensor,
    settings: MethodSettings,
    bar: Any,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Each method's attributions ([N, C, H, W], on the CPU) and the seconds it took."""
    seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
    attributions: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    for name in method:
        started = time.perf_counter()
        values = make_method(name, seed).attribute(canonical, module, x, targets, settings)
        seconds[name] = round(time.perf_counter() - started, 3)
        if not torch.isfinite(values).all():
            raise vizkit.VizkitError(f"{name} gave non-finite attributions")
        attributions[name] = values.float().cpu()
        bar.update(1)
    return attributions, seconds


def _target_summary(
    ctx: vizkit.RunContext,
    method: list[str],
    targets: Tensor,
    probability: list[float],
    layer: str,
    score: str,
    baseline: Tensor,
) -> dict[str, Any]:
    """What result.json says first: the methods and columns, what they explain, where."""
    return {
        "methods": method,
        "columns": [*method, DECONVNET],
        "captum": {name: make_method(name).label for name in method},
        "captum_version": _captum_version(),
        "target": targets.tolist(),
        "target_name": [ctx.label(int(t)) for t in targets.tolist()],
        "probability": [_significant(p) for p in probability],
        "layer": layer,
        "score": score,
        "baseline": [round(float(v), 5) for v in baseline],
    }


def _captum_version() -> str:
    import captum

    return captum.__version__


def _comparison_summary(comparison: Comparison, columns: list[str], names: list[str]) -> dict[str, Any]:
    """The comparison's part of result.json: correlations per image and their means, deletion
    curves' areas, the maps that rank no pixel, and each image's best map."""
    correlation, auc, maps = comparison.correlation, comparison.auc, comparison.maps
    labels = [*columns, "random"]
    return {
        "rank_correlation": {
            image: {a: {b: float(correlation[i, p, q]) for q, b in enumerate(columns)} for p, a in enumerate(columns)}
            for i, image in enumerate(names)
        },
        "rank_correlation_mean": {
            a: {b: _mean_of_finite(correlation[:, p, q]) for q, b in enumerate(columns)} for p, a in enumerate(columns)
        },
        "deletion_fractions": comparison.fractions.tolist(),
        "deletion_patch": comparison.patch,
        "deletion_auc": {name: [_significant(v) for v in auc[k]] for k, name in enumerate(labels)},
        "deletion_auc_relative": {
            name: [_significant(v, 4) for v in comparison.relative_auc[k]] for k, name in enumerate(labels)
        },
        "all_zero": {  # such a map ranks nothing: its deletion order is random, its correlations NaN
            image: [column for k, column in enumerate(columns) if not np.any(maps[k, i])]
            for i, image in enumerate(names)
        },
        "constant": {  # the same: a uniform map that is not zero (e.g. an occlusion window as large as the image)
            image: [column for k, column in enumerate(columns) if np.any(maps[k, i]) and not ranks_pixels(maps[k, i])]
            for i, image in enumerate(names)
        },
        "deletion_best": [best_column(columns, auc[:, i], maps[:, i]) for i in range(maps.shape[1])],
        "metrics": comparison.metrics,
        **_more_metrics_summary(comparison, columns),
    }


def _more_metrics_summary(comparison: Comparison, columns: list[str]) -> dict[str, Any]:
    """``--metrics`` beyond deletion: the insertion curves' areas (the random reference's too)
    and ROAD's mean P(target) over the percentages imputed, per map and image."""
    summary: dict[str, Any] = {}
    if comparison.insertion_auc is not None:
        labels = [*columns, "random"]
        summary["insertion_auc"] = {
            name: [_significant(v) for v in comparison.insertion_auc[k]] for k, name in enumerate(labels)
        }
    if comparison.road is not None:
        summary["road_percentages"] = comparison.road.percentages.tolist()
        for order in ("morf", "lerf"):
            means = getattr(comparison.road, order).mean(axis=-1)
            summary[f"road_{order}"] = {name: [_significant(v) for v in means[k]] for k, name in enumerate(columns)}
    return summary


def run(
    ctx: vizkit.RunContext,
    method: list[str],
    target: str,
    layer: str | None,
    score: str,
    steps: int,
    baseline: str,
    window: int,
    stride: int,
    samples: int,
    nt_type: str,
    stdev: float,
    deletion_steps: int,
    deletion_patch: int,
    metrics: list[str],
    road_percentages: tuple[float, ...],
    road_noise: float,
    sign: str,
    outlier_perc: float,
    overlay: str,
    rule: str,
) -> vizkit.Result:
    """The analysis (its options are described where it is registered, in the package)."""
    x = ctx.images()
    height, width = x.shape[-2:]
    _check_combinations(method, window, stride, overlay, sign, min(height, width))
    baseline_colour = _baseline_colour(baseline, ctx.preprocess)
    logits, layer = _logits_and_layer(ctx, x, layer)
    targets = resolve_targets(target, ctx.labels, logits)
    probability = logits.float().softmax(1)[torch.arange(x.shape[0]), targets].tolist()

    canonical = CanonicalModel.build(ctx.model, x, probability=score == "probability", layer=layer)
    module = _check_canonical(canonical, layer, logits)
    settings = MethodSettings(
        steps=steps,
        baseline=baseline_colour,
        window=window,
        stride=stride,
        samples=samples,
        nt_type=nt_type,
        stdev=stdev,
        batch_size=ctx.batch_size,
    )
    bar = vizkit.toolkit.progress_bar(total=len(method) + 2, desc="attribution", unit="steps", enabled=ctx.progress)
    attributions, seconds = _run_methods(ctx, method, canonical, module, x, targets, settings, bar)
    projection, units, seconds_deconvnet = _deconvnet_column(ctx, canonical, module, x, layer, targets, rule)
    bar.update(1)

    columns = [*method, DECONVNET]
    maps = np.stack([to_2d(attributions[name]) for name in method] + [to_2d(projection)])  # [K, N, H, W]
    patch = min(deletion_patch, height, width)
    comparison = compare(
        ctx.instrumented,
        x,
        maps,
        targets,
        baseline_colour,
        deletion_steps,
        patch,
        ctx.rng,
        ctx.batch_size,
        metrics,
        road_percentages,
        road_noise,
    )
    bar.update(1)
    bar.close()

    names = ctx.image_names()
    result = vizkit.Result(
        summary={
            **_target_summary(ctx, method, targets, probability, layer, score, baseline_colour),
            "deconvnet_unit": units,
            "relu_calls_routed": len(canonical.relus),
            "seconds_per_method": seconds,
            "seconds_deconvnet": seconds_deconvnet,
            "seconds_deletion": comparison.seconds,
            "seconds_metrics": comparison.seconds_metrics,
            **_comparison_summary(comparison, columns, names),
            "images": names,
        },
        arrays={
            **{name: values.numpy().astype(np.float32) for name, values in attributions.items()},
            DECONVNET: projection.float().cpu().numpy(),
            **comparison.arrays(),
        },
    )
    shown = {"sign": sign, "outlier_perc": outlier_perc, "overlay": overlay}
    seconds_shown = {**seconds, DECONVNET: seconds_deconvnet}
    result.figures["attribution"] = maps_figure(
        ctx, x, columns, maps, targets, probability, seconds_shown, layer, units, shown, score
    )
    result.figures["attribution_comparison"] = comparison_figure(ctx, columns, comparison, targets)
    faithfulness = faithfulness_figure(ctx, columns, comparison, targets)
    if faithfulness is not None:
        result.figures["attribution_faithfulness"] = faithfulness
    return result
