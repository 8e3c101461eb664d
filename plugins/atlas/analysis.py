"""The ``atlas`` run: the layers resolved, the one scan over every process's shard (every listed
layer at once), then on rank 0 the winners' projections, the connections between consecutive
layers, the ablations, the result's arrays and its overview figure."""

from __future__ import annotations

import hashlib
import itertools
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

import vizkit
from vizkit.toolkit import ProcessGroup

from .ablation import AblationSet, ablate_layer, baseline, choose_images, layer_module, model_class_index
from .connections import Link, execution_order, joining_layer, strongest, weight_strength
from .figures import overview_figure
from .scan import AtlasState

RESUME_VERSION = 1  # bump when what the resume folder keeps changes meaning


def _layers(im: vizkit.Instrumented, probe: Tensor, names: list[str]) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """The listed layers resolved and put in forward order, with their output shapes (no batch)."""
    order = execution_order(im, probe)
    resolved = []
    for name in names:
        try:
            layer = im.resolve_alias(name)
            im.info(layer)
        except vizkit.VizkitError as error:
            raise vizkit.UsageError(str(error).splitlines()[0]) from None
        if layer in resolved:
            raise vizkit.UsageError(f"--layers names '{name}' twice (as '{layer}')")
        resolved.append(layer)
    resolved.sort(key=order.index)
    shapes = {}
    with im.configured(layers=resolved, switches=False), torch.no_grad():
        im(probe)
        for layer in resolved:
            activation = im.activation(layer)
            if not isinstance(activation, Tensor) or activation.dim() < 2:
                raise vizkit.UsageError(f"layer '{layer}' has no units to describe (its output is not [N, C, ...])")
            shapes[layer] = tuple(activation.shape[1:])
    return resolved, shapes


