"""The training loop: the untrained model, one SGD step, an epoch's metrics, validation, and
:func:`train`, which writes the run's files (metrics.jsonl, checkpoint.pt, best.pt, snapshots)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

import vizkit
from vizkit import Preprocess, UsageError, VizkitError
from vizkit.framework import save_torch_atomic
from vizkit.models import clip_feature_scale
from vizkit.toolkit import deferred_interrupts, progress_bar

from .checkpoint import _checkpoint, _starting_point, _stop_training, label_record
from .config import TrainConfig, _schedule, make_scheduler
from .data import EpochOrder, loaders


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(loss, top-1 accuracy) over a loader."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
        count += labels.numel()
    return loss / max(count, 1), correct / max(count, 1)


def untrained_model(spec: str, app=None) -> tuple[nn.Module, Preprocess]:
    """The architecture ``spec`` names, freshly initialised (never a registered model's shipped
    weights: training starts from the recipe's initialisation), and its preprocessing."""
    model, entry = vizkit.build_model(spec, app)
    setattr(model, "vizkit_info", replace(vizkit.models.model_info(model), spec=spec))  # noqa: B010 - a plain attribute
    return model, (entry.preprocess if entry and entry.preprocess else Preprocess())


def check_model_fits(model: nn.Module, crop: int, classes: int, device: torch.device) -> None:
    """A UsageError, before any training, unless ``model`` takes ``crop`` x ``crop`` images and
    has an output for each of the ``classes`` class folders (cross-entropy fails on a label past
    the last output, and a fixed-size fc layer on another input size, both with a bare traceback
    after the data was loaded). One forward of a zero image in eval mode: no random number is drawn."""
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, 3, crop, crop, device=device))
    except RuntimeError as error:
        raise UsageError(f"the model does not take {crop}x{crop} crops (--crop): {error}") from None
    finally:
        model.train(mode)
    outputs = logits.shape[1] if isinstance(logits, torch.Tensor) and logits.dim() == 2 else None
    if outputs is None or outputs < classes:
        raise UsageError(
            f"--data has {classes} class folders but the model has {outputs} outputs: "
            "train a model with at least one output per class"
        )


def _record_run(
    out: Path, spec: str | None, config: TrainConfig, preprocess: Preprocess, command: list[str] | None
) -> None:
    """run.json, when the architecture has a spec to rebuild it from. The run's command: a
    resumed run is the same run, so not "--resume"."""
    if spec:
        run_command = [arg for arg in command if arg != "--resume"] if command else command
        vizkit.toolkit.write_run_info(out, spec, config.data, asdict(config), preprocess, run_command)


def _step(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    epoch: int,
    sums: dict[str, Any],
) -> None:
    """One SGD step on a batch (then feature scale clipping); its loss, correct predictions and
    clipped filters are added to the epoch's running ``sums``."""
    logits = model(images)
    loss = nn.functional.cross_entropy(logits, labels)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    if config.clip_radius is not None:
        sums["clipped"] += clip_feature_scale(model, config.clip_radius)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise VizkitError(f"training diverged at epoch {epoch} (loss {value}); try a lower --lr")
    sums["loss"] += value * labels.numel()
    sums["correct"] += int((logits.argmax(1) == labels).sum())
    sums["seen"] += labels.numel()
    sums["batches"] += 1


def _epoch_sums(position: dict | None, epoch: int) -> dict[str, Any]:
    """The running sums epoch ``epoch`` starts from: a resumed position's inside it, else zero."""
    if position is not None and position["epoch"] == epoch:
        return dict(position["sums"])
    return {"loss": 0.0, "correct": 0, "seen": 0, "clipped": 0, "batches": 0}


def _epoch_metrics(sums: dict[str, Any], val_loss: float, val_accuracy: float, lr: float) -> dict[str, Any]:
    """An epoch's line of metrics.jsonl, from its running ``sums`` and the validation pass."""
    seen = max(sums["seen"], 1)
    return {
        "train_loss": sums["loss"] / seen,
        "train_accuracy": sums["correct"] / seen,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "lr": lr,
        "filters_clipped": sums["clipped"],
    }


