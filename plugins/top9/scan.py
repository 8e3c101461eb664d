"""top9's scan pass: the running top-k of every chosen map over this process's shard of the
data, checkpointed (by batches, by time, on SIGINT/SIGTERM) and resumable, and the merge of the
shards' top-k and unreadable files across processes."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

import vizkit
from vizkit.framework import save_torch_atomic
from vizkit.toolkit import ProcessGroup

CHECKPOINT_VERSION = 1


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
    before = start_batch * ctx.batch_size  # images of this shard scanned before a resume
    progress = vizkit.toolkit.progress_bar(
        total=before + len(shard),
        initial=before,
        desc=f"top9 scan {layer}" + (f" (rank {group.rank})" if group.world > 1 else ""),
        unit="images",
        enabled=ctx.progress,
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
                progress.update(min(ctx.batch_size, before + len(shard) - number * ctx.batch_size))
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
