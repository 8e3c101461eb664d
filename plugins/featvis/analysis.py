"""The ``featvis`` run: the units chosen, their natural exemplars found (``--data`` or a top9 /
atlas result), the pictures optimised in chunks of units (each chunk kept for ``--resume``), and
how far to trust each picture: the activation it reaches against the unit's best natural
exemplar's, and the unit's rank among the layer's units on it."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import vizkit

from . import objectives
from .figures import grid_figures, unit_strip
from .natural import DataScan, Natural, from_result, layer_values, scan_data
from .optimize import optimize
from .parametrization import ColorDecorrelation, Normalize

RESUME_VERSION = 1
DEFAULT_UNITS = 16  # without --units: the first 16 units (or classes)
THUMBNAIL = 96  # the side of a natural exemplar's thumbnail, at most


def parse_units(text: str | None, count: int, best: np.ndarray | None, what: str) -> list[int]:
    """``--units``: ``0,5,17``, ranges ``0-15``, ``all``, or ``top:N`` (the N units whose strongest
    natural exemplar is strongest; needs ``best``); None: the first :data:`DEFAULT_UNITS`."""
    if text is None or not str(text).strip():
        return list(range(min(DEFAULT_UNITS, count)))
    text = str(text).strip()
    if text == "all":
        return list(range(count))
    if text.startswith("top:"):
        try:
            n = int(text[4:])
        except ValueError:
            n = 0
        if n < 1:
            raise vizkit.UsageError(f"--units {text}: top:N needs a whole N >= 1")
        if best is None:
            raise vizkit.UsageError(
                f"--units {text} ranks units by their natural exemplars: give --data or --exemplars"
            )
        order = np.argsort(-np.nan_to_num(best, nan=-np.inf), kind="stable")
        return sorted(int(u) for u in order[: min(n, count)])
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low:
                    raise ValueError
                units.extend(range(low, high + 1))
            else:
                units.append(int(part))
        except ValueError:
            raise vizkit.UsageError(
                f"--units '{text}': use unit indices (0,5,17), ranges (0-15), all or top:N"
            ) from None
    bad = [u for u in units if not 0 <= u < count]
    if bad:
        raise vizkit.UsageError(f"--units {bad[0]} is outside the {count} {what} (0-{count - 1})")
    if len(set(units)) != len(units):
        raise vizkit.UsageError(f"--units '{text}' names a unit twice")
    return units


def load_directions(path: str | None, channels: int) -> Tensor:
    """``--directions FILE``: a .npy (or whitespace text) of [U, channels] (or one [channels]) vectors."""
    if not path:
        raise vizkit.UsageError("the direction objective needs --directions FILE (.npy or text, [U, channels])")
    try:
        values = np.load(path, allow_pickle=False) if str(path).endswith(".npy") else np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as error:
        raise vizkit.UsageError(f"--directions {path} cannot be read: {error}") from None
    values = np.atleast_2d(np.asarray(values, dtype=np.float32))
    if values.ndim != 2 or values.shape[1] != channels or values.shape[0] < 1:
        raise vizkit.UsageError(f"--directions {path} holds {values.shape}: it needs [U, {channels}] vectors")
    if not np.isfinite(values).all() or (np.linalg.norm(values, axis=1) == 0).any():
        raise vizkit.UsageError(f"--directions {path} holds a zero or non-finite vector")
    return torch.from_numpy(values)


def _labels(ctx: vizkit.RunContext, objective: str, units: list[int]) -> list[str]:
    if objective == "logit":
        return [f"{u} {vizkit.data.label_name(ctx.labels, u)}" if ctx.labels else f"class {u}" for u in units]
    if objective == "direction":
        return [f"direction {u}" for u in units]
    return [f"unit {u}" for u in units]


def _fingerprint(ctx: vizkit.RunContext, *parts: Any) -> str:
    model = vizkit.models.describe(ctx.model)
    text = repr((model["spec"], model["weights_sha256"], ctx.preprocess, ctx.seed, parts))
    return hashlib.sha256(text.encode()).hexdigest()


def _takes(im: vizkit.Instrumented, x: Tensor, layer: str | None) -> bool:
    """Whether the forward up to ``layer`` (None: the output) runs on ``x`` (the model's own size)."""
    try:
        im.run_capturing(x, layer) if layer else im(x)
    except RuntimeError:
        return False
    return True


def _rank(values: Tensor, targets: Tensor) -> Tensor:
    """1 + how many units score strictly higher than the target unit, per row (ties share the better rank)."""
    own = values.gather(1, targets[:, None])
    return 1 + (values > own).sum(dim=1)


def run(
    ctx: vizkit.RunContext,
    layer: str | None,
    units: str | None,
    objective: str,
    steps: int,
    param: str,
    decorrelate: bool,
    transforms: str,
    regularize: str,
    diversity: int,
    diversity_weight: float,
    size: int,
    lr: float,
    exemplars: str | None,
    shown: int,
    directions: str | None,
    color_from_data: bool,
    redirect: bool,
    resume: bool,
    workers: int,
) -> vizkit.Result:
    started_all = time.perf_counter()
    im = ctx.instrumented
    objectives.get(objective)  # an unknown name: one line
    if objective == "logit" and layer:
        raise vizkit.UsageError("--objective logit reads the model's output: drop --layer")
    if objective != "logit" and not layer:
        raise vizkit.UsageError(f"--objective {objective} needs --layer")
    if color_from_data and ctx.data is None:
        raise vizkit.UsageError("--color-from-data estimates the colour statistics from --data: give --data")
    if exemplars and ctx.data is not None:
        raise vizkit.UsageError("give --data or --exemplars for the natural exemplars, not both")
    k = max(1, diversity)
    regularize = _resolved_regularizers(regularize, param)
    normalise = Normalize.of(ctx.preprocess)
    crop = ctx.preprocess.crop
    full = torch.rand(1, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    x = normalise.forward(F.interpolate(full, size=(size, size), mode="bilinear", align_corners=False))
    x = x.to(ctx.device, ctx.dtype)
    with torch.no_grad(), im.configured(layers=None, switches=False):
        im(normalise.forward(full).to(ctx.device, ctx.dtype))  # the layers are known after a forward
        if layer:
            try:
                layer = im.resolve_alias(layer)
                im.info(layer)
            except vizkit.VizkitError as error:
                raise vizkit.UsageError(str(error).splitlines()[0]) from None
        try:
            output = im.run_capturing(x, layer) if layer else im(x)
        except RuntimeError as error:  # e.g. a classifier that takes one input size only
            if size == crop or not _takes(im, normalise.forward(full).to(ctx.device, ctx.dtype), layer):
                raise
            raise vizkit.UsageError(
                f"the model cannot take a {size}x{size} picture up to {layer or 'its output'} "
                f"({str(error).splitlines()[0][:120]}); try --size {crop}"
            ) from None
    if not isinstance(output, Tensor) or output.dim() < 2:
        raise vizkit.UsageError(f"'{layer or 'the model output'}' has no units to visualise (not [N, C, ...])")
    channels = int(output.shape[1])
    vectors = load_directions(directions, channels) if objective == "direction" else None
    if vectors is not None and units:
        raise vizkit.UsageError("--objective direction optimises the rows of --directions: drop --units")
    what = "classes" if objective == "logit" else f"units of {layer}"
    side = min(size, THUMBNAIL)

    # the natural exemplars: every unit scored on --data, or a top9 / atlas result's exemplars
    scan: DataScan | None = None
    seconds_natural = 0.0
    if ctx.data is not None:
        scan = scan_data(ctx, layer, objective, vectors, shown, resume, workers)
    if vectors is not None:
        chosen = list(range(vectors.shape[0]))
    elif exemplars and str(units or "").startswith("top:"):
        chosen = parse_units(units, channels, _result_best(exemplars, layer, channels), what)
    else:
        chosen = parse_units(units, channels, scan.every_best if scan is not None else None, what)
    natural: Natural | None = None
    if scan is not None:
        natural = scan.natural(ctx, chosen, side)
        seconds_natural = scan.seconds
    elif exemplars:
        natural = from_result(ctx, exemplars, layer, objective, chosen, vectors, shown, side)
        seconds_natural = natural.seconds

    # the pictures, optimised in chunks of units (a chunk = one batch of up to --batch-size images)
    colour: bool | ColorDecorrelation = decorrelate
    if decorrelate and color_from_data:
        colour = data_colours(ctx)
    per_chunk = max(1, ctx.batch_size // k)
    chunks = [chosen[i : i + per_chunk] for i in range(0, len(chosen), per_chunk)]
    settings = (
        layer,
        objective,
        steps,
        param,
        decorrelate,
        color_from_data,
        redirect,
        transforms,
        regularize,
        k,
        diversity_weight,
        size,
        lr,
    )
    keep = vizkit.toolkit.ResumeFolder(
        ctx.out,
        "featvis",
        _fingerprint(ctx, settings, None if vectors is None else vectors.numpy().tobytes().hex()),
        resume,
        kept="pictures",
        differs="other model, layer, units or options",
    )
    pictures, histories, reached = [], [], []
    started = time.perf_counter()
    with vizkit.toolkit.deferred_interrupts() as stop:
        for number, chunk in enumerate(chunks):
            tag = f"chunk-{chunk[0]}-{hashlib.sha256(repr(chunk).encode()).hexdigest()[:16]}"
            saved = keep.load(tag)
            if saved is None:
                if len(chunks) > 1 and ctx.progress:
                    print(f"featvis: units {chunk[0]}-{chunk[-1]} ({number + 1} of {len(chunks)})", file=sys.stderr)
                try:
                    found = optimize(
                        im,
                        layer,
                        vectors[chunk] if vectors is not None else chunk,
                        objective=objective,
                        steps=steps,
                        param=param,
                        decorrelate=colour,
                        transforms=transforms,
                        regularize=regularize,
                        size=size,
                        diversity=k,
                        seed=ctx.seed,
                        lr=lr,
                        progress=ctx.progress,
                        diversity_weight=diversity_weight,
                        preprocess=ctx.preprocess,
                        stop=lambda: stop.requested,
                        keys=chunk,
                        redirect=redirect,
                    )
                except KeyboardInterrupt:
                    _say_stopped(stop.signal_name or "SIGINT", number, len(chunks), keep)
                    raise
                saved = {"images": found.images, "objective": found.objective, "reached": found.reached}
                keep.save(tag, saved)
            if stop.requested:
                _say_stopped(stop.signal_name or "SIGINT", number + 1, len(chunks), keep)
                raise KeyboardInterrupt(stop.signal_name)
            pictures.append(saved["images"])
            histories.append(saved["objective"])
            reached.append(saved["reached"])
    seconds_optimise = time.perf_counter() - started
    images = torch.cat(pictures)  # [U*K, 3, S, S] in [0, 1]
    history = torch.cat(histories, dim=1)  # [steps, U*K]
    reached_all = torch.cat(reached)

    # how far to trust each picture: every unit of the layer on it, the target's rank among them
    with torch.no_grad(), im.configured(layers=None, switches=False):
        every = torch.cat(
            [
                layer_values(im, normalise.forward(part).to(ctx.device, ctx.dtype), layer, objective, vectors).cpu()
                for part in images.split(ctx.batch_size)
            ]
        )  # [U*K, units]
    targets = torch.as_tensor(chosen, dtype=torch.long).repeat_interleave(k)
    value = every.gather(1, targets[:, None])[:, 0]
    rank = _rank(every, targets)
    n_units = every.shape[1]
    best = natural.best if natural is not None else np.full(len(chosen), np.nan, dtype=np.float32)
    ratio = value.numpy().reshape(len(chosen), k) / np.where(best > 0, best, np.nan)[:, None]
    rank_normalized = None
    if natural is not None and natural.every_best is not None:
        scale = torch.from_numpy(natural.every_best)
        usable = torch.nan_to_num(scale, nan=0.0) > 0
        relative = torch.where(usable, every / torch.where(usable, scale, torch.ones_like(scale)), float("-inf"))
        rank_normalized = _rank(relative, targets).numpy().reshape(len(chosen), k)
        rank_normalized = np.where(usable[targets].numpy().reshape(len(chosen), k), rank_normalized, 0)

    labels = _labels(ctx, objective, chosen)
    side_pictures = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    side_pictures = side_pictures.reshape(len(chosen), k, size, size, 3)
    records = []
    for row, unit in enumerate(chosen):
        record: dict[str, Any] = {
            "unit": unit,
            "label": labels[row],
            "reached": [round(float(v), 6) for v in value[row * k : (row + 1) * k]],
            "rank": [int(r) for r in rank[row * k : (row + 1) * k]],
        }
        if natural is not None:
            record["best_natural"] = None if not np.isfinite(best[row]) else round(float(best[row]), 6)
            record["ratio"] = [None if not np.isfinite(r) else round(float(r), 4) for r in ratio[row]]
        if rank_normalized is not None:
            record["rank_normalized"] = [int(r) if r > 0 else None for r in rank_normalized[row]]
        records.append(record)
    finite = ratio[np.isfinite(ratio)]
    summary: dict[str, Any] = {
        "layer": layer if layer else "output",
        "objective": objective,
        "units": chosen,
        "unit_labels": labels,
        "layer_units": n_units,
        "diversity": k,
        "steps": steps,
        "size": size,
        "param": param,
        "decorrelate": ("data" if color_from_data else "imagenet") if decorrelate else None,
        "transforms": transforms,
        "regularize": regularize,
        "redirect": redirect,
        "per_unit": records,
        "rank_1_fraction": round(float((rank == 1).float().mean()), 4),
        "exemplars": None,
        "seconds_natural": round(seconds_natural, 3),
        "seconds_optimise": round(seconds_optimise, 3),
        "units_per_minute": round(len(chosen) * 60 / max(seconds_optimise, 1e-9), 3),
    }
    if natural is not None:
        summary["exemplars"] = {
            "source": natural.source,
            "from": natural.where,
            "exact": natural.exact,
            "images": natural.n_images,
        }
        if natural.source == "data":
            summary["images"] = natural.paths
        summary["ratio_median"] = round(float(np.median(finite)), 4) if finite.size else None
        summary["ratio_min"] = round(float(finite.min()), 4) if finite.size else None
        summary["ratio_max"] = round(float(finite.max()), 4) if finite.size else None
        summary["ratio_above_1"] = round(float((finite > 1).mean()), 4) if finite.size else None
    arrays: dict[str, np.ndarray] = {
        "units": np.asarray(chosen, dtype=np.int64),
        "images": side_pictures,
        "objective": history.numpy().reshape(steps, len(chosen), k).astype(np.float32),
        "reached": value.numpy().reshape(len(chosen), k).astype(np.float32),
        "reached_transformed": reached_all.numpy().reshape(len(chosen), k).astype(np.float32),
        "rank": rank.numpy().reshape(len(chosen), k).astype(np.int64),
        "layer_values": every.numpy().astype(np.float32),
    }
    if vectors is not None:
        arrays["directions"] = vectors.numpy()
    if natural is not None:
        arrays["best_natural"] = best.astype(np.float32)
        arrays["ratio"] = ratio.astype(np.float32)
        arrays["exemplar_values"] = natural.values
        arrays["exemplar_images"] = natural.images.astype(np.int64)
        arrays["exemplar_thumbnails"] = natural.thumbnails
    if rank_normalized is not None:
        arrays["rank_normalized"] = rank_normalized.astype(np.int64)
    result = vizkit.Result(summary=summary, arrays=arrays)
    title = f"{layer or 'logits'} · {objective} · {param}{' decorrelated' if decorrelate else ''} · {steps} steps"
    result.figures.update(grid_figures(side_pictures, natural, records, title, n_units))
    for row, unit in enumerate(chosen):
        result.pictures[f"units/{unit}.png"] = unit_strip(side_pictures[row])
    summary["seconds_total"] = round(time.perf_counter() - started_all, 3)
    result.scratch.extend(keep.files())
    if ctx.out is not None:
        result.scratch.extend(sorted(Path(ctx.out).glob(".featvis-scan*.pt")))
    return result


COLOUR_SAMPLE = 256  # images, spread evenly over --data, for --color-from-data


def data_colours(ctx: vizkit.RunContext) -> ColorDecorrelation:
    """The colour decorrelation estimated from up to :data:`COLOUR_SAMPLE` ``--data`` images, as
    the model sees them (the square root of their RGB covariance)."""
    dataset = ctx.dataset()
    count = min(COLOUR_SAMPLE, len(dataset))
    indices = sorted({round(i * (len(dataset) - 1) / max(count - 1, 1)) for i in range(count)})
    sample = [ctx.preprocess.denormalize(x.float()).cpu() for x, _ in ctx.batches(indices=indices)]
    if not sample:
        raise ctx.skipped.none_readable(dataset)
    return ColorDecorrelation.from_images(torch.cat(sample))


def _say_stopped(signal_name: str, done: int, total: int, keep: vizkit.toolkit.ResumeFolder) -> None:
    where = f"kept in {keep.folder} (continue with --resume)" if keep.folder is not None else "nothing kept (no --out)"
    print(
        f"featvis: {signal_name} received; stopped with {done} of {total} chunks of units done, {where}",
        file=sys.stderr,
    )


def _resolved_regularizers(regularize: str, param: str) -> str:
    """``auto``: none for the Fourier basis (Lucid's choice: its spectrum does the work), DVT's
    L2 decay, blur and clipping of small-norm pixels for the pixel basis."""
    if regularize == "auto":
        return "none" if param == "fourier" else "l2,blur,clip"
    objectives.build(regularize)  # an unknown name: one line, before any work
    return regularize


def _result_best(folder: str, layer: str | None, channels: int) -> np.ndarray:
    """For ``top:N`` with ``--exemplars``: each unit's strongest recorded value in the result."""
    from .natural import _read_result

    document, arrays_path = _read_result(Path(folder))
    best = np.full(channels, np.nan, dtype=np.float32)
    with np.load(arrays_path) as npz:
        if document["analysis"] == "top9":
            for row, channel in enumerate(document.get("channels", [])):
                if 0 <= int(channel) < channels:
                    best[int(channel)] = npz["values"][row, 0]
        elif f"{layer}/top_values" in npz.files:
            values = npz[f"{layer}/top_values"][:, 0]
            best[: min(channels, len(values))] = values[:channels]
    return best
