"""The ``top9`` run: the scan over every process's shard, the projection pass over the winning
images (rank 0), the result's arrays and its pages."""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

import vizkit
from vizkit.toolkit import ProcessGroup

from .figures import _first_layer_filters, figure_pages
from .scan import merge_shards, scan


def _scan_layer(
    ctx: vizkit.RunContext,
    dataset: vizkit.ImageList,
    group: ProcessGroup,
    layer: str,
    channels: str,
    k: int,
    resume: bool,
    checkpoint_every: int,
    workers: int,
    checkpoint_seconds: float,
) -> tuple[torch.Tensor, str, list[int], vizkit.toolkit.RunningTopK, float]:
    """The probe image, ``layer``'s name (an alias resolved), the channels ``--channels`` chose,
    the running top-k merged over every process's shard, and this process's scan seconds."""
    im = ctx.instrumented
    probe = ctx.first_image(dataset)[0][None].to(ctx.device)
    with im.configured(layers=[layer], switches=False):  # the scan records one layer, no switches
        with torch.no_grad():
            activation = im(probe, until=layer)
        if activation is None or activation.dim() < 2:
            raise vizkit.UsageError(f"layer '{layer}' has no feature maps to rank")
        layer = im.resolve_alias(layer)
        chosen = vizkit.toolkit.select_channels(channels, activation.shape[1])
        state, seconds_scan = scan(ctx, layer, chosen, k, resume, checkpoint_every, workers, group, checkpoint_seconds)
    state = merge_shards(state, group)
    vizkit.toolkit.merge_skipped(ctx.skipped, dataset, group)
    return probe, layer, chosen, state, seconds_scan


def _winners(
    state: vizkit.toolkit.RunningTopK, arrays: dict[str, np.ndarray], boxes: torch.Tensor
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """The result's arrays of the winners (``arrays``: :func:`vizkit.toolkit.project_winners`'),
    which of them are silent, and how far the scan's values are from the projection pass's."""
    filled = state.filled()
    scanned = state.values[:, :filled].cpu().numpy().astype(np.float32)
    # reported values come from the projection pass's forward of the winning images, which is
    # the same computation however the scan was batched or sharded; the scan's own values agree
    # to float rounding (max_recompute_error)
    values = arrays["recomputed"][:, :filled].astype(np.float32)
    image_index = state.images[:, :filled].cpu().numpy()
    # after a ReLU, a winner of value 0 is a map that did not fire on that image: no location,
    # nothing to show (a dead map would otherwise get k "winners" with real-looking patches)
    silent = (values == 0) if values.size and float(values.min()) >= 0 else np.zeros_like(values, dtype=bool)
    image_index = np.where(silent, -1, image_index)
    for key in ("projections", "patches"):
        arrays[key] = arrays[key].copy()
        arrays[key][:, :filled][silent] = 0
    position = arrays["position"]
    winners = {
        "values": values,
        "image_index": image_index,
        "position": position,
        "box": boxes[position[..., 0], position[..., 1]].numpy(),
        "projections": arrays["projections"][:, :filled],
        "projection_scale": arrays["projection_scale"][:, :filled],
        "patches": arrays["patches"][:, :filled],
    }
    return winners, silent, float(np.abs(scanned - values).max()) if values.size else 0.0


def run(
    ctx: vizkit.RunContext,
    layer: str,
    channels: str,
    k: int,
    patch_size: int,
    maps_per_page: int,
    pages: int,
    resume: bool,
    checkpoint_every: int,
    checkpoint_seconds: float,
    workers: int,
    rule: str,
) -> vizkit.Result:
    dataset = ctx.dataset()
    group = ProcessGroup.join(ctx.device)
    ctx.device = group.device
    im = ctx.instrumented
    projection_rule = ctx.rule(rule)
    try:
        scanning = (k, resume, checkpoint_every, workers, checkpoint_seconds)
        probe, layer, chosen, state, seconds_scan = _scan_layer(ctx, dataset, group, layer, channels, *scanning)
    finally:
        group.close()
    if group.rank != 0:  # only rank 0 projects and writes
        return vizkit.Result(summary={"layer": layer, "rank": group.rank, "seconds_scan": seconds_scan})
    started = time.perf_counter()
    boxes = vizkit.engine.receptive_boxes(im, probe, layer)
    arrays = vizkit.toolkit.project_winners(
        im,
        dataset,
        ctx.preprocess,
        layer,
        chosen,
        state,
        boxes,
        patch_size,
        projection_rule,
        batch_size=ctx.batch_size,
        device=ctx.device,
        progress=ctx.progress,
    )
    seconds_project = time.perf_counter() - started
    filled = state.filled()
    listed = {str(p) for p in dataset.paths}
    readable = len(dataset) - sum(1 for p in ctx.skipped.paths if p in listed)
    if filled < k:
        print(f"top9: only {filled} images, so {filled} winners per map instead of --k {k}", file=sys.stderr)
    winners, silent, recompute_error = _winners(state, arrays, boxes)
    values = winners["values"]
    filters = _first_layer_filters(ctx, layer, probe)
    result = vizkit.Result(
        summary={
            "layer": layer,
            "channels": chosen,
            "k": filled,
            "k_requested": k,
            "silent_maps": [c for c, row in zip(chosen, silent) if row.size and row.all()],
            "images": [str(p) for p in dataset.paths],  # image_index points here; skipped files never win
            "n_images": readable,  # the readable ones
            "seconds_scan": round(seconds_scan, 3),
            "seconds_project": round(seconds_project, 3),
            "processes": group.world,
            "receptive_field": int((boxes[..., 2] - boxes[..., 0]).max()),
            "first_layer_filters": filters is not None,
            "max_recompute_error": recompute_error,
        },
        arrays=winners,
    )
    result.figures = figure_pages(layer, chosen, values, result.arrays, filters, maps_per_page, pages, readable)
    if ctx.out is not None:  # kept for --resume until the result is saved
        result.scratch.extend(sorted(ctx.out.glob(".top9-scan*.pt")))
    return result
