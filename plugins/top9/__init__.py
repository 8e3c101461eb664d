"""The ``top9`` analysis: the strongest activations of feature maps across a dataset (paper Fig. 2).

Scan pass: one pass over ``--data`` keeps, per feature map, the k strongest activations with at
most one per image (the image's strongest location in that map), as a running top-k: memory is
O(maps x k) whatever the dataset size. It checkpoints every ``--checkpoint-every`` batches into
``--out``; ``--resume`` continues from there. Under ``torchrun`` each process scans a shard and
the per-process top-k are merged (ties go to the smaller image index, so the result is the
single-process one). Unreadable files in ``--data`` are skipped (never a winner; their count goes
to result.json, also across a resume and across processes) or, with ``--strict``, stop the scan.

Projection pass: only the winning images are run again, each once for all the maps that chose
it; each winning activation is projected with the deconvnet using that image's own switches,
and the image patch under its receptive field is cut out.

Report: a unit browser of every map's card (:mod:`.view`, its script and style sheet beside it).
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vizkit
from vizkit.framework import save_torch_atomic
from vizkit.toolkit import ProcessGroup
from vizkit.toolkit.figures import new_figure, tile_mosaic

from .view import report_view

CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------------------------ scan pass
def _fingerprint(ctx: vizkit.RunContext, layer: str, channels: list[int], k: int, group: ProcessGroup) -> str:
    paths = "\n".join(str(p) for p in ctx.dataset().paths)
    model = vizkit.models.describe(ctx.model)
    text = repr(
        (
            model["spec"],
            model["weights_sha256"],
            layer,
            channels,
            k,
            ctx.batch_size,
            ctx.preprocess,
            group.world,
            group.rank,
            hashlib.sha256(paths.encode()).hexdigest(),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _checkpoint_path(ctx: vizkit.RunContext, group: ProcessGroup) -> Path | None:
    if ctx.out is None:
        return None
    suffix = f".rank{group.rank}of{group.world}" if group.world > 1 else ""
    return ctx.out / f".top9-scan{suffix}.pt"


def _save_checkpoint(
    path: Path | None,
    state: vizkit.toolkit.RunningTopK,
    next_batch: int,
    done: bool,
    fingerprint: str,
    seconds: float,
    skipped: vizkit.data.SkippedImages | None = None,
) -> None:
    if path is None:
        return
    save_torch_atomic(
        path,
        {
            "version": CHECKPOINT_VERSION,
            "fingerprint": fingerprint,
            "next_batch": next_batch,
            "done": done,
            "seconds": seconds,
            "state": state.state_dict(),
            # the unreadable files met so far: reported after a resume too
            "skipped": skipped.state_dict() if skipped is not None else [],
        },
    )


def scan_batches(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]], start: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(batch number, images, image indices) from batch ``start`` on (a seam for tests); a batch
    whose every file was unreadable comes as empty tensors, so the numbers stay in step."""
    for number, (images, indices) in enumerate(loader, start=start):
        yield number, images, indices


def _starting_point(
    ctx: vizkit.RunContext, path: Path | None, resume: bool, fingerprint: str, channels: int, k: int
) -> tuple[vizkit.toolkit.RunningTopK, int, float, bool]:
    """Where the scan starts: with ``resume``, the checkpoint's state, next batch, seconds so far
    and whether it finished; else an empty state at batch 0 (a checkpoint there is discarded)."""
    if resume and path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("version") != CHECKPOINT_VERSION or saved.get("fingerprint") != fingerprint:
            raise vizkit.UsageError(
                f"{path} is a checkpoint of a different run (model, layer, channels, k, batch size or data differ); drop --resume"
            )
        state = vizkit.toolkit.RunningTopK.from_state_dict(saved["state"], ctx.device)
        ctx.skipped.load_state_dict(saved.get("skipped", []))
        return state, int(saved["next_batch"]), float(saved["seconds"]), bool(saved["done"])
    if resume and path is None:
        raise vizkit.UsageError("--resume needs --out (the checkpoint lives there)")
    if not resume and path is not None and path.exists():
        print(f"top9: discarding the interrupted scan in {path} (pass --resume to continue it)", file=sys.stderr)
        path.unlink()
    return vizkit.toolkit.RunningTopK.empty(channels, k, ctx.device), 0, 0.0, False


