"""The ``evolution`` run: the training run's snapshots and a fixed sample of its images, the
snapshots projected one after the other into the caller's model, the result and its figures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

import vizkit
from vizkit import ImageList
from vizkit.data import image_list
from vizkit.models import apply_state_dict, read_state_dict, sha256_file
from vizkit.toolkit import read_run_info, snapshot_paths

from .cache import SnapshotCache
from .figures import evolution_figure, strength_figure
from .scan import _project_snapshots

ZF_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def model_of_run(options: dict) -> str:
    """The architecture a training run recorded (``model`` in its run.json)."""
    return read_run_info(options["run"])["model"]


def default_layers(im: vizkit.Instrumented) -> list[str]:
    found = [name for name in ZF_LAYERS if name in im.layers]
    if not found:
        raise vizkit.UsageError("this model has no conv1..conv5 blocks; pass --layers (see `vizkit layers`)")
    return found


def training_sample(ctx: vizkit.RunContext, info: dict, size: int) -> ImageList:
    """A fixed sample of training images: --data if given, else the run's train/ folder."""
    if ctx.data is not None:
        source = ctx.data
    else:
        train = Path(info["data"]) / "train"
        if not train.is_dir():
            raise vizkit.UsageError(
                f"the run's training images ({train}) are not here; pass --data with a sample of them"
            )
        source = image_list(train, ctx.preprocess)
    count = min(size, len(source))
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(ctx.seed))[:count].sort().values
    paths = [source.paths[int(i)] for i in order]
    return ImageList(paths, preprocess=ctx.preprocess, source=source.where)


def pick_epochs(available: dict[int, Path], spec: str) -> dict[int, Path]:
    if spec == "all":
        return available
    try:
        wanted = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise vizkit.UsageError(f"--epochs expects 'all' or e.g. 1,5,20; not '{spec}'") from None
    missing = [e for e in wanted if e not in available]
    if missing:
        raise vizkit.UsageError(f"no snapshot for epoch {missing[0]} (snapshots: {', '.join(map(str, available))})")
    return {e: available[e] for e in sorted(set(wanted))}


def run(
    ctx: vizkit.RunContext,
    run: str,
    layers: tuple[str, ...],
    maps: int,
    sample: int,
    epochs: str,
    patch_size: int,
    rule: str,
    resume: bool,
    checkpoint_seconds: float,
) -> vizkit.Result:
    info = read_run_info(run)
    snapshots = pick_epochs(snapshot_paths(run), epochs)
    if not snapshots:
        raise vizkit.UsageError(f"{run} holds no weight snapshots (weights_epochNNN.pt); train with --snapshot-epochs")
    im = ctx.instrumented
    images = training_sample(ctx, info, sample)
    probe = ctx.first_image(images)[0][None].to(ctx.device)
    with im.configured(layers=None), torch.no_grad():
        im(probe)  # learns the layer names
    names = [im.resolve_alias(n) for n in layers] if layers else default_layers(im)
    for name in names:
        im.info(name)  # unknown layers fail here, with the list of valid ones
    names = sorted(set(names), key=im.layers.index)
    fingerprint = hashlib.sha256(
        repr(
            (
                [sha256_file(p) for p in snapshots.values()],
                names,
                maps,
                [str(p) for p in images.paths],
                patch_size,
                rule,
                ctx.seed,
                ctx.preprocess,
            )
        ).encode()
    ).hexdigest()
    cache = SnapshotCache(ctx.out, fingerprint, resume)

    def load_snapshot(epoch: int) -> None:
        apply_state_dict(ctx.model, read_state_dict(snapshots[epoch]), str(snapshots[epoch]))

    # the snapshots are loaded into the caller's model one after the other: its own weights
    # come back at the end, also on error or interruption
    original = {name: value.detach().clone() for name, value in ctx.model.state_dict().items()}
    try:
        with vizkit.toolkit.deferred_interrupts() as stop:  # a signal stops between two batches or snapshots
            chosen, per_epoch = _project_snapshots(
                ctx,
                cache,
                snapshots,
                load_snapshot,
                images,
                names,
                maps,
                probe,
                patch_size,
                rule,
                checkpoint_seconds,
                stop,
            )
    finally:
        ctx.model.load_state_dict(original)
    unreadable = sum(1 for p in images.paths if p in ctx.skipped)
    result = assemble(run, info, names, chosen, per_epoch, images, patch_size, unreadable)
    last = max(snapshots)
    # the figures show the snapshots, so result.json names the last one's weights, not the model's own
    result.meta["model"] = vizkit.models.describe(ctx.model, weights=snapshots[last])
    if cache.folder is not None:  # kept for --resume until the result is saved
        result.scratch.append(cache.folder)
    return result


def assemble(
    run: str,
    info: dict,
    layers: list[str],
    chosen: dict[str, list[int]],
    per_epoch: dict[int, dict],
    images: ImageList,
    patch_size: int,
    unreadable: int = 0,
) -> vizkit.Result:
    epochs = sorted(per_epoch)
    width = max(len(chosen[layer]) for layer in layers)
    shape = (len(layers), width, len(epochs))
    channels = np.full((len(layers), width), -1, dtype=np.int64)
    values = np.full(shape, np.nan, dtype=np.float32)
    image = np.full(shape, -1, dtype=np.int64)
    position = np.zeros((*shape, 2), dtype=np.int64)
    projections = np.zeros((*shape, 3, patch_size, patch_size), dtype=np.float16)
    patches = np.zeros((*shape, patch_size, patch_size, 3), dtype=np.uint8)
    for l, layer in enumerate(layers):
        count = len(chosen[layer])
        channels[l, :count] = chosen[layer]
        for e, epoch in enumerate(epochs):
            done = per_epoch[epoch][layer]
            values[l, :count, e] = done["values"].numpy()
            image[l, :count, e] = done["image"].numpy()
            position[l, :count, e] = done["position"].numpy()
            projections[l, :count, e] = done["projection"].numpy()
            patches[l, :count, e] = done["patch"].numpy()
    settled = {}
    for l, layer in enumerate(layers):
        count = len(chosen[layer])
        # the first snapshot from which a map's winning image no longer changes
        firsts = []
        for m in range(count):
            e = len(epochs) - 1
            while e > 0 and image[l, m, e - 1] == image[l, m, -1]:
                e -= 1
            firsts.append(epochs[e])
        # one snapshot shows no change to settle from: no settled epoch, rather than a vacuous first one
        settled[layer] = float(np.median(firsts)) if firsts and len(epochs) > 1 else None
    result = vizkit.Result(
        summary={
            "run": str(run),
            "run_model": info.get("model"),
            "epochs": epochs,
            "layers": layers,
            "channels": {layer: chosen[layer] for layer in layers},
            "sample_images": len(images) - unreadable,  # the readable ones
            "images": [str(p) for p in images.paths],
            "median_settled_epoch": settled,
            "winner_changes": {  # None for a layer with no chosen map (no mean to take)
                layer: (
                    float(
                        np.mean([int((image[l, m, 1:] != image[l, m, :-1]).sum()) for m in range(len(chosen[layer]))])
                    )
                    if chosen[layer]
                    else None
                )
                for l, layer in enumerate(layers)
            },
        },
        arrays={
            "epochs": np.array(epochs),
            "channels": channels,
            "values": values,
            "image_index": image,
            "position": position,
            "projections": projections,
            "patches": patches,
        },
    )
    result.figures["evolution"] = evolution_figure(
        layers, channels, epochs, projections, len(images) - unreadable, values=values
    )
    result.figures["evolution_strength"] = strength_figure(layers, channels, epochs, values)
    return result