def train(
    model: nn.Module,
    config: TrainConfig,
    preprocess: Preprocess,
    resume: bool = False,
    progress: bool = False,
    model_spec: str | None = None,
    command: list[str] | None = None,
    stop_after: Callable[[int, int], bool] | None = None,
) -> dict:
    """Train ``model`` in place; returns the last epoch's metrics.

    ``model_spec`` (how ``vizkit.load_model`` rebuilds the architecture) is recorded in
    ``run.json`` together with the settings and ``command``. SIGINT or SIGTERM stop the run
    between two steps, after writing the checkpoint (KeyboardInterrupt is raised then);
    ``stop_after(epoch, batches_done)`` returning True does the same (for tests)."""
    device = vizkit.data.ensure_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    train_loader, val_loader, classes = loaders(config, preprocess)
    order: EpochOrder = train_loader.sampler  # type: ignore[assignment]
    train_labels: list[int] | None = train_loader.dataset.labels  # type: ignore[attr-defined]  # --shuffle-labels
    # channels-last: the same arithmetic, ~10-20% faster convolutions on a CPU (measured on zfnet-compact)
    model.to(device).to(memory_format=torch.channels_last)
    check_model_fits(model, config.crop, len(classes), device)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = make_scheduler(optimiser, config)
    checkpoint = out / "checkpoint.pt"
    start_epoch, best, position = _starting_point(
        checkpoint, resume, config, model, optimiser, scheduler, device, train_labels
    )
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    _record_run(out, model_spec or vizkit.models.model_info(model).spec, config, preprocess, command)

    def save_checkpoint(epoch_done: int, where: dict | None) -> None:
        save_torch_atomic(
            checkpoint, _checkpoint(model, optimiser, scheduler, config, epoch_done, where, best, train_labels)
        )

    metrics: dict = {}
    with deferred_interrupts() as stop:
        for epoch in range(start_epoch, config.epochs + 1):
            model.train()
            started = time.perf_counter()
            sums, position = _epoch_sums(position, epoch), None
            order.epoch, order.start = epoch, sums["batches"] * config.batch_size
            last_save = time.monotonic()
            bar = _epoch_bar(sums, len(train_loader), epoch, config, progress)
            for images, labels in train_loader:
                images, labels = images.to(device, memory_format=torch.channels_last), labels.to(device)
                _step(model, optimiser, images, labels, config, epoch, sums)
                bar.update(1)
                stopping = stop.requested or (stop_after is not None and stop_after(epoch, sums["batches"]))
                if stopping or time.monotonic() - last_save >= config.checkpoint_seconds:
                    save_checkpoint(epoch - 1, {"epoch": epoch, "sums": dict(sums)})
                    last_save = time.monotonic()
                if stopping:
                    bar.close()
                    _stop_training(out, epoch, sums["batches"], command, stop.signal_name)
            bar.close()
            val_loss, val_accuracy = evaluate(model, val_loader, device)
            _schedule(scheduler, config, epoch, val_accuracy)
            improved = val_accuracy > best["val_accuracy"]
            if improved:
                best = {"epoch": epoch, "val_accuracy": val_accuracy}
                shuffled = label_record(config) if config.shuffle_labels else {}
                save_torch_atomic(out / "best.pt", {"model": model.state_dict(), **best, **shuffled})
            metrics = {
                "epoch": epoch,
                **_epoch_metrics(sums, val_loss, val_accuracy, optimiser.param_groups[0]["lr"]),
                "seconds": round(time.perf_counter() - started, 1),  # of this process's share of the epoch
                "best": improved,  # a new best validation accuracy: best.pt holds this epoch
                "best_epoch": best["epoch"],
                # train_accuracy is then against the shuffled labels: memorisation, not learning
                **({"train_labels": "shuffled"} if config.shuffle_labels else {}),
            }
            _append_json_line(out / "metrics.jsonl", metrics)
            save_checkpoint(epoch, None)
            if epoch in config.snapshot_epochs:
                save_torch_atomic(out / f"weights_epoch{epoch:03d}.pt", model.state_dict())
            if progress:
                print(json.dumps(metrics), flush=True)
    save_torch_atomic(out / "weights.pt", model.state_dict())
    return metrics


def _append_json_line(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as log:
        log.write(json.dumps(record) + "\n")


def _epoch_bar(sums: dict[str, Any], batches: int, epoch: int, config: TrainConfig, progress: bool) -> Any:
    """The progress bar of an epoch, from the batches it resumes at."""
    return progress_bar(
        total=sums["batches"] + batches,
        initial=sums["batches"],
        desc=f"epoch {epoch}/{config.epochs}",
        unit="batches",
        enabled=progress,
    )
