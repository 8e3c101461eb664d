"""Training a CDBN greedily, one convolutional RBM at a time, resumable, with per-epoch metrics.

Layer 1 learns from random ``patch x patch`` crops of the whitened images, ``batch_size`` at a
time (as Lee et al.'s code does); layer l > 1 from the whole pooling maps of layer l - 1 (the
feed-forward probabilities, computed once when the layer starts). Every epoch appends a line to
``metrics.jsonl`` (the CD reconstruction error, the sparsity: mean P(h = 1) of the detection
units and P(p = 1) of the pooling units, sigma, momentum, seconds) and writes ``checkpoint.pt``
atomically. An epoch's randomness (the order, the crops, the Gibbs samples) comes from a
generator seeded by (seed, layer, epoch), and the momentum is in the checkpoint, so ``--resume``
gives the same network as an uninterrupted run.

Run folder: ``checkpoint.pt``, ``metrics.jsonl``, ``run.json`` (settings, data, seconds per layer).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vizkit import UsageError
from vizkit.framework import keep_json_lines, save_torch_atomic, write_atomic

from .network import CdbnConfig, CdbnNetwork, new_layer
from .rbm import Gradients, contrastive_divergence, feed_forward_pass, update

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class TrainSettings:
    """How long to train and on what: epochs per layer, images per class, an optional cap."""

    epochs: int = 20
    per_class: int = 30
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.per_class < 1:
            raise UsageError("--epochs and --per-class must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, not {self.limit}")


@dataclass
class Progress:
    """Where training stands: the layer being trained, epochs finished in it, seconds per layer."""

    layer: int = 1
    epoch: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def load_images(paths: list[Path], size: int, batch_size: int = 64) -> Tensor:
    """RGB images in [0, 1], resized (shorter side) and centre-cropped to ``size``."""
    import vizkit

    preprocess = vizkit.Preprocess(resize=size, crop=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return torch.cat(
        [vizkit.load_images(paths[i : i + batch_size], preprocess) for i in range(0, len(paths), batch_size)]
    )


def load_checkpoint(out: Path) -> dict[str, Any]:
    """The checkpoint a run folder holds (``weights_only``: tensors and plain values only)."""
    path = out / CHECKPOINT
    if not path.is_file():
        raise UsageError(f"{out} has no {CHECKPOINT}: not a CDBN run folder (made by `vizkit cdbn train`)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise UsageError(f"{path}: not a readable CDBN checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or "network" not in state or "progress" not in state:
        raise UsageError(f"{path}: not a CDBN checkpoint (no network or progress in it)")
    return state


def finished_network(out: Path) -> CdbnNetwork:
    """The run's network with its finished layers only (a layer still training is left out)."""
    state = load_checkpoint(out)
    network = CdbnNetwork.from_state(state["network"])
    try:
        progress, epochs = state["progress"], int(state["settings"]["epochs"])
        finished = int(progress["layer"]) if int(progress["epoch"]) >= epochs else int(progress["layer"]) - 1
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"{out / CHECKPOINT}: not a CDBN checkpoint (its progress is unreadable: {error!r})") from None
    finished = max(finished, network.config.frozen)
    if finished < 1:
        raise UsageError(f"{out}: no layer has finished training yet (layer 1 at epoch {progress['epoch']}/{epochs})")
    network.layers = network.layers[:finished]
    network.velocities = network.velocities[:finished]
    if finished < network.config.layers:
        network.config = network.config.truncated(finished)
    return network


def _epoch_generator(config: CdbnConfig, layer: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + layer * 10_007 + epoch)


def _layer_input(network: CdbnNetwork, images: Tensor, layer: int, batch_size: int = 16) -> Tensor:
    """What layer ``layer`` learns from: the whitened images (layer 1) or the pooling
    probabilities of layer ``layer - 1`` for every image."""
    parts = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            v = network.visible(images[start : start + batch_size])
            parts.append(v if layer == 1 else feed_forward_pass(network.layers[: layer - 1], v)[-1][1])
    return torch.cat(parts)


