"""Each snapshot's scan (every map's strongest activation over the sample), the maps chosen
at the last snapshot, and the projections of their winners at every snapshot."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

import vizkit
from vizkit import ImageList

from .cache import ScanCheckpoint, SnapshotCache


def scan(
    ctx: vizkit.RunContext, sample: ImageList, layers: list[str], checkpoint: ScanCheckpoint | None = None
) -> dict[str, vizkit.toolkit.RunningTopK]:
    """Per layer, each map's strongest activation (k=1) over the sample.

    With ``checkpoint``, the scan continues from the partial state kept there, writes it every
    ``checkpoint.seconds`` and, when a stop is requested, writes it and stops (KeyboardInterrupt)."""
    im = ctx.instrumented
    deepest = layers[-1]
    states: dict[str, vizkit.toolkit.RunningTopK] = {}
    partial = checkpoint.cache.load(checkpoint.tag) if checkpoint is not None else None
    start = int(partial["next_batch"]) if partial is not None else 0
    if partial is not None:
        states = {
            layer: vizkit.toolkit.RunningTopK.from_state_dict(state, ctx.device)
            for layer, state in partial["states"].items()
        }
        ctx.skipped.load_state_dict(partial.get("skipped", []))
    rows = range(start * ctx.batch_size, len(sample))  # the batches of an uninterrupted scan, from ``start`` on
    # (images, indices) per batch, unreadable files left out (an all-unreadable batch comes empty)
    loader = vizkit.data.read_batches(sample, ctx.skipped, rows, ctx.batch_size, keep_empty=True)
    total = start + -(-len(rows) // ctx.batch_size)
    last_save = time.monotonic()
    with im.configured(layers=layers, switches=False), torch.no_grad():
        for number, (images, indices) in enumerate(loader, start=start):
            if len(indices):
                im(images.to(ctx.device), until=deepest)
            for layer in layers if len(indices) else ():
                activation = im.activation(layer)
                if layer not in states:
                    states[layer] = vizkit.toolkit.RunningTopK.empty(activation.shape[1], 1, ctx.device)
                states[layer].update(activation, indices)
            if checkpoint is None:
                continue
            if checkpoint.stop.requested or time.monotonic() - last_save >= checkpoint.seconds:
                saved = {layer: state.state_dict() for layer, state in states.items()}
                checkpoint.cache.save(
                    checkpoint.tag, {"next_batch": number + 1, "states": saved, "skipped": ctx.skipped.state_dict()}
                )
                last_save = time.monotonic()
            if checkpoint.stop.requested:
                checkpoint.cache.stopped(
                    checkpoint.stop, f"a snapshot's scan stopped after batch {number + 1} of {total}"
                )
    return states


def choose_maps(states: dict[str, vizkit.toolkit.RunningTopK], count: int, seed: int) -> dict[str, list[int]]:
    chosen = {}
    generator = torch.Generator().manual_seed(seed)
    for layer, state in states.items():
        active = torch.nonzero(state.values[:, 0].cpu() > 0).flatten()
        order = torch.randperm(active.numel(), generator=generator)[:count]
        chosen[layer] = sorted(int(active[i]) for i in order)
    return chosen


def _no_maps(patch_size: int) -> dict[str, torch.Tensor]:
    """A snapshot's entry for a layer with no chosen map (the shapes of a projected one, 0 rows)."""
    return {
        "values": torch.zeros(0),
        "image": torch.zeros(0, dtype=torch.long),
        "position": torch.zeros(0, 2, dtype=torch.long),
        "projection": torch.zeros(0, 3, patch_size, patch_size, dtype=torch.float16),
        "patch": torch.zeros(0, patch_size, patch_size, 3, dtype=torch.uint8),
    }


def _select(state: vizkit.toolkit.RunningTopK, channels: list[int]) -> vizkit.toolkit.RunningTopK:
    index = torch.tensor(channels, dtype=torch.long, device=state.values.device)
    return vizkit.toolkit.RunningTopK(state.values[index], state.images[index], state.positions[index])