def _remove_started(ctx: vizkit.RunContext, path: Path | None, resumed: bool, made_out: bool) -> None:
    """The checkpoint this run started (not one it resumed), and the out folder it made if nothing
    else is in it."""
    if path is None or resumed:
        return
    path.unlink(missing_ok=True)
    if made_out and ctx.out is not None and ctx.out.is_dir() and not any(ctx.out.iterdir()):
        ctx.out.rmdir()


def _stop_if_requested(
    stop: Any, save: Callable[[], None], progress: Any, path: Path | None, next_batch: int, total: int
) -> None:
    """When SIGINT or SIGTERM came (``stop``, :func:`vizkit.toolkit.deferred_interrupts`): the
    checkpoint saved and the scan stopped, with a line saying where it stopped (KeyboardInterrupt)."""
    if not stop.requested:
        return
    save()
    progress.close()
    where = f"checkpoint saved in {path}" if path is not None else "nothing saved (no out folder)"
    print(
        f"top9: {stop.signal_name} received; scan stopped after batch {next_batch} of {total}, {where}", file=sys.stderr
    )
    raise KeyboardInterrupt(stop.signal_name)


def scan(
    ctx: vizkit.RunContext,
    layer: str,
    channels: list[int],
    k: int,
    resume: bool,
    checkpoint_every: int,
    workers: int,
    group: ProcessGroup,
    checkpoint_seconds: float = 60.0,
) -> tuple[vizkit.toolkit.RunningTopK, float]:
    """The running top-k of ``channels`` of ``layer`` over this process's shard of the data.

    The checkpoint is written every ``checkpoint_every`` batches and whenever
    ``checkpoint_seconds`` have passed since the last one; SIGINT or SIGTERM finish the batch,
    write it and stop (KeyboardInterrupt)."""
    im = ctx.instrumented
    dataset = ctx.dataset()
    fingerprint = _fingerprint(ctx, layer, channels, k, group)
    path = _checkpoint_path(ctx, group)
    state, start_batch, seconds, done = _starting_point(ctx, path, resume, fingerprint, len(channels), k)
    if done:
        return state, seconds
    resumed = path is not None and path.exists()  # (a checkpoint not resumed was discarded above)
    made_out = ctx.out is not None and not ctx.out.exists()
    shard = list(range(group.rank, len(dataset), group.world))[start_batch * ctx.batch_size :]
    # unreadable files are left out of their batch and recorded in ctx.skipped (--strict: raised)
    loader = vizkit.data.read_batches(dataset, ctx.skipped, shard, ctx.batch_size, workers, keep_empty=True)
    selected = torch.tensor(channels, device=ctx.device)
    total = math.ceil(len(shard) / ctx.batch_size) + start_batch
    started = time.perf_counter()
    progress = vizkit.toolkit.progress_bar(
        total=total, initial=start_batch, desc=f"top9 scan {layer}", enabled=ctx.progress
    )
    next_batch, consistent, last_save = start_batch, True, time.monotonic()

    def save() -> None:
        _save_checkpoint(
            path, state, next_batch, False, fingerprint, seconds + time.perf_counter() - started, ctx.skipped
        )

    try:
        with torch.no_grad(), vizkit.toolkit.deferred_interrupts() as stop:
            for number, images, indices in scan_batches(loader, start_batch):
                if len(indices):  # else every file of the batch was unreadable
                    activation = im(images.to(ctx.device, non_blocking=True), until=layer)
                    consistent = False  # stopped inside the update, the state is half of one batch: not saved
                    state.update(activation.index_select(1, selected), indices)
                next_batch, consistent = number + 1, True
                progress.update(1)
                _stop_if_requested(stop, save, progress, path, next_batch, total)
                due = checkpoint_every > 0 and next_batch % checkpoint_every == 0
                if due or time.monotonic() - last_save >= checkpoint_seconds:
                    save()
                    last_save = time.monotonic()
            _stop_if_requested(stop, save, progress, path, next_batch, total)  # a signal after the last check
    except vizkit.data.UnreadableImage:  # --strict met a bad file: leave nothing this run started behind
        _remove_started(ctx, path, resumed, made_out)
        raise
    except BaseException:
        if consistent:
            save()
        raise
    finally:
        progress.close()
    seconds += time.perf_counter() - started
    _save_checkpoint(path, state, next_batch, True, fingerprint, seconds, ctx.skipped)
    return state, seconds


