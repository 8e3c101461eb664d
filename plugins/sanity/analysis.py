"""The ``sanity`` run: every chosen map method on the trained model, on a random other class,
on each randomized copy of the model (and on a second model), every map compared with the
trained model's, and the trained maps' faithfulness."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import vizkit

from .checkpoint import VariantCache
from .figures import curves_figure, maps_figure
from .randomize import Step, randomized, steps_for, variants
from .similarity import METRICS, similarities


def parse_methods(text: str, known: dict[str, vizkit.MapMethod]) -> list[str]:
    """``deconvnet,saliency,...`` (or ``all``: every registered map method) as a list of names."""
    if not known:
        raise vizkit.UsageError(
            "no map method is registered: vizkit's own come from its deconvnet and attribution plugins (are they disabled?)"
        )
    names: list[str] = []
    for part in (p.strip().lower() for p in str(text).split(",")):
        if not part:
            continue
        for name in list(known) if part == "all" else [part]:
            if name not in known:
                raise vizkit.UsageError(f"unknown map method '{name}' in --method; available: {', '.join(known)}, all")
            if name not in names:
                names.append(name)
    if not names:
        raise vizkit.UsageError("--method needs at least one map method, e.g. deconvnet,guided,saliency")
    return names


def maps_of(methods: list[vizkit.MapMethod], request: vizkit.MapRequest) -> np.ndarray:
    """Every method's maps of ``request``: [N, K, H, W] float32."""
    return np.stack([method(request).numpy() for method in methods], axis=1).astype(np.float32)


def compare_all(reference: np.ndarray, maps: np.ndarray) -> dict[str, np.ndarray]:
    """Similarity of ``maps`` [N, K, ..., H, W] to ``reference`` [N, K, H, W], per metric:
    arrays shaped like ``maps`` without H, W."""
    lead = maps.shape[:-2]
    out = {metric: np.full(lead, np.nan) for metric in METRICS}
    for index in np.ndindex(*lead):
        found = similarities(maps[index], reference[index[:2]])
        for metric in METRICS:
            out[metric][index] = found[metric]
    return out


