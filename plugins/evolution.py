"""The ``evolution`` analysis: how features develop during training (paper Fig. 4).

For a training run written by ``vizkit train`` (``--run DIR``: its ``run.json`` and the weight
snapshots ``weights_epochNNN.pt`` kept at the snapshot epochs), and for a chosen subset of
feature maps per layer: at every snapshot, the single strongest activation of each map over a
fixed sample of training images and its deconvnet projection. The figure has a block per layer,
rows = feature maps, columns = epochs, as in the paper (whose lower layers settle within a few
epochs while the upper ones only develop after 40-50).

The maps are picked at random (``--seed``) among those active at the last snapshot, so that no
row is blank by construction. Each snapshot's result is kept in ``--out`` as it is finished, so an
interrupted run continues with ``--resume`` without redoing finished snapshots. Unreadable files
in the sample are skipped (counted in result.json; the sample is that much smaller) or, with
``--strict``, stop the run.
"""

from __future__ import annotations

import hashlib
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import vizkit
from vizkit import ImageList
from vizkit.data import image_list
from vizkit.framework import save_torch_atomic
from vizkit.models import apply_state_dict, read_state_dict, sha256_file
from vizkit.toolkit import read_run_info, snapshot_paths
from vizkit.toolkit.figures import new_figure, tile_mosaic

if TYPE_CHECKING:  # only an annotation: matplotlib loads when a figure is drawn
    from matplotlib.figure import Figure

ZF_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
CACHE_VERSION = 1


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


@dataclass
class ScanCheckpoint:
    """Where the scan of one snapshot keeps its partial state (``cache`` under ``tag``), how often
    it writes it (``seconds``), and the stop request it obeys between two batches."""

    cache: SnapshotCache
    tag: str
    seconds: float
    stop: vizkit.toolkit.StopRequest


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


class SnapshotCache:
    """One file per finished snapshot in ``out/.evolution``, valid only for the same run settings."""

    def __init__(self, out: Path | None, fingerprint: str, resume: bool) -> None:
        self.folder = out / ".evolution" if out is not None else None
        self.fingerprint = fingerprint
        if resume and self.folder is None:
            raise vizkit.UsageError("--resume needs --out (finished snapshots are kept there)")
        if not resume and self.folder is not None and self.folder.exists():
            stale = sorted(self.folder.glob("*.pt"))
            if stale:
                print(
                    f"evolution: discarding the interrupted run's snapshots in {self.folder} (pass --resume to continue it)",
                    file=sys.stderr,
                )
            for path in stale:
                path.unlink()

    def _path(self, tag: str) -> Path | None:
        return self.folder / f"{tag}.pt" if self.folder is not None else None

    def load(self, tag: str) -> dict | None:
        path = self._path(tag)
        if path is None or not path.exists():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("version") != CACHE_VERSION or saved.get("fingerprint") != self.fingerprint:
            raise vizkit.UsageError(
                f"{path} belongs to a different evolution run (other run, layers, sample or options); drop --resume"
            )
        return saved["data"]

    def save(self, tag: str, data: dict) -> None:
        path = self._path(tag)
        if path is None:
            return
        save_torch_atomic(path, {"version": CACHE_VERSION, "fingerprint": self.fingerprint, "data": data})

    def drop(self, tag: str) -> None:
        path = self._path(tag)
        if path is not None:
            path.unlink(missing_ok=True)

    def stopped(self, stop: vizkit.toolkit.StopRequest, where: str) -> None:
        """Say what an interrupted run keeps for --resume, and stop (KeyboardInterrupt)."""
        kept = (
            f"finished work is kept in {self.folder}" if self.folder is not None else "nothing is kept (no out folder)"
        )
        print(f"evolution: {stop.signal_name} received; {where}; {kept}", file=sys.stderr)
        raise KeyboardInterrupt(stop.signal_name)


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
    progress = vizkit.toolkit.progress_bar(total=len(snapshots), desc="evolution snapshots", enabled=ctx.progress)
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
    result.figures["evolution"] = evolution_figure(layers, channels, epochs, projections, len(images) - unreadable)
    result.figures["evolution_strength"] = strength_figure(layers, channels, epochs, values)
    return result


MAX_WIDTH_INCHES = 20.0  # vizkit's figure cap: tiles shrink (down to MIN_TILE_INCHES) to stay within it
TILE_INCHES, MIN_TILE_INCHES = 0.55, 0.22
LABEL_FONT = 7  # points, the row (map) and column (epoch) labels
LEGEND_MAPS = 12  # the strength figure names the maps in a legend up to this many per layer


