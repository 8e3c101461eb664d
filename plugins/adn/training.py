"""Training an ADN layer by layer (ICCV 2011, Algorithm 1), resumable, with per-epoch metrics.

For each layer l in turn, for each epoch: infer every training image's layer-l code by ISTA
(the layers below fixed, their switches the ones their own inference finds), then solve for
layer l's filters by conjugate gradients with the codes and switches fixed, and normalise them.
Every epoch appends a line to ``metrics.jsonl`` (the cost through the ISTA iterations, the
reconstruction error, the sparsity, the CG residuals, the seconds) and writes ``checkpoint.pt``
atomically; ``resume`` continues after the last finished epoch and gives the same filters as an
uninterrupted run, because every epoch's inference starts from zero codes (a deterministic
function of the filters) and the data order never changes.

Run folder: ``checkpoint.pt`` (the network so far, the position, the data's file list),
``metrics.jsonl``, ``run.json`` (settings, data, seconds per layer; rewritten each epoch).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vizkit import UsageError
from vizkit.framework import keep_json_lines, save_torch_atomic, write_atomic

from .contrast import prepare
from .learning import cg_filters_batched
from .network import AdnConfig, AdnNetwork, random_filters
from .pooling import Switches, unpool
from .reconstruction import reconstruct_unpooled

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class TrainSettings:
    """How to train: epochs per layer, CG steps per epoch, batch size, images per class."""

    epochs: int = 5
    cg_steps: int = 10
    batch_size: int = 32
    per_class: int = 30
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.cg_steps < 1 or self.batch_size < 1 or self.per_class < 1:
            raise UsageError("--epochs, --cg-steps, --batch-size and --per-class must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, not {self.limit}")


@dataclass
class Progress:
    """Where training stands: layers finished, epochs finished in the current layer."""

    layer: int = 1
    epoch: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def training_images(folder: Path, settings: TrainSettings, seed: int) -> list[Path]:
    """The images to train on: with class subfolders (an ImageFolder or Caltech-101 tree),
    ``per_class`` images drawn (seeded) from each (the paper's 3,060 = 30 from each of
    Caltech-101's 102 folders, ``BACKGROUND_Google`` included); otherwise every image in
    ``folder``. Sorted; at most ``limit`` (:func:`vizkit.data.images_per_class`)."""
    from vizkit.data import images_per_class

    return images_per_class(folder, settings.per_class, seed, settings.limit)


def load_prepared(paths: list[Path], size: int, batch_size: int = 64) -> Tensor:
    """The images as the ADN sees them: resized (shorter side), centre-cropped to ``size``,
    grey, contrast-normalised: ``[N, 1, size, size]``."""
    import vizkit

    preprocess = vizkit.Preprocess(resize=size, crop=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    parts = [
        prepare(vizkit.load_images(paths[i : i + batch_size], preprocess)) for i in range(0, len(paths), batch_size)
    ]
    return torch.cat(parts)


def _files_digest(paths: list[Path]) -> str:
    return hashlib.sha256("\n".join(str(p) for p in paths).encode()).hexdigest()


def load_checkpoint(out: Path) -> dict[str, Any]:
    """The checkpoint a run folder holds (``weights_only``: tensors and plain values only)."""
    path = out / CHECKPOINT
    if not path.is_file():
        raise UsageError(f"{out} has no {CHECKPOINT}: not an ADN run folder (made by `vizkit adn train`)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise UsageError(f"{path}: not a readable ADN checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or "network" not in state or "progress" not in state:
        raise UsageError(f"{path}: not an ADN checkpoint (no network or progress in it)")
    return state


class _Codes:
    """Every training image's layer-l code (pooled maps and switches, int32 indices to bound
    memory) and the switches of the layers below, kept between inference and the filter update."""

    def __init__(self) -> None:
        self.p: list[Tensor] = []
        self.index: list[Tensor] = []
        self.below: list[list[Switches]] = []
        self.region: tuple[int, int, int] = (1, 1, 1)
        self.shape: tuple[int, int, int] = (1, 1, 1)

    def batch(self, i: int) -> tuple[Tensor, list[Switches]]:
        switches = Switches(index=self.index[i].long(), shape=self.shape, region=self.region)
        return unpool(self.p[i], switches), self.below[i]


def _batches(images: Tensor, size: int) -> Iterator[tuple[int, Tensor]]:
    for number, start in enumerate(range(0, images.shape[0], size)):
        yield number, images[start : start + size]


def train(
    data: Path,
    out: Path,
    config: AdnConfig,
    settings: TrainSettings,
    resume: bool = False,
    progress: Callable[[str, int], Any] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> AdnNetwork:
    """Train ``config.layers`` layers on the images of ``data``; the run goes to ``out``.

    Args:
        data: a folder of images, or of class folders (``per_class`` drawn from each).
        out: the run folder (created; must not hold a run unless ``resume``).
        config: the network's settings.
        settings: the training's.
        resume: continue the run in ``out`` from its checkpoint (its config and data are kept).
        progress: ``progress(description, total)`` returns a bar with ``update(n)`` and ``close()``
            (vizkit.toolkit.progress.progress_bar); None: silent.
        log: where one-line messages go.
    """
    out = Path(out)
    if resume:
        state = load_checkpoint(out)
        network = AdnNetwork.from_state(state["network"])
        config = network.config
        paths = [Path(p) for p in state["files"]]
        position = Progress(**state["progress"])
        settings = TrainSettings(**state["settings"])
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UsageError(f"cannot resume: {len(missing)} training images are gone, e.g. {missing[0]}")
        _truncate_metrics(out / METRICS, position)
    else:
        if (out / CHECKPOINT).exists():
            raise UsageError(f"{out} already holds an ADN run; pass --resume to continue it or choose another --out")
        paths = training_images(Path(data), settings, config.seed)
        network, position = AdnNetwork(config=config), Progress()
        out.mkdir(parents=True, exist_ok=True)
        (out / METRICS).write_text("")
    log(f"adn: {len(paths)} images, {config.layers} layers, {settings.epochs} epochs each -> {out}")
    images = load_prepared(paths, config.image_size)
    lower_switches: list[list[Switches]] = [
        [] for _ in range((images.shape[0] + settings.batch_size - 1) // settings.batch_size)
    ]

    while position.layer <= config.layers:
        layer = position.layer
        if position.epoch >= settings.epochs:  # the layer is finished
            position = Progress(layer=layer + 1, epoch=0, seconds=position.seconds)
            continue
        if len(network.filters) < layer:  # a new layer: random filters, seeded by layer
            generator = torch.Generator().manual_seed(config.seed * 1000 + layer)
            network.filters.append(random_filters(config, layer, generator))
        if layer > 1 and len(lower_switches[0]) != layer - 1:
            lower_switches = _lower_switches(network, images, layer, settings, progress)
        _train_epoch(network, images, layer, lower_switches, settings, position, out, progress)
        position.epoch += 1
        _checkpoint(out, network, position, settings, paths, data)
        log(f"adn: layer {layer} epoch {position.epoch}/{settings.epochs} done")
    return network


def _lower_switches(
    network: AdnNetwork, images: Tensor, layer: int, settings: TrainSettings, progress: Callable | None
) -> list[list[Switches]]:
    """Per batch, the switches of layers 1..layer-1 from their own (cold-start) inference."""
    bar = progress(f"adn layers 1-{layer - 1} switches", images.shape[0]) if progress else None
    result = []
    for _, y in _batches(images, settings.batch_size):
        codes = network.infer(y, layers=layer - 1)
        result.append([code.switches for code in codes])
        if bar:
            bar.update(y.shape[0])
    if bar:
        bar.close()
    return result


def _train_epoch(
    network: AdnNetwork,
    images: Tensor,
    layer: int,
    lower: list[list[Switches]],
    settings: TrainSettings,
    position: Progress,
    out: Path,
    progress: Callable | None,
) -> None:
    """One epoch of layer ``layer``: infer all codes, update the filters, append the metrics."""
    config = network.config
    started = time.perf_counter()
    codes = _Codes()
    codes.region = config.regions[layer - 1]
    n = images.shape[0]
    step_costs = torch.zeros(config.ista_steps + 1, dtype=torch.float64)
    final_steps: list[float] = []
    squared_error, l1, nonzero, entries = 0.0, 0.0, 0, 0
    bar = progress(f"adn layer {layer} epoch {position.epoch + 1} ISTA", n) if progress else None
    for number, y in _batches(images, settings.batch_size):
        below = lower[number] if layer > 1 else []
        code = network.infer_layer(y, layer, below)
        step_costs += torch.tensor(code.costs, dtype=torch.float64)
        final_steps.extend(code.steps)
        codes.p.append(code.p)
        codes.index.append(code.switches.index.to(torch.int32))
        codes.below.append(below)
        codes.shape = code.switches.shape
        residual = reconstruct_unpooled(code.z, network.filters[:layer], below) - y
        squared_error += float(residual.pow(2).sum())
        l1 += float(code.p.abs().sum())
        nonzero += int((code.p != 0).sum())
        entries += code.p.numel()
        if bar:
            bar.update(y.shape[0])
    if bar:
        bar.close()
    seconds_inference = time.perf_counter() - started
    steps_used = {  # of the filters the codes were inferred with, before they are updated
        "step_size_start": network.initial_step(layer),
        "step_size_end_median": float(torch.tensor(final_steps).median()),
        "step_size_guaranteed": network.step_size(layer),
    }

    def batches() -> Iterator[tuple[Tensor, Tensor, list[Switches]]]:
        for number, y in _batches(images, settings.batch_size):
            z, below = codes.batch(number)
            yield z, y, below

    cg_started = time.perf_counter()
    filters, residuals = cg_filters_batched(batches, network.filters[:layer], iterations=settings.cg_steps)
    network.filters[layer - 1] = filters
    seconds = time.perf_counter() - started
    position.seconds[str(layer)] = position.seconds.get(str(layer), 0.0) + seconds
    pixels = float(images[:, :1].numel())
    record = {
        "layer": layer,
        "epoch": position.epoch + 1,
        "cost": (0.5 * config.lambdas[layer - 1] * squared_error + l1) / n,
        "ista_costs": [round(float(c) / n, 6) for c in step_costs],
        "reconstruction_error": squared_error / pixels,
        "relative_error": squared_error / float(images.pow(2).sum()),
        "l1_per_image": l1 / n,
        "sparsity": 1.0 - nonzero / max(entries, 1),
        "sparsity_unpooled": 1.0 - nonzero / max(entries * math.prod(config.regions[layer - 1]), 1),
        "cg_residuals": [float(r) for r in residuals],
        **steps_used,
        "seconds_inference": seconds_inference,
        "seconds_filters": time.perf_counter() - cg_started,
        "seconds": seconds,
    }
    with (out / METRICS).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _checkpoint(
    out: Path, network: AdnNetwork, position: Progress, settings: TrainSettings, paths: list[Path], data: Path
) -> None:
    state = {
        "network": network.state(),
        "progress": {"layer": position.layer, "epoch": position.epoch, "seconds": dict(position.seconds)},
        "settings": {k: getattr(settings, k) for k in ("epochs", "cg_steps", "batch_size", "per_class", "limit")},
        "files": [str(p) for p in paths],
    }
    save_torch_atomic(out / CHECKPOINT, state)
    summary = {
        "config": network.config.to_dict(),
        "settings": state["settings"],
        "data": str(data),
        "images": len(paths),
        "files_sha256": _files_digest(paths),
        "layers_finished": position.layer if position.epoch >= settings.epochs else position.layer - 1,
        "seconds_per_layer": dict(position.seconds),
    }
    write_atomic(out / RUN_JSON, (json.dumps(summary, indent=2) + "\n").encode())


def _truncate_metrics(path: Path, position: Progress) -> None:
    """Drop metric lines of epochs after the checkpoint (a crash between the metrics line and
    the checkpoint could leave one)."""
    keep_json_lines(path, lambda record: (record["layer"], record["epoch"]) <= (position.layer, position.epoch))


def finished_network(out: Path) -> AdnNetwork:
    """The run's network with its finished layers only (a layer still training is left out)."""
    state = load_checkpoint(out)
    network = AdnNetwork.from_state(state["network"])
    progress, epochs = state["progress"], state["settings"]["epochs"]
    finished = progress["layer"] if progress["epoch"] >= epochs else progress["layer"] - 1
    if finished < 1:
        raise UsageError(f"{out}: no layer has finished training yet (layer 1 at epoch {progress['epoch']}/{epochs})")
    network.filters = network.filters[:finished]
    network.config = network.config.truncated(finished) if finished < network.config.layers else network.config
    return network
