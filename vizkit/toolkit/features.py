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
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
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
        return np.load(self.folder / _layer_file(name), mmap_mode="r")


def _layer_file(layer: str) -> str:
    return f"{layer.replace('/', '_')}.npy"


def cache_key(model: nn.Module, pool: str, preprocess: Preprocess, dtype: str, paths: Sequence[Path]) -> str:
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
    meta_path = folder / "meta.json"
    meta: dict[str, Any] = {"count": len(images), "complete": {}, "dims": {}}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    if meta.get("count") != len(images):
        raise UsageError(f"{folder} holds features of another image list; remove it or use another --cache")
    missing = [name for name in names if name not in meta["complete"]]
    if not missing:
        unreadable = _report_skipped(images, meta.get("skipped", []), record)
        return CachedFeatures(folder, names, {n: meta["dims"][n] for n in names}, len(images), 0.0, True, unreadable)

    started = time.perf_counter()
    probe = first_readable(images, record)[0][None].to(device)
    with im.configured(layers=missing, switches=False), torch.no_grad():
        im(probe)  # learns the layer order and the feature sizes
        for name in missing:
            im.info(name)  # an unknown layer: the error lists the valid ones
        deepest = max(missing, key=im.layers.index)
        dims = {name: int(pool_features(im.activation(name), pool).shape[1]) for name in missing}
    job = hashlib.sha256(json.dumps([missing, batch_size]).encode()).hexdigest()[:12]
    batches = math.ceil(len(images) / batch_size)
    if group.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        for name in missing:
            path = folder / _layer_file(name)
            if not path.exists() or np.load(path, mmap_mode="r").shape != (len(images), dims[name]):
                np.lib.format.open_memmap(path, mode="w+", dtype=DTYPES[dtype], shape=(len(images), dims[name])).flush()
    group.barrier()
    done_path = folder / f".progress-{job}-rank{group.rank}of{group.world}.npy"
    done = np.load(done_path) if done_path.exists() else np.zeros(batches, dtype=bool)
    # the unreadable rows of this rank's finished batches, kept beside the progress for a resume
    bad_path = folder / f".skipped-{job}-rank{group.rank}of{group.world}.json"
    if not resume and done.any():
        print(
            f"features: discarding the interrupted extraction in {folder} (pass --resume to continue it)",
            file=sys.stderr,
        )
        done = np.zeros(batches, dtype=bool)
        done_path.unlink(missing_ok=True)
        bad_path.unlink(missing_ok=True)
    bad_rows = json.loads(bad_path.read_text()) if bad_path.exists() and done.any() else []
    _report_skipped(images, bad_rows, record)
    mine = [b for b in range(batches) if b % group.world == group.rank and not done[b]]
    # rows are written with plain file writes at their offsets (a writable memory map would keep
    # every written page resident in this process), flushed and synced before progress is recorded
    offsets = {name: int(np.load(folder / _layer_file(name), mmap_mode="r").offset) for name in missing}
    outputs = {name: open(folder / _layer_file(name), "r+b") for name in missing}  # noqa: SIM115 - closed below
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    loader = image_loader(  # batches of (images, indices, unreadable items), one per batch of ``mine``
        images,
        [i for b in mine for i in range(b * batch_size, min(len(images), (b + 1) * batch_size))],
        batch_size,
        workers,
    )
    bar = progress_bar(total=batches, initial=batches - len(mine), desc="features", enabled=progress)
    try:
        # a signal stops the loop after the batch in progress, whose progress is then recorded
        with im.configured(layers=missing, switches=False), torch.no_grad(), deferred_interrupts() as stop:
            for number, batch in zip(mine, loader):
                x, indices = record.take(batch)  # (strict: raises at an unreadable file)
                first = number * batch_size
                count = min(len(images), first + batch_size) - first
                if batch[2]:
                    bad_rows += [[item.index, item.why, item.detail] for item in batch[2]]
                    write_atomic(bad_path, json.dumps(bad_rows).encode())
                if len(indices):
                    im(x.to(device, non_blocking=True), until=deepest)
                where = (indices - first).numpy()
                for name in missing:
                    block = np.zeros((count, dims[name]), dtype=DTYPES[dtype])  # an unreadable image's row stays 0
                    if len(indices):
                        block[where] = pool_features(im.activation(name), pool).float().cpu().numpy()
                    handle = outputs[name]
                    handle.seek(offsets[name] + first * dims[name] * itemsize)
                    handle.write(np.ascontiguousarray(block).tobytes())
                for handle in outputs.values():
                    handle.flush()
                    os.fsync(handle.fileno())
                done[number] = True
                write_atomic(done_path, _npy_bytes(done))
                bar.update(1)
                if stop.requested:
                    break
            if stop.requested:
                bar.close()
                print(
                    f"features: {stop.signal_name} received; extraction stopped with {int(done.sum())} of "
                    f"{batches} batches done, kept in {folder}",
                    file=sys.stderr,
                )
                raise KeyboardInterrupt(stop.signal_name)
    finally:
        for handle in outputs.values():
            handle.close()
        bar.close()
    group.barrier()
    if group.rank == 0:
        everyone = np.zeros(batches, dtype=bool)
        for path in folder.glob(f".progress-{job}-rank*of{group.world}.npy"):
            everyone |= np.load(path)
        if not everyone.all():
            raise UsageError(f"feature extraction in {folder} is incomplete; run again with --resume to continue it")
        known = {int(row[0]): row for row in meta.get("skipped", [])}
        for path in folder.glob(f".skipped-{job}-rank*of{group.world}.json"):
            known.update({int(row[0]): row for row in json.loads(path.read_text())})
        meta["skipped"] = [known[row] for row in sorted(known)]
        meta["dims"].update(dims)
        meta["complete"].update({name: True for name in missing})
        meta.update(
            {
                "count": len(images),
                "pool": pool,
                "dtype": dtype,
                "model": model_fingerprint(model),
                "preprocess": images.preprocess.to_dict(),
            }
        )
        write_atomic(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
        (folder / "images.txt").write_text("\n".join(str(p) for p in images.paths) + "\n")
        for path in [*folder.glob(f".progress-{job}-*.npy"), *folder.glob(f".skipped-{job}-*.json")]:
            path.unlink(missing_ok=True)
    group.barrier()
    # every rank learns every rank's unreadable rows (rank 0 wrote them all into meta.json)
    unreadable = _report_skipped(images, json.loads(meta_path.read_text()).get("skipped", []), record)
    all_dims = {**{n: meta["dims"][n] for n in names if n in meta["dims"]}, **dims}
    return CachedFeatures(folder, names, all_dims, len(images), time.perf_counter() - started, False, unreadable)


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