def merge_shards(state: vizkit.toolkit.RunningTopK, group: ProcessGroup) -> vizkit.toolkit.RunningTopK:
    if group.world == 1:
        return state
    merged = vizkit.toolkit.RunningTopK.empty(state.values.shape[0], state.k, "cpu")
    for values, images, positions in zip(
        group.all_gather(state.values), group.all_gather(state.images), group.all_gather(state.positions)
    ):
        merged.merge(values, images, positions)
    return merged


def merge_skipped(ctx: vizkit.RunContext, dataset: vizkit.ImageList, group: ProcessGroup) -> None:
    """Every process's unreadable files into rank 0's record (a collective: all ranks call it).

    Each rank flags the files it skipped in a mask over the dataset; rank 0 reads the ones it did
    not meet itself once more, to say why."""
    if group.world == 1:
        return
    position = {str(p): i for i, p in enumerate(dataset.paths)}
    mask = torch.zeros(len(dataset), dtype=torch.int32)
    for name in ctx.skipped.paths:
        if name in position:
            mask[position[name]] = 1
    flagged = torch.stack(group.all_gather(mask)).amax(dim=0)
    if group.rank != 0:
        return
    for index in torch.nonzero(flagged).flatten().tolist():
        if str(dataset.paths[index]) not in ctx.skipped:
            item = dataset.read(index)
            if isinstance(item, vizkit.data.BadImage):
                ctx.skipped.add(item, warn=False)


# ----------------------------------------------------------------------------------- figures
def _first_layer_filters(ctx: vizkit.RunContext, layer: str, x: torch.Tensor) -> torch.Tensor | None:
    """The first convolution's filters when ``layer`` lies no deeper than it (layer 1), else None."""
    convs = ctx.instrumented.convolutions(x, until=layer)
    if len(convs) != 1 or convs[0][1].in_channels != x.shape[1]:
        return None
    return convs[0][1].weight.detach().cpu()


MAX_SIDE_INCHES = 20.0  # vizkit's figure cap (2000 px at 100 dpi): larger pages shrink to fit
BLOCK_INCHES = 3.0  # width of one map's block of projections (and of its block of patches)


def mosaic_grid(k: int) -> tuple[int, int]:
    """Rows and columns of the near-square block that holds a map's k tiles: ceil(sqrt(k))
    columns (k=4: 2x2, 9: 3x3, 16: 4x4, 25: 5x5, 5: 2 rows of 3)."""
    columns = max(1, math.ceil(math.sqrt(k)))
    return max(1, math.ceil(k / columns)), columns


def _maps_per_row(
    maps_per_page: int,
    shown_maps: int,
    map_w: float,
    map_gap: float,
    block_h: float,
    title_h: float,
    margins: float,
    side: float,
) -> int:
    """Maps side by side on a page: 2 up to 8 maps a page, else about sqrt(maps / 2), at most 4;
    and when a page of that shape would be capped (tall pages of many maps), the number that
    keeps the page nearest to square instead, so it is capped least (4 a row made 100 maps a
    page 25 rows tall, shrunk to a quarter, the titles running over each other)."""
    usual = 2 if maps_per_page <= 8 else min(4, round(math.sqrt(maps_per_page / 2)))
    count = max(1, min(maps_per_page, shown_maps))

    def scale(per_row: int) -> float:
        rows = math.ceil(count / per_row)
        width = per_row * map_w + (per_row - 1) * map_gap + 2 * side
        height = rows * block_h + (rows - 1) * title_h + margins
        return min(1.0, MAX_SIDE_INCHES / width, MAX_SIDE_INCHES / height)

    square = max(1, round(math.sqrt(count * (block_h + title_h) / (map_w + map_gap))))
    return square if scale(square) > scale(usual) + 1e-9 else usual


