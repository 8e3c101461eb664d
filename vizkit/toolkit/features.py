"""Frozen features of a model over an image list, extracted once into an on-disk cache.

:func:`extract_features` runs one instrumented forward per batch that records every requested
layer (stopping at the deepest), optionally pools each map spatially (``avg``: global average;
``max:S``: adaptive max-pool to SxS), and writes the rows into one memory-mapped ``.npy`` per layer,
so memory stays bounded whatever the dataset size. The cache folder is keyed on the model (a hash
of its spec and of its parameters and buffers as they are), the pooling, the preprocessing, the dtype and the
image list; each layer is a file of its own, so a later run that asks for more layers extracts only
the new ones. Progress is recorded per batch after the rows are flushed, so an interrupted
extraction resumes where it stopped; under ``torchrun`` rank r extracts the batches b with
b % world == r into the same files (the batches are the single-process ones, so the cache is
identical). An unreadable image file leaves its row zero and is listed in the cache's
``meta.json`` (``skipped``), so a run that reuses the cache reports it again; it is read again
only when the cache is removed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vizkit.data import BadImage, ImageList, Preprocess, SkippedImages, first_readable, image_loader
from vizkit.engine.recorder import Recorder
from vizkit.errors import UsageError
from vizkit.framework.results import write_atomic
from vizkit.models import describe
from vizkit.toolkit.distributed import ProcessGroup
from vizkit.toolkit.interrupts import deferred_interrupts
from vizkit.toolkit.progress import progress_bar

CACHE_VERSION = 2  # 2: max:S no longer upsamples a map smaller than S
DTYPES = {"float16": np.float16, "float32": np.float32}
META_FILE = "meta.json"  # a cache folder's record of its complete layers, dims and unreadable rows


def parse_pool(text: str) -> tuple[str, int]:
    """The pooling a ``--pool`` value names, as (kind, size).

    Args:
        text: ``none``, ``avg`` (global average) or ``max:S`` (adaptive max-pool to SxS; a map
            smaller than S along an axis keeps its own size there).
    """
    text = str(text).strip().lower()
    if text in ("none", "avg"):
        return text, 1
    if text.startswith("max:") and text[4:].isdigit() and int(text[4:]) >= 1:
        return "max", int(text[4:])
    raise UsageError(f"--pool must be none, avg or max:S (e.g. max:2), not '{text}'")


def pool_features(activation: Tensor, pool: str) -> Tensor:
    """A layer's output as [B, D] rows: flattened, after the spatial pooling ``pool`` asks for
    (fully connected outputs are kept as they are).

    Args:
        activation: [B, C, H, W] maps or [B, C] vectors.
        pool: ``none``, ``avg`` or ``max:S`` (see :func:`parse_pool`).
    """
    kind, size = parse_pool(pool)
    if activation.dim() == 4 and kind == "avg":
        activation = activation.mean(dim=(2, 3))
    elif activation.dim() == 4 and kind == "max":
        # never larger than the map: adaptive pooling "to" 8x8 from 4x4 repeats every value 4 times,
        # which quadruples the features (and the probe's cost) without adding any information
        height, width = activation.shape[2:]
        activation = F.adaptive_max_pool2d(activation, (min(size, height), min(size, width)))
    return activation.reshape(activation.shape[0], -1)


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's spec and of every parameter and buffer as they are now (not of the
    file they came from: weights changed in memory must not reuse stale features)."""
    described = describe(model)
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # bfloat16 too
    return f"{described['spec']}#{digest.hexdigest()}"


@dataclass
class CachedFeatures:
    """The cached features of one image list: ``layer(name)`` is an [N, D] memory-mapped array."""

    folder: Path
    layers: list[str]
    dims: dict[str, int]
    count: int
    seconds: float  # spent extracting in this call (0 when everything came from the cache)
    reused: bool
    skipped: list[int] = field(default_factory=list)  # rows whose image was unreadable (left zero)

    def layer(self, name: str) -> np.ndarray:
        """The [N, D] features of layer ``name`` (a resolved name), memory-mapped read-only."""
        return np.load(self.folder / _layer_file(name), mmap_mode="r")


def _layer_file(layer: str) -> str:
    return f"{layer.replace('/', '_')}.npy"


