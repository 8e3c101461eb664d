"""One resumable, sharded pass over ``--data``: what a dataset scan (top-k, statistics, an atlas
of units) needs around its per-batch work.

:func:`resumable_scan` reads this process's shard of the data in batches, hands each batch to a
``step`` that folds it into the caller's accumulators, and checkpoints them (every
``checkpoint_every`` batches, every ``checkpoint_seconds``, and on SIGINT/SIGTERM, which finish
the batch, save and stop with KeyboardInterrupt). With ``resume`` it continues from the
checkpoint in ``out``, refusing one made by another run (the ``fingerprint``). The accumulators
are anything with ``state_dict()`` / ``load_state_dict()`` of tensors and numbers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from vizkit.data import BadImage, ImageList, SkippedImages, UnreadableImage, read_batches
from vizkit.errors import UsageError
from vizkit.framework import save_torch_atomic
from vizkit.toolkit.distributed import ProcessGroup
from vizkit.toolkit.interrupts import StopRequest, deferred_interrupts
from vizkit.toolkit.progress import progress_bar

SCAN_CHECKPOINT_VERSION = 1


class Accumulator(Protocol):
    """What a scan folds its batches into: saved in checkpoints and restored on resume."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def scan_checkpoint(out: Path | None, name: str, group: ProcessGroup) -> Path | None:
    """Where a scan named ``name`` keeps its checkpoint in ``out`` (one per process under torchrun)."""
    if out is None:
        return None
    suffix = f".rank{group.rank}of{group.world}" if group.world > 1 else ""
    return out / f".{name}-scan{suffix}.pt"


def resumable_scan(
    name: str,
    dataset: ImageList,
    skipped: SkippedImages,
    state: Accumulator,
    step: Callable[[Tensor, Tensor], None],
    fingerprint: str,
    out: Path | None,
    group: ProcessGroup,
    batch_size: int,
    resume: bool = False,
    checkpoint_every: int = 20,
    checkpoint_seconds: float = 60.0,
    workers: int = 0,
    progress: bool = False,
) -> float:
    """Fold this process's shard of ``dataset`` into ``state`` with ``step(images, indices)``,
    batch by batch (images on the CPU, as read), checkpointed and resumable; returns the scan's
    seconds (across resumes). A finished scan's checkpoint is kept (marked done) until the caller's
    result is saved: a ``--resume`` after a failure later on does not scan again.

    Args:
        name: the analysis's name: the checkpoint is ``out/.<name>-scan.pt``, messages start with it.
        dataset: the images; this process reads every ``group.world``-th one from ``group.rank``.
        skipped: where unreadable files are recorded (saved in the checkpoint too).
        state: the accumulators ``step`` updates.
        step: folds one batch in; a batch whose every file was unreadable is not passed.
        fingerprint: what a checkpoint must match to be resumed (model, options, data).
        out: the run's output folder (None: no checkpoints).
        group: the torchrun process group (a single process: world 1).
        batch_size: images per batch.
        resume: continue from the checkpoint in ``out``.
        checkpoint_every: batches between checkpoints (0: by time only).
        checkpoint_seconds: also checkpoint when this long has passed since the last one.
        workers: data-loading worker processes.
        progress: show a progress bar.
    """
    path = scan_checkpoint(out, name, group)
    start_batch, seconds = 0, 0.0
    if resume and path is None:
        raise UsageError("--resume needs --out (the checkpoint lives there)")
    if resume and path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("version") != SCAN_CHECKPOINT_VERSION or saved.get("fingerprint") != fingerprint:
            raise UsageError(
                f"{path} is a checkpoint of a different run (model, layers, options or data differ); drop --resume"
            )
        state.load_state_dict(saved["state"])
        skipped.load_state_dict(saved.get("skipped", []))
        if saved["done"]:
            return float(saved["seconds"])
        start_batch, seconds = int(saved["next_batch"]), float(saved["seconds"])
    elif path is not None and path.exists():
        print(f"{name}: discarding the interrupted scan in {path} (pass --resume to continue it)", file=sys.stderr)
        path.unlink()
    resumed = start_batch > 0
    made_out = out is not None and not out.exists()
    shard = list(range(group.rank, len(dataset), group.world))[start_batch * batch_size :]
    loader = read_batches(dataset, skipped, shard, batch_size, workers, keep_empty=True)
    total = math.ceil(len(shard) / batch_size) + start_batch
    before = start_batch * batch_size
    bar = progress_bar(
        total=before + len(shard),
        initial=before,
        desc=f"{name} scan" + (f" (rank {group.rank})" if group.world > 1 else ""),
        unit="images",
        enabled=progress,
    )
    started = time.perf_counter()
    next_batch, consistent, last_save = start_batch, True, time.monotonic()

    def save(done: bool = False) -> None:
        if path is None:
            return
        save_torch_atomic(
            path,
            {
                "version": SCAN_CHECKPOINT_VERSION,
                "fingerprint": fingerprint,
                "next_batch": next_batch,
                "done": done,
                "seconds": seconds + time.perf_counter() - started,
                "state": state.state_dict(),
                "skipped": skipped.state_dict(),
            },
        )

    def stop_if_requested(stop: StopRequest) -> None:
        if not stop.requested:
            return
        save()
        bar.close()
        where = f"checkpoint saved in {path}" if path is not None else "nothing saved (no out folder)"
        print(
            f"{name}: {stop.signal_name} received; scan stopped after batch {next_batch} of {total}, {where}",
            file=sys.stderr,
        )
        raise KeyboardInterrupt(stop.signal_name)

    try:
        with torch.no_grad(), deferred_interrupts() as stop:
            for number, (images, indices) in enumerate(loader, start=start_batch):
                if len(indices):
                    consistent = False  # stopped inside a step, the state holds part of a batch: not saved
                    step(images, indices)
                next_batch, consistent = number + 1, True
                bar.update(min(batch_size, before + len(shard) - number * batch_size))
                stop_if_requested(stop)
                due = checkpoint_every > 0 and next_batch % checkpoint_every == 0
                if due or time.monotonic() - last_save >= checkpoint_seconds:
                    save()
                    last_save = time.monotonic()
            stop_if_requested(stop)
    except UnreadableImage:  # --strict met a bad file: leave nothing this run started behind
        if path is not None and not resumed:
            path.unlink(missing_ok=True)
            if made_out and out is not None and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise
    except BaseException:
        if consistent:
            save()
        raise
    finally:
        bar.close()
    save(done=True)
    return seconds + time.perf_counter() - started


def merge_skipped(skipped: SkippedImages, dataset: ImageList, group: ProcessGroup) -> None:
    """Every process's unreadable files into rank 0's record (a collective: all ranks call it).

    Each rank flags the files it skipped in a mask over the dataset; rank 0 reads the ones it did
    not meet itself once more, to say why."""
    if group.world == 1:
        return
    position = {str(p): i for i, p in enumerate(dataset.paths)}
    mask = torch.zeros(len(dataset), dtype=torch.int32)
    for name in skipped.paths:
        if name in position:
            mask[position[name]] = 1
    flagged = torch.stack(group.all_gather(mask)).amax(dim=0)
    if group.rank != 0:
        return
    for index in torch.nonzero(flagged).flatten().tolist():
        if str(dataset.paths[index]) not in skipped:
            item = dataset.read(index)
            if isinstance(item, BadImage):
                skipped.add(item, warn=False)