def evolution_figure(
    layers: list[str], channels: np.ndarray, epochs: list[int], projections: np.ndarray, n_images: int
) -> Figure:
    """Paper Fig. 4: a block per layer, rows = its maps, columns = snapshot epochs.

    Every block has the same tile size and is placed at explicit positions in inches, with a
    margin sized to its longest row label ("map 123") on its left, so labels never run into the
    neighbouring block whatever the number of maps or epochs (a grid of equal cells let the
    labels of one layer cover the tiles of the previous one when tiles were large). Tiles shrink
    to keep the figure within ``MAX_WIDTH_INCHES`` when there are many epochs and layers.
    """
    cols, size, gap = len(epochs), projections.shape[-1], 2
    counts = [int((channels[l] >= 0).sum()) for l in range(len(layers))]
    labels = [[f"map {int(m)}" for m in channels[l, : counts[l]]] for l in range(len(layers))]
    longest = max((len(text) for row in labels for text in row), default=5)
    label_w = 0.12 + 0.62 * LABEL_FONT / 72 * longest  # a generous estimate of the label width
    block_gap, side_margin = 0.25, 0.15
    fixed_w = 2 * side_margin + len(layers) * (label_w + block_gap)
    mosaic_w = cols * size + (cols - 1) * gap  # pixels of the tile mosaic
    tile = max(MIN_TILE_INCHES, min(TILE_INCHES, (MAX_WIDTH_INCHES - fixed_w) * size / (len(layers) * mosaic_w)))
    scale = tile / size  # inches per mosaic pixel
    block_w = mosaic_w * scale
    tallest = max(counts, default=1)
    blocks_h = max(1, tallest) * size * scale + max(0, tallest - 1) * gap * scale
    width = max(6.0, fixed_w + len(layers) * block_w)
    title = "\n".join(
        textwrap.fill(line, width=max(40, int(width * 12)))
        for line in (
            "Feature evolution during training",
            f"each map's strongest activation over {n_images} training images, projected to pixels, per snapshot",
        )
    )
    top = 0.25 + 0.17 * (title.count("\n") + 1) + 0.3  # the title's lines, then the layer names
    bottom = 0.45  # epoch numbers and the "epoch" label
    height = top + blocks_h + bottom
    figure = new_figure(width, height)
    x = side_margin
    for l, layer in enumerate(layers):
        x += label_w
        count = counts[l]
        block_h = max(1, count) * size * scale + max(0, count - 1) * gap * scale
        ax = figure.add_axes((x / width, (height - top - block_h) / height, block_w / width, block_h / height))
        x += block_w + block_gap
        ax.set_title(layer, fontsize=9)
        ax.tick_params(length=0)
        if count == 0:  # no map of this layer was active at the last snapshot
            ax.set_xticks([]), ax.set_yticks([])
            ax.text(0.5, 0.5, "no active\nmaps", ha="center", va="center", fontsize=LABEL_FONT, transform=ax.transAxes)
            continue
        flat = torch.from_numpy(projections[l, :count].reshape(-1, 3, size, size).astype(np.float32))
        # [maps x epochs, P, P, 3], row by row
        shown = vizkit.to_image(flat, channels_last=False).permute(0, 2, 3, 1).numpy()
        ax.imshow(tile_mosaic(shown, rows=count, gap=gap), interpolation="nearest")
        step = size + gap
        ax.set_xticks([c * step + size / 2 for c in range(cols)], [str(e) for e in epochs], fontsize=LABEL_FONT - 1)
        ax.set_yticks([r * step + size / 2 for r in range(count)], labels[l], fontsize=LABEL_FONT)
        ax.set_xlabel("epoch", fontsize=LABEL_FONT, labelpad=2)
    figure.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
    return figure


def strength_figure(layers: list[str], channels: np.ndarray, epochs: list[int], values: np.ndarray):
    figure = new_figure(max(6.0, 2.6 * len(layers)), 2.8)
    for l, layer in enumerate(layers):
        ax = figure.add_subplot(1, len(layers), l + 1)
        count = int((channels[l] >= 0).sum())
        for m in range(count):
            ax.plot(epochs, values[l, m], marker="o", markersize=3, linewidth=1, label=f"map {channels[l, m]}")
        ax.set_xscale("log")
        ax.set_xticks(epochs, [str(e) for e in epochs], fontsize=6)
        ax.minorticks_off()
        ax.set_xlabel("epoch", fontsize=7)
        if l == 0:
            ax.set_ylabel("strongest activation", fontsize=7)
        ax.tick_params(labelsize=6)
        if count == 0:  # no map of this layer was active at the last snapshot
            ax.set_xticks([]), ax.set_yticks([])
            ax.text(0.5, 0.5, "no active maps", ha="center", va="center", fontsize=7, transform=ax.transAxes)
        ax.set_title(layer if count <= LEGEND_MAPS else f"{layer} ({count} maps)", fontsize=9)
        if 0 < count <= LEGEND_MAPS:  # a longer legend would cover the plot and push the figure out of shape
            ax.legend(fontsize=5, loc="best", ncol=2, frameon=False)
    figure.suptitle("Strongest activation of each chosen map over the sample, per snapshot", fontsize=9)
    figure.tight_layout()
    return figure


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="evolution",
            description="Feature evolution during training: strongest activation per map at each snapshot epoch, projected (Fig. 4)",
            run=run,
            inputs="none",
            model_from=model_of_run,
            options=[
                vizkit.Option(
                    "run",
                    str,
                    required=True,
                    help="training run folder written by `vizkit train` (run.json + weights_epochNNN.pt)",
                ),
                vizkit.Option(
                    "layers", str, multiple=True, help="layers to follow (default: conv1..conv5); repeat the option"
                ),
                vizkit.Option(
                    "maps",
                    int,
                    6,
                    help="feature maps per layer, picked at random among those active at the last snapshot",
                    minimum=1,
                ),
                vizkit.Option(
                    "sample",
                    int,
                    512,
                    help="training images in the fixed sample (default source: the run's train/ folder)",
                    minimum=1,
                ),
                vizkit.Option("epochs", str, "all", help="snapshot epochs to show: all, or e.g. 1,5,20"),
                vizkit.Option("patch_size", int, 48, help="side of each projection tile", minimum=8, maximum=1024),
                vizkit.Option("rule", str, "deconvnet", registry="rules", help="projection rule"),
                vizkit.Option(
                    "resume", bool, False, help="reuse the snapshots an interrupted run finished (kept in --out)"
                ),
                vizkit.Option(
                    "checkpoint_seconds",
                    float,
                    60.0,
                    help="inside a snapshot, keep the scan's progress in --out this often (SIGINT/SIGTERM also keep it)",
                    minimum=0,
                ),
            ],
            demo={"run": "{train_run}", "sample": 32, "maps": 3},  # skipped by vizkit demo without a training run
            demo_quick={"sample": 16, "maps": 2},
        )
    )