def _random_other_classes(targets: Tensor, num_classes: int, seed: int) -> Tensor:
    """A class other than its target for each image, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    others = [int(rng.choice([c for c in range(num_classes) if c != int(t)])) for t in targets.tolist()]
    return torch.tensor(others, device=targets.device)


def _fingerprint(ctx: vizkit.RunContext, x: Tensor, settings: dict[str, Any]) -> str:
    """What a checkpoint must match to be reused: the images, the model's weights, the settings."""
    digest = hashlib.sha256(x.detach().float().cpu().numpy().tobytes())
    for name, value in ctx.model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().numpy().tobytes()[:4096])
        digest.update(repr(float(value.detach().double().sum())).encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _layer_for(ctx: vizkit.RunContext, logits: Tensor, layer: str | None, needed: bool) -> str:
    """The layer the layer methods read: ``--layer``, else the model's default one."""
    im = ctx.instrumented
    if layer:
        return im.resolve_alias(layer)
    if not needed:
        return ""
    return vizkit.toolkit.default_layer(ctx.model, im, logits.shape[1], hookable=True)


def _json_values(values: np.ndarray) -> Any:
    """Rounded to 5 decimals, NaN (an undefined similarity: a constant map) as None."""
    return (
        [None if not np.isfinite(v) else round(float(v), 5) for v in values]
        if values.ndim == 1
        else [_json_values(row) for row in values]
    )


def _similarity_summary(found: dict[str, np.ndarray], methods: list[str]) -> dict[str, dict[str, Any]]:
    """``[N, K, ...]`` similarity arrays as ``{method: {metric: per-image lists}}`` (None where a
    map is constant and no similarity is defined)."""
    return {name: {metric: _json_values(found[metric][:, k]) for metric in METRICS} for k, name in enumerate(methods)}


def run(
    ctx: vizkit.RunContext,
    method: str,
    randomize: list[str],
    target: str,
    layers: str,
    layer: str | None,
    steps: int,
    window: int,
    stride: int,
    baseline: str,
    metrics: list[str],
    deletion_steps: int,
    deletion_patch: int,
    compare_model: str | None,
    compare_weights: str | None,
    resume: bool,
) -> vizkit.Result:
    """The analysis (its options are described where it is registered, in the package)."""
    known = ctx.app.map_methods if ctx.app is not None else vizkit.make_app().map_methods
    names = parse_methods(method, known)
    chosen = [known[name] for name in names]
    x = ctx.images()
    height, width = x.shape[-2:]
    occluding = "occlusion" in names
    if occluding and window > min(height, width):
        raise vizkit.UsageError(f"--window must be between 1 and {min(height, width)}, not {window}")
    if occluding and stride > window:
        raise vizkit.UsageError(f"--stride {stride} must be at most --window {window} (the windows would skip pixels)")
    try:
        colour = vizkit.data.parse_fill(baseline, ctx.preprocess)
    except vizkit.UsageError:
        raise vizkit.UsageError(
            f"--baseline expects mean, zero, or R,G,B with values 0-255; not '{baseline}'"
        ) from None
    with ctx.instrumented.configured(layers=None, switches=False), torch.no_grad():
        logits = ctx.instrumented(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise vizkit.UsageError("sanity needs a classifier: the model must output [N, classes] scores")
    vizkit.data.check_labels(ctx.labels, logits.shape[1])
    targets = vizkit.data.resolve_targets(target, ctx.labels, logits)
    layer = _layer_for(ctx, logits, layer, any(m.needs_layer for m in chosen))
    if layer and layer not in dict(ctx.model.named_modules()):
        raise vizkit.UsageError(f"--layer '{layer}' is not a module of the model; `vizkit layers` lists them")
    plan = steps_for(ctx.model, x, "auto" if layers.strip().lower() == "auto" else layers.split(","))
    second = _second_model(ctx, compare_model, compare_weights, logits.shape[1])
    request = vizkit.MapRequest(
        ctx.model,
        x,
        targets,
        layer,
        colour,
        ctx.batch_size,
        ctx.seed,
        {"steps": steps, "window": window, "stride": stride},
    )
    settings = {
        "methods": names,
        "randomize": randomize,
        "targets": targets.tolist(),
        "layer": layer,
        "steps": [step.name for step in plan],
        "options": request.options,
        "baseline": colour.tolist(),
        "seed": ctx.seed,
        "compare_model": compare_model,
        "compare_weights": compare_weights,
    }
    cache = VariantCache(ctx.out, _fingerprint(ctx, x, settings), resume)
    total = (2 + len(randomize) * len(plan) + (second is not None)) * len(chosen)
    bar = vizkit.toolkit.progress_bar(total=total, desc="sanity", unit="maps", enabled=ctx.progress)
    started = time.perf_counter()

    def computed(tag: str, model: Callable[[], nn.Module], wanted: Tensor | None = None) -> np.ndarray:
        """The maps of ``tag``'s model (built only when they are not kept from an earlier run)."""
        saved = cache.load_maps(tag)
        if saved is None:
            asked = replace(request, model=model(), targets=targets if wanted is None else wanted)
            saved = maps_of(chosen, asked)
            cache.save_maps(tag, saved)
        bar.update(len(chosen))
        return saved

    trained = computed("trained", lambda: ctx.model)
    other = _random_other_classes(targets, logits.shape[1], ctx.seed)
    random_logit = computed("random-logit", lambda: ctx.model, other)
    randomized_maps: dict[str, np.ndarray] = {}
    for mode in randomize:
        per_step = [trained]
        for k, variant in enumerate(variants(plan, mode)):
            copy = partial(randomized, ctx.model, variant, ctx.seed)
            per_step.append(computed(f"{mode}-{k + 1}", copy))
        randomized_maps[mode] = np.stack(per_step, axis=2)  # [N, K, S + 1, H, W]
    compared = computed("compare-model", lambda: second) if second is not None else None
    bar.close()
    seconds_maps = round(time.perf_counter() - started, 3)

    faithfulness = _faithfulness(ctx, x, trained, targets, colour, metrics, deletion_steps, deletion_patch)
    result = _result(
        ctx,
        names,
        plan,
        randomize,
        targets,
        other,
        logits,
        layer,
        trained,
        random_logit,
        randomized_maps,
        compared,
        compare_model,
        faithfulness,
        seconds_maps,
    )
    result.scratch.extend(cache.files())  # kept for --resume until the result is saved
    return result


def _second_model(ctx: vizkit.RunContext, spec: str | None, weights: str | None, num_classes: int) -> nn.Module | None:
    """``--compare-model`` (and ``--compare-weights``, read with ``weights_only=True``): the model
    the trained one's maps are compared with (e.g. one trained on shuffled labels), loaded like
    ``--model``; it must take the same images and classes."""
    if not spec:
        if weights:
            raise vizkit.UsageError("--compare-weights needs --compare-model (the architecture they belong to)")
        return None
    model = vizkit.load_model(spec, weights=weights, device=ctx.device, app=ctx.app)
    try:
        with torch.no_grad():
            probe = model(ctx.images()[:1].to(ctx.device))
    except (RuntimeError, ValueError) as error:  # another input size or channel count
        reason = " ".join(str(error).split())[:200]
        raise vizkit.UsageError(f"--compare-model '{spec}' cannot take the model's images: {reason}") from None
    if not isinstance(probe, Tensor) or probe.dim() != 2 or probe.shape[1] != num_classes:
        shape = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
        raise vizkit.UsageError(
            f"--compare-model '{spec}' outputs {shape}, not [1, {num_classes}] class scores like the model"
        )
    return model


def _faithfulness(
    ctx: vizkit.RunContext,
    x: Tensor,
    trained: np.ndarray,
    targets: Tensor,
    colour: Tensor,
    metrics: list[str],
    deletion_steps: int,
    deletion_patch: int,
) -> dict[str, np.ndarray]:
    """Deletion, insertion and ROAD of the trained model's maps ([N, K] areas and means)."""
    if not metrics:
        return {}
    from vizkit_plugins.attribution.faithfulness import FaithfulnessSettings, evaluate

    settings = FaithfulnessSettings(
        steps=deletion_steps,
        patch=min(deletion_patch, *x.shape[-2:]),
        baseline=colour,
        batch_size=ctx.batch_size,
        seed=ctx.seed,
    )
    maps = torch.from_numpy(np.ascontiguousarray(trained.transpose(1, 0, 2, 3)))  # [K, N, H, W]
    with torch.no_grad():
        found = evaluate(ctx.model, x, maps, targets, metrics, settings)
    return {key: np.asarray(value).swapaxes(0, 1) for key, value in found.items()}  # [N, K, ...]


def _result(
    ctx: vizkit.RunContext,
    names: list[str],
    plan: list[Step],
    randomize: list[str],
    targets: Tensor,
    other: Tensor,
    logits: Tensor,
    layer: str,
    trained: np.ndarray,
    random_logit: np.ndarray,
    randomized_maps: dict[str, np.ndarray],
    compared: np.ndarray | None,
    compare_model: str | None,
    faithfulness: dict[str, np.ndarray],
    seconds_maps: float,
) -> vizkit.Result:
    first = randomize[0]
    similarity = {mode: compare_all(trained, maps) for mode, maps in randomized_maps.items()}
    summary: dict[str, Any] = {
        "methods": names,
        "randomize": randomize,
        "steps": [step.name for step in plan],
        "step_modules": {step.name: list(step.modules) for step in plan},
        "target": targets.tolist(),
        "target_name": [ctx.label(int(t)) for t in targets.tolist()],
        "probability": [round(float(p), 5) for p in logits.float().softmax(1)[torch.arange(len(targets)), targets]],
        "layer": layer,
        "metrics": list(METRICS),
        "similarity": _similarity_summary(similarity[first], names),
        "random_logit_target": other.tolist(),
        "random_logit_name": [ctx.label(int(t)) for t in other.tolist()],
        "random_logit": _similarity_summary(compare_all(trained, random_logit), names),
        "seconds_maps": seconds_maps,
    }
    for mode in randomize[1:]:
        summary[f"similarity_{mode}"] = _similarity_summary(similarity[mode], names)
    zero = np.logical_not(np.any(randomized_maps[first], axis=(-2, -1)))  # [N, K, S + 1]
    summary["all_zero"] = {  # steps whose map is all zero: it changed, but no similarity is defined
        name: [np.flatnonzero(zero[i, k]).tolist() for i in range(zero.shape[0])] for k, name in enumerate(names)
    }
    summary["fully_randomized"] = {  # the last cascading step: every step re-drawn
        name: {metric: _json_values(similarity[first][metric][:, k, -1]) for metric in METRICS}
        for k, name in enumerate(names)
    }
    arrays: dict[str, np.ndarray] = {
        "maps": randomized_maps[first].astype(np.float32),
        "maps_random_logit": random_logit,
    }
    for mode in randomize[1:]:
        arrays[f"maps_{mode}"] = randomized_maps[mode].astype(np.float32)
    if compared is not None:
        summary["compare_model"] = compare_model
        summary["similarity_compare_model"] = _similarity_summary(compare_all(trained, compared), names)
        arrays["maps_compare_model"] = compared
    for key, value in faithfulness.items():
        if value.ndim == 2:  # [N, K] areas and means; the curves stay in the arrays
            summary[key] = {name: [round(float(v), 5) for v in value[:, k]] for k, name in enumerate(names)}
        else:
            arrays[key] = value.astype(np.float32)
    summary["images"] = ctx.image_names()
    result = vizkit.Result(summary=summary, arrays=arrays)
    x = ctx.images()
    for i, image in enumerate(summary["images"]):
        key = "sanity" if i == 0 else f"sanity_{i + 1:02d}"
        result.figures[key] = maps_figure(ctx, x[i], image, names, summary, randomized_maps[first][i], first)
    result.figures["sanity_curves"] = curves_figure(names, summary["steps"], similarity, randomize)
    return result