def cache_key(model: nn.Module, pool: str, preprocess: Preprocess, dtype: str, paths: Sequence[Path]) -> str:
    """The name of the cache folder for these features: a hash of everything they depend on
    (the model as it is, the pooling, the preprocessing, the dtype and the image list).

    Args:
        model: the model (its spec and weights, see :func:`model_fingerprint`).
        pool: the pooling (see :func:`parse_pool`).
        preprocess: the preprocessing the images go through.
        dtype: the dtype on disk.
        paths: the image files, in order.
    """
    listing = hashlib.sha256("\n".join(str(Path(p).resolve()) for p in paths).encode()).hexdigest()
    text = json.dumps([CACHE_VERSION, model_fingerprint(model), pool, preprocess.to_dict(), dtype, listing])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def extract_features(
    im: Recorder,
    model: nn.Module,
    images: ImageList,
    layers: Sequence[str],
    cache: str | Path,
    pool: str = "none",
    dtype: str = "float32",
    batch_size: int = 32,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    group: ProcessGroup | None = None,
    skipped: SkippedImages | None = None,
    resume: bool = True,
) -> CachedFeatures:
    """The features of ``layers`` for every image of ``images``, from the cache or extracted into it.

    An unreadable image file is skipped: its row stays zero, its index is in the result's
    ``skipped`` and it is recorded in ``skipped`` (warned about), also when the features come
    from the cache; with a strict ``skipped`` it stops the extraction instead.

    Args:
        im: the instrumented model (its settings are changed only inside this call).
        model: the model ``im`` wraps (its weights key the cache).
        images: the image list, in the order the rows are stored.
        layers: layer names (aliases allowed); stored under their resolved names.
        cache: the cache root; the features live in ``cache/<key>/``.
        pool: ``none``, ``avg`` or ``max:S`` (see :func:`parse_pool`).
        dtype: ``float32`` or ``float16`` on disk.
        batch_size: images per forward; also the unit of progress and of sharding.
        workers: data-loading worker processes.
        device: where the forwards run.
        progress: show a progress bar.
        group: this process's place in a torchrun launch (None: a single process).
        skipped: where unreadable files are recorded (see :class:`vizkit.data.SkippedImages`); None:
            a fresh, non-strict record.
        resume: continue an extraction of the same layers that was interrupted (its batches
            done are kept in the cache folder); False: discard it (said on stderr) and start
            over. SIGINT or SIGTERM stop the extraction after the batch in progress, with its
            progress kept (KeyboardInterrupt).
    """
    if dtype not in DTYPES:
        raise UsageError(f"--cache-dtype must be float16 or float32, not '{dtype}'")
    parse_pool(pool)
    group = group or ProcessGroup()
    record = SkippedImages() if skipped is None else skipped
    names = list(dict.fromkeys(im.resolve_alias(layer) for layer in layers))
    folder = Path(cache) / cache_key(model, pool, images.preprocess, dtype, images.paths)
    meta = _read_meta(folder, len(images))
    missing = [name for name in names if name not in meta["complete"]]
    if not missing:
        unreadable = _report_skipped(images, meta.get("skipped", []), record)
        return CachedFeatures(folder, names, {n: meta["dims"][n] for n in names}, len(images), 0.0, True, unreadable)

    started = time.perf_counter()
    probe = first_readable(images, record)[0][None].to(device)
    deepest, dims = _probe_layers(im, probe, missing, pool)
    run = _Extraction(folder, missing, dims, deepest, len(images), pool, dtype, batch_size, group)
    if group.rank == 0:
        _allocate_layer_files(run)
    group.barrier()
    done, bad_rows = _progress_so_far(run, resume)
    _report_skipped(images, bad_rows, record)
    _extract_batches(im, images, run, done, bad_rows, record, workers, device, progress)
    group.barrier()
    if group.rank == 0:
        _complete_cache(run, meta, model, images)
    group.barrier()
    # every rank learns every rank's unreadable rows (rank 0 wrote them all into meta.json)
    unreadable = _report_skipped(images, json.loads((folder / META_FILE).read_text()).get("skipped", []), record)
    all_dims = {**{n: meta["dims"][n] for n in names if n in meta["dims"]}, **dims}
    return CachedFeatures(folder, names, all_dims, len(images), time.perf_counter() - started, False, unreadable)