def _draw_map(
    figure: Any,
    inner: Any,
    channel: int,
    row: np.ndarray,
    arrays: dict[str, np.ndarray],
    m: int,
    filters: torch.Tensor | None,
    grid: tuple[int, int],
    n_images: int,
    shrink: float,
) -> None:
    """Map ``m`` (``channel``, its winners' values ``row``) in its cell ``inner`` of a page: its
    filter (layer 1), its projections and its patches as ``grid`` mosaics; an empty labelled panel
    when it never fired."""
    extra = 1 if filters is not None else 0
    k = int((np.isfinite(row) & (arrays["image_index"][m] >= 0)).sum())
    if k == 0:  # never fired on these images: an empty, labelled panel
        ax = figure.add_subplot(inner[0, extra:])
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_facecolor("0.93")
        ax.set_title(
            f"map {channel}: never fired on these {n_images} images",
            fontsize=max(4.0, 8 * shrink),
            loc="left",
        )
        return
    projections = torch.from_numpy(arrays["projections"][m, :k].astype(np.float32))
    display = vizkit.to_image(projections, channels_last=False).permute(0, 2, 3, 1).numpy()
    patches = arrays["patches"][m, :k].astype(np.float32) / 255
    if filters is not None:
        ax = figure.add_subplot(inner[0, 0])
        weight = filters[channel]
        ax.imshow(
            ((weight - weight.min()) / (weight.max() - weight.min() + 1e-12)).permute(1, 2, 0).numpy(),
            interpolation="nearest",
        )
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title("filter", fontsize=max(4.0, 7 * shrink))
    for offset, tiles in enumerate((display, patches)):
        ax = figure.add_subplot(inner[0, extra + offset])
        ax.imshow(tile_mosaic(tiles, rows=grid[0], columns=grid[1]), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        if offset == 0:
            ax.set_title(
                f"map {channel}  (top {k}: {row[0]:.3g} .. {row[k - 1]:.3g})",
                fontsize=max(4.0, 8 * shrink),
                loc="left",
            )


def figure_pages(
    layer: str,
    channels: list[int],
    values: np.ndarray,
    arrays: dict[str, np.ndarray],
    filters: torch.Tensor | None,
    maps_per_page: int,
    pages: int,
    n_images: int,
) -> dict:
    """The PNG pages: ``maps_per_page`` maps a page, at most ``pages`` pages; per map its k
    projections and, beside them, the k image patches, each block a near-square grid
    (:func:`mosaic_grid`) of one shape for every map, so a map with fewer winners leaves cells
    empty rather than changing shape. Layer-1 maps also show their filter. A page never exceeds
    ``MAX_SIDE_INCHES`` on a side."""
    figures = {}
    shown_maps = min(len(channels), maps_per_page * pages)
    n_pages = math.ceil(shown_maps / maps_per_page)
    cells = max(1, values.shape[1])
    grid_rows, grid_columns = mosaic_grid(cells)
    size, gap = arrays["patches"].shape[2], 2
    block_w = BLOCK_INCHES
    block_h = block_w * (grid_rows * size + (grid_rows - 1) * gap) / (grid_columns * size + (grid_columns - 1) * gap)
    extra = 1 if filters is not None else 0
    filter_w = 1.0 * extra
    map_w = 2 * block_w + filter_w + 0.15 * (1 + extra)  # the blocks and the gaps between them
    title_h, map_gap, top, bottom, side = 0.4, 0.45, 0.85, 0.15, 0.2
    per_row = _maps_per_row(maps_per_page, shown_maps, map_w, map_gap, block_h, title_h, top + bottom, side)
    for page in range(n_pages):
        maps = list(range(page * maps_per_page, min(shown_maps, (page + 1) * maps_per_page)))
        rows = math.ceil(len(maps) / per_row)
        width = per_row * map_w + (per_row - 1) * map_gap + 2 * side
        height = rows * block_h + (rows - 1) * title_h + top + bottom
        figure = new_figure(width, height, max_side=MAX_SIDE_INCHES)
        scale = figure.get_figwidth() / width  # 1 unless the page was capped
        # a capped page shrinks every gap with it: below 0.6 the fonts shrink too (not under 4 pt),
        # or the titles of neighbouring maps and the suptitle run into each other
        shrink = min(1.0, scale / 0.6)
        figure.subplots_adjust(left=side / width, right=1 - side / width, top=1 - top / height, bottom=bottom / height)
        outer = figure.add_gridspec(rows, per_row, wspace=map_gap / map_w, hspace=title_h / block_h)
        ratios = [filter_w] * extra + [block_w, block_w]
        for slot, m in enumerate(maps):
            r, c = divmod(slot, per_row)
            inner = outer[r, c].subgridspec(1, 2 + extra, width_ratios=ratios, wspace=0.15 / (map_w / (2 + extra)))
            _draw_map(
                figure, inner, channels[m], values[m], arrays, m, filters, (grid_rows, grid_columns), n_images, shrink
            )
        notes = [f"page {page + 1} of {n_pages}"] if n_pages > 1 else []
        if shown_maps < len(channels):
            notes.append(f"{len(channels) - shown_maps} more maps not drawn (the arrays hold all {len(channels)})")
        figure.suptitle(
            f"Top-{values.shape[1]} activations of layer {layer} over {n_images} images: "
            "deconvnet projections beside their image patches" + (f"\n{'; '.join(notes)}" if notes else ""),
            fontsize=10 if scale > 0.6 else max(5.0, 8 * shrink),
            y=1 - 0.1 / height,
            va="top",
        )
        figures[f"top9_page{page + 1:02d}"] = figure
    return figures


# ----------------------------------------------------------------------------------- analysis
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
    merge_skipped(ctx, dataset, group)
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


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="top9",
            description="Top-k activating patches of feature maps across a dataset, with their deconvnet projections (Fig. 2)",
            run=run,
            inputs="data",
            options=[
                vizkit.Option("layer", str, required=True, help="layer whose feature maps to rank"),
                vizkit.Option(
                    "channels",
                    str,
                    "all",
                    help="feature maps: all, a range 0-63, or a list 3,7,9",
                    parse=vizkit.toolkit.parse_channel_spec,
                ),
                vizkit.Option(
                    "k", int, 9, help="activations kept per map (one per image at most)", minimum=1, maximum=10_000
                ),
                vizkit.Option(
                    "patch_size", int, 64, help="side of the stored projection and patch crops", minimum=8, maximum=1024
                ),
                vizkit.Option("maps_per_page", int, 8, help="feature maps per PNG page", minimum=1),
                vizkit.Option("pages", int, 8, help="PNG pages to draw at most (the arrays hold every map)", minimum=1),
                vizkit.Option("resume", bool, False, help="continue an interrupted scan from its checkpoint in --out"),
                vizkit.Option(
                    "checkpoint_every", int, 20, help="batches between scan checkpoints (0: by time only)", minimum=0
                ),
                vizkit.Option(
                    "checkpoint_seconds",
                    float,
                    60.0,
                    help="also write the scan checkpoint when this many seconds have passed since the last one "
                    "(SIGINT/SIGTERM also write it)",
                    minimum=0,
                ),
                vizkit.Option("workers", int, 2, help="data-loading worker processes", minimum=0, maximum=128),
                vizkit.Option(
                    "rule",
                    str,
                    "deconvnet",
                    registry="rules",
                    help="projection rule (the paper's deconvnet by default)",
                ),
            ],
            demo={"layer": "conv5", "channels": "0-15", "pages": 2, "workers": 0},
            demo_quick={"channels": "0-3", "pages": 1},
            view=report_view(),  # the report's unit browser (view.py)
        )
    )