def _strongest_winners(
    ctx: vizkit.RunContext,
    images: ImageList,
    layer: str,
    channels: list[int],
    state: vizkit.toolkit.RunningTopK,
    boxes: torch.Tensor,
    patch_size: int,
    rule: vizkit.ProjectionRule,
) -> dict[str, torch.Tensor]:
    """One snapshot's strongest winner of each chosen map of ``layer``: its value, image,
    position, projection (fp16) and patch."""
    if not channels:  # no map of it was active at the last snapshot: nothing to project
        return _no_maps(patch_size)
    state = _select(state, channels)
    arrays = vizkit.toolkit.project_winners(
        ctx.instrumented,
        images,
        ctx.preprocess,
        layer,
        channels,
        state,
        boxes,
        patch_size,
        rule,
        batch_size=ctx.batch_size,
        device=ctx.device,
    )
    return {
        "values": torch.from_numpy(arrays["recomputed"][:, 0]),
        "image": state.images[:, 0].cpu(),
        "position": torch.from_numpy(arrays["position"][:, 0]),
        "projection": torch.from_numpy(arrays["projections"][:, 0].astype(np.float32)).half(),
        "patch": torch.from_numpy(arrays["patches"][:, 0]),
    }


def _project_snapshots(
    ctx: vizkit.RunContext,
    cache: SnapshotCache,
    snapshots: dict[int, Path],
    load_snapshot,
    images: ImageList,
    names: list[str],
    maps: int,
    probe: torch.Tensor,
    patch_size: int,
    rule: str,
    checkpoint_seconds: float = 60.0,
    stop: vizkit.toolkit.StopRequest | None = None,
) -> tuple[dict[str, list[int]], dict[int, dict]]:
    """The maps chosen per layer, and each snapshot's winners and projections (cached per
    snapshot for --resume; a snapshot's scan also every ``checkpoint_seconds`` and on ``stop``)."""
    stop = stop or vizkit.toolkit.StopRequest()

    def checkpoint(epoch: int) -> ScanCheckpoint:
        return ScanCheckpoint(cache, f"scan{epoch:03d}", checkpoint_seconds, stop)

    im = ctx.instrumented
    projection_rule = ctx.rule(rule)
    last = max(snapshots)
    last_states = None  # the choice's scan of the last snapshot, reused for its column
    choice = cache.load("choice")
    if choice is None:
        load_snapshot(last)
        last_states = scan(ctx, images, names, checkpoint(last))
        # the unreadable files of the sample are all met by this first scan: kept for a resume
        choice = {"channels": choose_maps(last_states, maps, ctx.seed), "skipped": ctx.skipped.state_dict()}
        cache.save("choice", choice)
        cache.drop(f"scan{last:03d}")
    chosen: dict[str, list[int]] = choice["channels"]
    inactive = [layer for layer in names if not chosen[layer]]
    if inactive:
        print(
            f"evolution: no map of {', '.join(inactive)} is active (above 0) on the sample at the last snapshot "
            f"(epoch {last}); its block is left empty",
            file=sys.stderr,
        )
    ctx.skipped.load_state_dict(choice.get("skipped", []))
    boxes = {layer: vizkit.engine.receptive_boxes(im, probe, layer) for layer in names}
    per_epoch = {}
    progress = vizkit.toolkit.progress_bar(
        total=len(snapshots), desc="evolution", unit="snapshots", enabled=ctx.progress
    )
    for epoch in snapshots:
        done = cache.load(f"epoch{epoch:03d}")
        if done is None:
            load_snapshot(epoch)
            states = (
                last_states
                if epoch == last and last_states is not None
                else scan(ctx, images, names, checkpoint(epoch))
            )
            done = {
                layer: _strongest_winners(
                    ctx, images, layer, chosen[layer], states[layer], boxes[layer], patch_size, projection_rule
                )
                for layer in names
            }
            cache.save(f"epoch{epoch:03d}", done)
            cache.drop(f"scan{epoch:03d}")
        per_epoch[epoch] = done
        progress.update(1)
        if stop.requested:
            progress.close()
            cache.stopped(stop, f"stopped after snapshot epoch {epoch} ({len(per_epoch)} of {len(snapshots)} done)")
    progress.close()
    return chosen, per_epoch