@dataclass
class _Extraction:
    """One extraction of the layers a cache folder lacks: what it writes, in which batches, and
    where this rank keeps its progress (so that an interrupted extraction resumes)."""

    folder: Path
    layers: list[str]  # the layers extracted, under their resolved names
    dims: dict[str, int]  # features per row of each layer
    deepest: str  # the forward stops after this layer
    count: int  # images (= rows) in the list
    pool: str
    dtype: str
    batch_size: int
    group: ProcessGroup

    @property
    def job(self) -> str:
        """Names this extraction's progress files: the same layers in the same batches resume."""
        return hashlib.sha256(json.dumps([self.layers, self.batch_size]).encode()).hexdigest()[:12]

    @property
    def batches(self) -> int:
        """Batches over the whole image list (every rank's)."""
        return math.ceil(self.count / self.batch_size)

    @property
    def done_path(self) -> Path:
        """This rank's finished batches, one bool per batch."""
        return self.folder / f".progress-{self.job}-rank{self.group.rank}of{self.group.world}.npy"

    @property
    def bad_path(self) -> Path:
        """The unreadable rows of this rank's finished batches, kept beside the progress for a resume."""
        return self.folder / f".skipped-{self.job}-rank{self.group.rank}of{self.group.world}.json"

    def rows(self, batch: int) -> range:
        """The rows (image indices) batch ``batch`` covers."""
        first = batch * self.batch_size
        return range(first, min(self.count, first + self.batch_size))


def _read_meta(folder: Path, count: int) -> dict[str, Any]:
    """The cache folder's record of its complete layers (a fresh one when there is none); a
    folder of another image list is refused."""
    meta_path = folder / META_FILE
    meta: dict[str, Any] = {"count": count, "complete": {}, "dims": {}}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    if meta.get("count") != count:
        raise UsageError(f"{folder} holds features of another image list; remove it or use another --cache")
    return meta


def _probe_layers(im: Recorder, probe: Tensor, layers: list[str], pool: str) -> tuple[str, dict[str, int]]:
    """One forward of ``probe`` that learns the layer order and the feature sizes: the deepest of
    ``layers`` and each layer's features per row. An unknown layer is an error listing the valid ones."""
    with im.configured(layers=layers, switches=False), torch.no_grad():
        im(probe)
        for name in layers:
            im.info(name)  # an unknown layer: the error lists the valid ones
        deepest = max(layers, key=im.layers.index)
        dims = {name: int(pool_features(im.activation(name), pool).shape[1]) for name in layers}
    return deepest, dims


def _allocate_layer_files(run: _Extraction) -> None:
    """Create each layer's ``.npy`` at its full size (rank 0 only), keeping one of the right shape
    (an interrupted extraction's rows)."""
    run.folder.mkdir(parents=True, exist_ok=True)
    for name in run.layers:
        path = run.folder / _layer_file(name)
        shape = (run.count, run.dims[name])
        if not path.exists() or np.load(path, mmap_mode="r").shape != shape:
            np.lib.format.open_memmap(path, mode="w+", dtype=DTYPES[run.dtype], shape=shape).flush()


def _progress_so_far(run: _Extraction, resume: bool) -> tuple[np.ndarray, list]:
    """This rank's finished batches and the unreadable rows found in them, from an interrupted
    extraction; without ``resume`` that extraction is discarded (said on stderr)."""
    done = np.load(run.done_path) if run.done_path.exists() else np.zeros(run.batches, dtype=bool)
    if not resume and done.any():
        print(
            f"features: discarding the interrupted extraction in {run.folder} (pass --resume to continue it)",
            file=sys.stderr,
        )
        done = np.zeros(run.batches, dtype=bool)
        run.done_path.unlink(missing_ok=True)
        run.bad_path.unlink(missing_ok=True)
    bad_rows = json.loads(run.bad_path.read_text()) if run.bad_path.exists() and done.any() else []
    return done, bad_rows


class _RowWriter:
    """Writes a batch's rows into the layer files with plain file writes at their offsets (a
    writable memory map would keep every written page resident in this process), flushed and
    synced before the batch's progress is recorded."""

    def __init__(self, run: _Extraction) -> None:
        self.run = run
        files = {name: run.folder / _layer_file(name) for name in run.layers}
        self.offsets = {name: int(np.load(path, mmap_mode="r").offset) for name, path in files.items()}
        self.handles = {name: open(path, "r+b") for name, path in files.items()}  # noqa: SIM115 - see close
        self.itemsize = np.dtype(DTYPES[run.dtype]).itemsize

    def write(self, im: Recorder, batch: int, indices: Tensor) -> None:
        """Write batch ``batch``'s rows of every layer from ``im``'s activations of the readable
        images ``indices``; an unreadable image's row stays zero."""
        rows = self.run.rows(batch)
        where = (indices - rows.start).numpy()
        for name in self.run.layers:
            dim = self.run.dims[name]
            block = np.zeros((len(rows), dim), dtype=DTYPES[self.run.dtype])  # an unreadable image's row stays 0
            if len(indices):
                block[where] = pool_features(im.activation(name), self.run.pool).float().cpu().numpy()
            handle = self.handles[name]
            handle.seek(self.offsets[name] + rows.start * dim * self.itemsize)
            handle.write(np.ascontiguousarray(block).tobytes())
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        """Close the layer files."""
        for handle in self.handles.values():
            handle.close()