def _fingerprint(ctx: vizkit.RunContext, *parts: Any) -> str:
    paths = "\n".join(str(p) for p in ctx.dataset().paths)
    model = vizkit.models.describe(ctx.model)
    text = repr(
        (
            model["spec"],
            model["weights_sha256"],
            ctx.batch_size,
            ctx.preprocess,
            hashlib.sha256(paths.encode()).hexdigest(),
            parts,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _scan(
    ctx: vizkit.RunContext,
    group: ProcessGroup,
    layers: list[str],
    units: dict[str, int],
    k: int,
    bins: int,
    options: dict[str, Any],
) -> tuple[AtlasState, float]:
    dataset = ctx.dataset()
    im = ctx.instrumented
    classes = len(dataset.classes)
    targets = torch.tensor(dataset.targets, dtype=torch.long) if classes else None
    state = AtlasState(layers, units, k, classes, bins)
    deepest = layers[-1]

    def step(images: Tensor, indices: Tensor) -> None:
        x = images.to(ctx.device, ctx.dtype, non_blocking=True)
        with im.configured(layers=layers, switches=False):
            im(x, until=deepest)
            activations = {layer: im.activation(layer) for layer in layers}
        state.update(activations, indices, None if targets is None else targets[indices])

    fingerprint = _fingerprint(ctx, "scan", layers, k, bins, group.world, group.rank)
    seconds = vizkit.toolkit.resumable_scan(
        "atlas",
        dataset,
        ctx.skipped,
        state,
        step,
        fingerprint,
        ctx.out,
        group,
        ctx.batch_size,
        resume=options["resume"],
        checkpoint_every=options["checkpoint_every"],
        checkpoint_seconds=options["checkpoint_seconds"],
        workers=options["workers"],
        progress=ctx.progress,
    )
    return state, seconds


def _winner_arrays(
    topk: vizkit.toolkit.RunningTopK, projected: dict[str, np.ndarray], nonnegative: bool
) -> dict[str, np.ndarray]:
    """The winners' arrays of one layer; a winner of value 0 in a layer that is never negative
    (after a ReLU) is a unit that did not fire on that image: no location, nothing to show."""
    filled = topk.filled()
    values = projected["recomputed"][:, :filled].astype(np.float32)
    images = topk.images[:, :filled].cpu().numpy().copy()
    silent = (values == 0) if nonnegative else np.zeros_like(values, dtype=bool)
    images[silent] = -1
    values = np.where(silent, np.nan, values).astype(np.float32)
    projections = projected["projections"][:, :filled].copy()
    patches = projected["patches"][:, :filled].copy()
    projections[silent] = 0
    patches[silent] = 0
    return {
        "top_values": values,
        "top_images": images,
        "top_position": projected["position"][:, :filled],
        "projections": projections,
        "patches": patches,
    }


def _project(
    ctx: vizkit.RunContext,
    keep: vizkit.toolkit.ResumeFolder,
    layer: str,
    topk: vizkit.toolkit.RunningTopK,
    probe: Tensor,
    patch_size: int,
    rule: vizkit.ProjectionRule,
) -> dict[str, np.ndarray]:
    tag = f"project-{layer}"
    kept = keep.load(tag)
    if kept is not None:
        return {name: value.numpy() for name, value in kept.items()}
    im = ctx.instrumented
    boxes = vizkit.engine.receptive_boxes(im, probe, layer)
    channels = list(range(topk.values.shape[0]))
    projected = vizkit.toolkit.project_winners(
        im,
        ctx.dataset(),
        ctx.preprocess,
        layer,
        channels,
        topk,
        boxes,
        patch_size,
        rule,
        batch_size=ctx.batch_size,
        device=ctx.device,
        progress=ctx.progress,
    )
    position = projected["position"]
    projected["box"] = boxes[position[..., 0], position[..., 1]].numpy()
    keep.save(tag, {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in projected.items()})
    return projected


def _links(
    im: vizkit.Instrumented, probe: Tensor, layers: list[str], units: dict[str, int], state: AtlasState
) -> list[Link]:
    order = execution_order(im, probe)
    links = []
    for below, above in itertools.pairwise(layers):
        joint = joining_layer(im.model, order, below, above, units[below], units[above])
        if joint is not None:
            links.append(Link(below, above, "weights", weight_strength(joint, units[below])))
        else:
            links.append(Link(below, above, "correlation", state.pairs[(below, above)].correlation().float()))
    return links


def _prepare_ablation(ctx: vizkit.RunContext, count: int, source: str | None, outputs: int) -> AblationSet:
    """The held-out images and their model classes, checked before the scan (a class the model
    does not know is refused before any work)."""
    images = ctx.dataset() if source is None else vizkit.data.image_list(source, ctx.preprocess)
    if not images.classes:
        raise vizkit.UsageError("--ablation needs labelled images: an ImageFolder tree (one sub-folder per class)")
    model_classes = model_class_index(images.classes, ctx.labels, outputs)
    chosen = choose_images(images, count, held_out=source is not None)
    return AblationSet(images, chosen, model_classes, source is not None)


def _ablation(
    ctx: vizkit.RunContext,
    keep: vizkit.toolkit.ResumeFolder,
    layers: list[str],
    units: dict[str, int],
    chosen: AblationSet,
) -> tuple[dict[str, Any], dict[str, np.ndarray], float]:
    started = time.perf_counter()
    images = chosen.images
    tensors, kept_positions = [], []
    for batch, where in vizkit.data.read_batches(images, ctx.skipped, chosen.indices, ctx.batch_size):
        tensors.append(batch)
        kept_positions.extend(where.tolist())
    if not tensors:
        raise vizkit.UsageError(
            f"--ablation: none of the {len(chosen.indices)} images chosen from {images.where} is readable"
        )
    x = torch.cat(tensors).to(ctx.device, ctx.dtype)
    data_classes = torch.tensor([images.targets[p] for p in kept_positions], dtype=torch.long)
    targets = torch.tensor(
        [chosen.model_classes[c] for c in data_classes.tolist()], dtype=torch.long, device=ctx.device
    )
    im = ctx.instrumented
    n_classes = len(images.classes)
    base_accuracy, base_loss = baseline(im, x, targets, data_classes, n_classes, ctx.batch_size)
    arrays = {}
    for layer in layers:
        tag = f"ablation-{layer}"
        kept = keep.load(tag)
        if kept is None:
            accuracy, loss = ablate_layer(
                im, layer, units[layer], x, targets, data_classes, n_classes, ctx.batch_size, ctx.progress
            )
            keep.save(tag, {"accuracy": torch.from_numpy(accuracy), "loss": torch.from_numpy(loss)})
        else:
            accuracy, loss = kept["accuracy"].numpy(), kept["loss"].numpy()
        arrays[f"{layer}/ablation_accuracy"] = accuracy
        arrays[f"{layer}/ablation_loss"] = loss
    summary = {
        "images": len(kept_positions),
        "source": images.where,
        "held_out": chosen.held_out,
        "layers": layers,
        "classes": list(images.classes),
        "base_accuracy": [None if np.isnan(a) else float(a) for a in base_accuracy],
        "base_accuracy_mean": float(np.nanmean(base_accuracy)),
        "base_loss": base_loss,
    }
    return summary, arrays, time.perf_counter() - started


def _class_labels(ctx: vizkit.RunContext, classes: list[str], outputs: int) -> list[str]:
    """How pages name each data class: the model's label for it where it has one, else the folder."""
    try:
        index = model_class_index(classes, ctx.labels, outputs) if ctx.labels else None
    except vizkit.UsageError:
        index = None
    if index is None:
        return list(classes)
    return [ctx.label(i) for i in index]


def run(
    ctx: vizkit.RunContext,
    layers: str,
    k: int,
    patch_size: int,
    ablation: int,
    ablation_data: str | None,
    ablation_layers: str | None,
    connections: int,
    bins: int,
    resume: bool,
    checkpoint_every: int,
    checkpoint_seconds: float,
    workers: int,
    rule: str,
) -> vizkit.Result:
    dataset = ctx.dataset()
    im = ctx.instrumented
    projection_rule = ctx.rule(rule)
    names = vizkit.toolkit.parse_layers(layers)
    probe = ctx.first_image(dataset)[0][None].to(ctx.device, ctx.dtype)
    with torch.no_grad():
        outputs = int(im(probe).shape[-1])
    listed, shapes = _layers(im, probe, names)
    units = {layer: shapes[layer][0] for layer in listed}
    ablated = (
        listed
        if ablation_layers is None
        else [im.resolve_alias(n) for n in vizkit.toolkit.parse_layers(ablation_layers)]
    )
    unknown = [layer for layer in ablated if layer not in listed]
    if ablation and unknown:
        raise vizkit.UsageError(f"--ablation-layers names '{unknown[0]}', which is not one of --layers")
    prepared = None
    if ablation:
        for layer in ablated:
            layer_module(im.model, layer)  # refused before the scan, not after it
        prepared = _prepare_ablation(ctx, ablation, ablation_data, outputs)
    group = ProcessGroup.join(ctx.device)
    ctx.device = group.device
    options = {
        "resume": resume,
        "checkpoint_every": checkpoint_every,
        "checkpoint_seconds": checkpoint_seconds,
        "workers": workers,
    }
    try:
        state, seconds_scan = _scan(ctx, group, listed, units, k, bins, options)
        state.merge_shards(group)
        vizkit.toolkit.merge_skipped(ctx.skipped, dataset, group)
    finally:
        group.close()
    if group.rank != 0:  # only rank 0 projects, ablates and writes
        return vizkit.Result(summary={"layers": listed, "rank": group.rank, "seconds_scan": seconds_scan})

    keep = vizkit.toolkit.ResumeFolder(
        ctx.out,
        "atlas",
        _fingerprint(ctx, "after-scan", listed, k, bins, patch_size, rule, ablation, ablation_data, ablated),
        resume,
        kept="projections and ablations",
        differs="other model, data, layers or options",
    )
    started = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    filled = state.topk[listed[0]].filled()  # the same for every layer: one slot per image scanned
    receptive: dict[str, int] = {}
    for layer in listed:
        topk = state.topk[layer]
        projected = _project(ctx, keep, layer, topk, probe, patch_size, projection_rule)
        boxes = projected["box"][:, :filled]
        receptive[layer] = int((boxes[..., 2] - boxes[..., 0]).max()) if boxes.size else 0
        nonnegative = bool(np.nan_to_num(projected["recomputed"]).min() >= 0) if projected["recomputed"].size else True
        for name, value in _winner_arrays(topk, projected, nonnegative).items():
            arrays[f"{layer}/{name}"] = value
        arrays[f"{layer}/top_box"] = boxes
    seconds_project = time.perf_counter() - started

    classes = list(dataset.classes)
    for layer in listed:
        stats = state.stats[layer]
        edges, counts = stats.histogram()
        arrays[f"{layer}/mean"] = stats.mean.float().numpy()
        arrays[f"{layer}/mean_max"] = stats.mean_max.float().numpy()
        arrays[f"{layer}/active_fraction"] = stats.active_fraction.float().numpy()
        arrays[f"{layer}/hist_edges"] = edges.float().numpy()
        arrays[f"{layer}/hist_counts"] = counts.numpy()
        if classes:
            arrays[f"{layer}/class_mean"] = stats.class_mean.float().numpy()
            arrays[f"{layer}/selectivity"] = stats.selectivity().float().numpy()
            arrays[f"{layer}/top_classes"] = stats.top_classes(3).numpy()

    described: dict[str, dict[str, Any]] = {layer: {"prev": None, "next": None} for layer in listed}
    for link in _links(im, probe, listed, units, state):
        up, up_strength = strongest(link.strength.T, connections, by_magnitude=link.kind == "correlation")
        down, down_strength = strongest(link.strength, connections, by_magnitude=link.kind == "correlation")
        arrays[f"{link.above}/prev_units"] = up.numpy()
        arrays[f"{link.above}/prev_strength"] = up_strength.float().numpy()
        arrays[f"{link.below}/next_units"] = down.numpy()
        arrays[f"{link.below}/next_strength"] = down_strength.float().numpy()
        described[link.above]["prev"] = {"layer": link.below, "kind": link.kind}
        described[link.below]["next"] = {"layer": link.above, "kind": link.kind}

    ablation_summary, seconds_ablation = None, 0.0
    if prepared is not None:
        ablation_summary, ablation_arrays, seconds_ablation = _ablation(ctx, keep, ablated, units, prepared)
        arrays.update(ablation_arrays)

    listed_paths = {str(p) for p in dataset.paths}
    readable = len(dataset) - sum(1 for p in ctx.skipped.paths if p in listed_paths)
    if filled < k:
        print(f"atlas: only {filled} images, so {filled} winners per unit instead of --k {k}", file=sys.stderr)
    result = vizkit.Result(
        summary={
            "layers": listed,
            "units": units,
            "spatial": {layer: len(shapes[layer]) == 3 for layer in listed},
            "receptive_field": receptive,
            "images": [str(p) for p in dataset.paths],
            "classes": classes,
            "class_labels": _class_labels(ctx, classes, outputs),
            "k": filled,
            "k_requested": k,
            "n_images": readable,
            "patch_size": patch_size,
            "connections": described,
            "ablation": ablation_summary,
            "seconds_scan": round(seconds_scan, 3),
            "seconds_project": round(seconds_project, 3),
            "seconds_ablation": round(seconds_ablation, 3),
            "processes": group.world,
        },
        arrays=arrays,
    )
    result.figures = {"atlas_overview": overview_figure(listed, arrays, units)}
    if ctx.out is not None:  # kept for --resume until the result is saved
        result.scratch.extend(sorted(ctx.out.glob(".atlas-scan*.pt")))
        if keep.folder is not None:
            result.scratch.append(keep.folder)
    return result