def visible_bias_from_data(inputs: Tensor, eps: float = 1e-3) -> Tensor:
    """Binary visible units' starting biases: the logit of each map's mean (Hinton's practical
    guide, Sec. 8.1). The pooling units below are on about 1 % of the time; from a bias of 0 the
    first epochs would be spent making the filters negative to explain all the zeros."""
    mean = inputs.mean(dim=(0, 2, 3)).clamp(eps, 1 - eps)
    return torch.log(mean / (1 - mean)).to(inputs.dtype)


def _batches(data: Tensor, config: CdbnConfig, layer: int, generator: torch.Generator) -> list[Tensor]:
    """The epoch's batches: a permutation of the inputs, ``batch_size`` at a time; layer 1 takes
    one random ``patch`` crop (shared by the batch) of each."""
    order = torch.randperm(data.shape[0], generator=generator)
    batches = []
    for start in range(0, data.shape[0], config.batch_size):
        batch = data[order[start : start + config.batch_size]]
        if layer == 1 and config.patch < data.shape[-1]:
            top, left = torch.randint(0, data.shape[-1] - config.patch + 1, (2,), generator=generator).tolist()
            batch = batch[..., top : top + config.patch, left : left + config.patch]
        batches.append(batch)
    return batches


def train_epoch(network: CdbnNetwork, data: Tensor, layer: int, epoch: int, progress: Callable | None = None) -> dict:
    """One epoch of CD-1 on layer ``layer`` (1-based) over ``data``; returns its metrics."""
    config = network.config
    rbm, velocity = network.layers[layer - 1], network.velocities[layer - 1]
    if layer == 1:
        rbm.sigma = config.sigma_at(epoch)
    generator = _epoch_generator(config, layer, epoch)
    momentum = config.momentum_at(epoch)
    started = time.perf_counter()
    squared, energy, hidden, pooled, count = 0.0, 0.0, 0.0, 0.0, 0
    batches = _batches(data, config, layer, generator)
    bar = progress(f"cdbn layer {layer} epoch {epoch + 1}", data.shape[0]) if progress else None
    with torch.no_grad():
        for batch in batches:
            step = contrastive_divergence(rbm, batch, generator)
            update(
                rbm,
                velocity,
                step,
                learning_rate=config.learning_rates[layer - 1],
                momentum=momentum,
                weight_decay=config.weight_decays[layer - 1],
                sparsity_target=config.sparsity[layer - 1],
                sparsity_weight=config.sparsity_weight,
            )
            squared += float((step.reconstruction - batch).pow(2).sum())
            energy += float(batch.pow(2).sum())
            hidden += float(step.positive_hidden.mean()) * batch.shape[0]
            pooled += float(step.positive_pooled.mean()) * batch.shape[0]
            count += batch.shape[0]
            if bar:
                bar.update(batch.shape[0])
    if bar:
        bar.close()
    if not all(bool(torch.isfinite(t).all()) for t in (rbm.weight, rbm.hidden_bias, rbm.visible_bias)):
        raise UsageError(f"layer {layer} diverged in epoch {epoch + 1} (non-finite weights); lower its learning rate")
    return {
        "layer": layer,
        "epoch": epoch + 1,
        "reconstruction_error": squared / max(count * batches[0][0].numel(), 1),
        "relative_error": squared / max(energy, 1e-12),
        "sparsity_hidden": hidden / max(count, 1),
        "sparsity_pooled": pooled / max(count, 1),
        "sparsity_target": config.sparsity[layer - 1],
        "sigma": rbm.sigma if rbm.gaussian else None,
        "momentum": momentum,
        "weight_norm": float(rbm.weight.norm()),
        "hidden_bias_mean": float(rbm.hidden_bias.mean()),
        "seconds": time.perf_counter() - started,
    }