def _extract_batches(
    im: Recorder,
    images: ImageList,
    run: _Extraction,
    done: np.ndarray,
    bad_rows: list,
    record: SkippedImages,
    workers: int,
    device: torch.device | str,
    progress: bool,
) -> None:
    """Extract this rank's batches not ``done`` yet, recording each one's progress (and the
    unreadable rows in it, appended to ``bad_rows``) once its rows are on disk. A signal stops the
    loop after the batch in progress, whose progress is then recorded (KeyboardInterrupt)."""
    mine = [b for b in range(run.batches) if b % run.group.world == run.group.rank and not done[b]]
    writer = _RowWriter(run)
    # batches of (images, indices, unreadable items), one per batch of ``mine``
    loader = image_loader(images, [i for b in mine for i in run.rows(b)], run.batch_size, workers)
    bar = progress_bar(
        total=run.batches, initial=run.batches - len(mine), desc="features", unit="batches", enabled=progress
    )
    try:
        with im.configured(layers=run.layers, switches=False), torch.no_grad(), deferred_interrupts() as stop:
            for number, batch in zip(mine, loader):
                x, indices = record.take(batch)  # (strict: raises at an unreadable file)
                if batch[2]:
                    bad_rows += [[item.index, item.why, item.detail] for item in batch[2]]
                    write_atomic(run.bad_path, json.dumps(bad_rows).encode())
                if len(indices):
                    im(x.to(device, non_blocking=True), until=run.deepest)
                writer.write(im, number, indices)
                done[number] = True
                write_atomic(run.done_path, _npy_bytes(done))
                bar.update(1)
                if stop.requested:
                    break
            if stop.requested:
                bar.close()
                print(
                    f"features: {stop.signal_name} received; extraction stopped with {int(done.sum())} of "
                    f"{run.batches} batches done, kept in {run.folder}",
                    file=sys.stderr,
                )
                raise KeyboardInterrupt(stop.signal_name)
    finally:
        writer.close()
        bar.close()


def _complete_cache(run: _Extraction, meta: dict[str, Any], model: nn.Module, images: ImageList) -> None:
    """Once every rank has finished (rank 0 only): check that every batch is done, record the
    layers as complete in ``meta.json`` with every rank's unreadable rows, and remove the
    progress files."""
    folder, job, world = run.folder, run.job, run.group.world
    everyone = np.zeros(run.batches, dtype=bool)
    for path in folder.glob(f".progress-{job}-rank*of{world}.npy"):
        everyone |= np.load(path)
    if not everyone.all():
        raise UsageError(f"feature extraction in {folder} is incomplete; run again with --resume to continue it")
    known = {int(row[0]): row for row in meta.get("skipped", [])}
    for path in folder.glob(f".skipped-{job}-rank*of{world}.json"):
        known.update({int(row[0]): row for row in json.loads(path.read_text())})
    meta["skipped"] = [known[row] for row in sorted(known)]
    meta["dims"].update(run.dims)
    meta["complete"].update({name: True for name in run.layers})
    meta.update(
        {
            "count": len(images),
            "pool": run.pool,
            "dtype": run.dtype,
            "model": model_fingerprint(model),
            "preprocess": images.preprocess.to_dict(),
        }
    )
    write_atomic(folder / META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
    (folder / "images.txt").write_text("\n".join(str(p) for p in images.paths) + "\n")
    for path in [*folder.glob(f".progress-{job}-*.npy"), *folder.glob(f".skipped-{job}-*.json")]:
        path.unlink(missing_ok=True)


def _report_skipped(images: ImageList, rows: list, record: SkippedImages) -> list[int]:
    """Record the unreadable rows ``[row, why, detail]`` of ``images`` in ``record`` (strict:
    raises at the first) and return their indices, sorted."""
    for row, why, detail in sorted(rows, key=lambda r: int(r[0])):
        record.add(BadImage(int(row), str(images.paths[int(row)]), str(why), str(detail)))
    return sorted({int(r[0]) for r in rows})


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