def train(
    data: Path,
    out: Path,
    config: CdbnConfig,
    settings: TrainSettings,
    resume: bool = False,
    below: CdbnNetwork | None = None,
    progress: Callable[[str, int], Any] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> CdbnNetwork:
    """Train ``config.layers`` layers greedily on the images of ``data``; the run goes to ``out``.

    Args:
        data: a folder of images, or of class folders (``per_class`` drawn from each).
        out: the run folder (created; must not hold a run unless ``resume``).
        config: the network's settings (``config.frozen`` lower layers come from ``below``).
        settings: the training's.
        resume: continue the run in ``out`` from its checkpoint (its config and data are kept).
        below: a trained network whose first ``config.frozen`` layers are used as they are.
        progress: ``progress(description, total)`` returns a bar with ``update(n)`` and ``close()``.
        log: where one-line messages go.
    """
    from vizkit.data import images_per_class

    out = Path(out)
    if resume:
        state = load_checkpoint(out)
        network = CdbnNetwork.from_state(state["network"])
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
            raise UsageError(f"{out} already holds a CDBN run; pass --resume to continue it or choose another --out")
        paths = images_per_class(data, settings.per_class, config.seed, settings.limit)
        network, position = CdbnNetwork(config=config), Progress(layer=config.frozen + 1)
        if config.frozen:
            if below is None or len(below.layers) < config.frozen:
                raise UsageError(f"the {config.frozen} lower layer(s) to keep need a run that has them")
            network.layers = [r.clone() for r in below.layers[: config.frozen]]
            network.velocities = [
                Gradients(*(torch.zeros_like(t) for t in (r.weight, r.hidden_bias, r.visible_bias)))
                for r in network.layers
            ]
        out.mkdir(parents=True, exist_ok=True)
        (out / METRICS).write_text("")
    log(f"cdbn: {len(paths)} images, layers {position.layer}-{config.layers}, {settings.epochs} epochs each -> {out}")
    images = load_images(paths, config.image_size)
    inputs: Tensor | None = None
    while position.layer <= config.layers:
        layer = position.layer
        if position.epoch >= settings.epochs:
            position = Progress(layer=layer + 1, epoch=0, seconds=position.seconds)
            inputs = None
            continue
        if len(network.layers) < layer:  # a new layer: random filters, seeded by layer
            generator = torch.Generator().manual_seed(config.seed * 1000 + layer)
            rbm = new_layer(config, layer, generator)
            network.layers.append(rbm)
            network.velocities.append(
                Gradients(
                    torch.zeros_like(rbm.weight), torch.zeros_like(rbm.hidden_bias), torch.zeros_like(rbm.visible_bias)
                )
            )
        if inputs is None:
            inputs = _layer_input(network, images, layer)
            if position.epoch == 0 and not network.layers[layer - 1].gaussian:
                network.layers[layer - 1].visible_bias = visible_bias_from_data(inputs)
        record = train_epoch(network, inputs, layer, position.epoch, progress)
        position.seconds[str(layer)] = position.seconds.get(str(layer), 0.0) + record["seconds"]
        position.epoch += 1
        with (out / METRICS).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        _checkpoint(out, network, position, settings, paths, data)
        log(
            f"cdbn: layer {layer} epoch {position.epoch}/{settings.epochs}: relative error "
            f"{record['relative_error']:.3f}, sparsity {record['sparsity_hidden']:.4f} "
            f"(target {record['sparsity_target']}), {record['seconds']:.1f} s"
        )
    return network


def _checkpoint(
    out: Path, network: CdbnNetwork, position: Progress, settings: TrainSettings, paths: list[Path], data: Path
) -> None:
    state = {
        "network": network.state(),
        "progress": {"layer": position.layer, "epoch": position.epoch, "seconds": dict(position.seconds)},
        "settings": {"epochs": settings.epochs, "per_class": settings.per_class, "limit": settings.limit},
        "files": [str(p) for p in paths],
    }
    save_torch_atomic(out / CHECKPOINT, state)
    finished = position.layer if position.epoch >= settings.epochs else position.layer - 1
    summary = {
        "config": network.config.to_dict(),
        "settings": state["settings"],
        "data": str(data),
        "images": len(paths),
        "files_sha256": hashlib.sha256("\n".join(str(p) for p in paths).encode()).hexdigest(),
        "layers_finished": finished,
        "seconds_per_layer": dict(position.seconds),
    }
    write_atomic(out / RUN_JSON, (json.dumps(summary, indent=2) + "\n").encode())


def _truncate_metrics(path: Path, position: Progress) -> None:
    """Drop metric lines of epochs after the checkpoint (a crash between the metrics line and
    the checkpoint could leave one)."""
    keep_json_lines(path, lambda record: (record["layer"], record["epoch"]) <= (position.layer, position.epoch))
