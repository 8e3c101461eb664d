"""``vizkit train``: a ZF-topology backbone trained with the paper's recipe (PAPER.md §1).

A command, contributed through the ``register_commands`` hook like any plugin's.

SGD with momentum 0.9, learning rate annealed (x0.1) when validation error plateaus, dropout 0.5
on fc6/fc7 (in the model), random crops and flips, small-Gaussian initialisation (in the model),
and feature scale clipping of every conv filter after every step (switchable off). Each epoch
appends a line to ``metrics.jsonl`` (``best`` marks a new best validation accuracy), writes
``checkpoint.pt`` (model, optimiser, scheduler, epoch, best so far) atomically, keeps ``best.pt``
(the weights of the best validation epoch) and a copy of the weights at the snapshot epochs;
``resume`` continues from the checkpoint.

Interruption and exact resume: each sample's crop and flip are drawn from a generator seeded by
(seed, epoch, sample index) and each epoch's order from (seed, epoch), so what a batch holds does
not depend on the number of workers or on where a run was stopped; the checkpoint (also written
every ``checkpoint_seconds`` inside an epoch, and when SIGINT or SIGTERM arrives, between two
steps) holds the model, optimiser, scheduler, every random generator and the position in the
epoch. A resumed run therefore gives the same weights as an uninterrupted one. ``--schedule cosine`` anneals to 0 over ``--epochs``
instead of cutting on plateaus; ``--patience`` and ``--min-epochs-before-decay`` tune the plateau
rule (the bundled model's note: the rate was cut while validation accuracy was still rising).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import click
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

import vizkit
from vizkit import Preprocess, UsageError, VizkitError
from vizkit.framework import save_torch_atomic, write_atomic
from vizkit.models import clip_feature_scale
from vizkit.toolkit import deferred_interrupts, progress_bar


@dataclass
class TrainConfig:
    data: str
    out: str
    epochs: int = 30
    batch_size: int = 32  # the bundled model's recipe (128 gives Imagenette only 74 steps an epoch)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_radius: float | None = 0.1  # None: no feature scale clipping
    crop: int = 144
    resize: int = 160
    min_crop_scale: float = 0.25
    snapshot_epochs: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 30, 40, 64])
    patience: int = 2
    schedule: str = "plateau"  # plateau: x0.1 when validation error stops falling; cosine: to 0 over the epochs
    min_epochs_before_decay: int = 0  # plateau: no decay before this many epochs
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    limit: int | None = None  # use only this many training images (for quick runs and tests)
    checkpoint_seconds: float = 60.0  # inside an epoch, write the checkpoint at least this often


SCHEDULES = ("plateau", "cosine")


def resumable_settings(config: TrainConfig) -> dict:
    """The settings a resumed run must share with the checkpoint (not device or workers, nor
    epochs unless the schedule depends on them)."""
    free = ["device", "workers", "checkpoint_seconds"]
    if config.schedule != "cosine":
        free.append("epochs")
    return {k: v for k, v in asdict(config).items() if k not in free}


def make_scheduler(optimiser: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The learning-rate schedule of ``config.schedule`` (stepped once per epoch by :func:`train`)."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=0.1, patience=config.patience)


def _mix(*numbers: int) -> int:
    """One 63-bit seed from several integers (distinct tuples give unrelated seeds)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, dtype=np.uint64)[0] >> 1)


class EpochOrder(Sampler):
    """The training order of one epoch, drawn from (seed, epoch); yields (epoch, index) pairs from
    position ``start`` on, so a resumed epoch continues exactly where it stopped."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch, self.start = size, seed, 1, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch)))
        for index in order[self.start :].tolist():
            yield self.epoch, index

    def __len__(self) -> int:
        return self.size - self.start


class AugmentedSamples(Dataset):
    """Training samples whose random augmentation is seeded by (seed, epoch, index): a sample gets
    the same crop and flip whichever worker loads it and whenever the run was interrupted."""

    def __init__(self, samples: Dataset, transform: Callable, seed: int) -> None:
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        image, label = self.samples[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, epoch, index))
            return self.transform(image), label


def loaders(config: TrainConfig, preprocess: Preprocess) -> tuple[DataLoader, DataLoader, list[str]]:
    from torchvision import datasets, transforms  # here, not at the top: torchvision costs seconds at start-up

    root = Path(config.data)
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise UsageError(f"--data {root} must hold train/ and val/ ImageFolder trees")
    normalise = transforms.Normalize(preprocess.mean, preprocess.std)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(config.crop, scale=(config.min_crop_scale, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalise,
        ]
    )
    val_tf = replace(preprocess, resize=config.resize, crop=config.crop).transform()
    train_set = datasets.ImageFolder(train_dir, loader=vizkit.load_image)  # EXIF, 16-bit, alpha
    val_set = datasets.ImageFolder(val_dir, val_tf, loader=vizkit.load_image)
    if train_set.classes != val_set.classes:
        raise UsageError("train/ and val/ have different class folders")
    if config.limit:
        generator = torch.Generator().manual_seed(config.seed)
        train_set = torch.utils.data.Subset(
            train_set, torch.randperm(len(train_set), generator=generator)[: config.limit].tolist()
        )
    samples = AugmentedSamples(train_set, train_tf, config.seed)
    train = DataLoader(
        samples,
        batch_size=config.batch_size,
        sampler=EpochOrder(len(samples), config.seed),
        num_workers=config.workers,
        generator=torch.Generator().manual_seed(config.seed),  # not the global one, which dropout uses
        drop_last=False,
        persistent_workers=config.workers > 0,
        worker_init_fn=vizkit.data.workers_ignore_stop_signals,  # Ctrl-C reaches them too: the main process saves
    )
    val = DataLoader(
        val_set,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.workers,
        generator=torch.Generator().manual_seed(config.seed),
        persistent_workers=config.workers > 0,
        worker_init_fn=vizkit.data.workers_ignore_stop_signals,
    )
    return train, val, val_set.classes


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


def _starting_point(
    checkpoint: Path,
    resume: bool,
    config: TrainConfig,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
) -> tuple[int, dict, dict | None]:
    """Where training starts: the first epoch to run, the best validation epoch so far (kept in
    best.pt), and the position inside an unfinished epoch (its batches done and running sums;
    None: from its start).

    With ``resume`` the model, optimiser, scheduler and random generators are the checkpoint's;
    without, a previous run in the folder is discarded (its log and best epoch are not mixed in)."""
    out = checkpoint.parent
    best = {"epoch": 0, "val_accuracy": -1.0}
    if resume:
        if not checkpoint.exists():
            raise UsageError(f"--resume: no checkpoint in {out}")
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["config"] != resumable_settings(config):
            raise UsageError(
                f"{checkpoint} was written with other training settings; drop --resume or use another --out"
            )
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        _set_random_state(state["rng"])
        return state["epoch"] + 1, state.get("best", best), state.get("position")
    if checkpoint.exists() or (out / "metrics.jsonl").exists():
        print(f"train: discarding the previous run in {out} (pass --resume to continue it)", file=sys.stderr)
        names = ["metrics.jsonl", "best.pt", "checkpoint.pt", "weights.pt"]
        names += [path.name for path in out.glob("weights_epoch*.pt")]  # evolution would mix them in
        for stale in names:
            (out / stale).unlink(missing_ok=True)
    return 1, best, None


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


def _checkpoint(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    epoch_done: int,
    where: dict | None,
    best: dict,
) -> dict[str, Any]:
    """What checkpoint.pt holds: everything ``--resume`` needs to go on as if never stopped."""
    return {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _random_state(),
        "epoch": epoch_done,  # complete epochs
        "position": where,  # None, or the unfinished epoch's batches done and running sums
        "best": best,
        "config": resumable_settings(config),
    }


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


def _schedule(scheduler: Any, config: TrainConfig, epoch: int, val_accuracy: float) -> None:
    """The learning rate's step after an epoch: cosine annealing, or a cut on a plateau of the
    validation error (never before ``min_epochs_before_decay``)."""
    if config.schedule == "cosine":
        scheduler.step()
    elif epoch > config.min_epochs_before_decay:
        scheduler.step(1.0 - val_accuracy)


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
    # channels-last: the same arithmetic, ~10-20% faster convolutions on a CPU (measured on zfnet-compact)
    model.to(device).to(memory_format=torch.channels_last)
    check_model_fits(model, config.crop, len(classes), device)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = make_scheduler(optimiser, config)
    checkpoint = out / "checkpoint.pt"
    start_epoch, best, position = _starting_point(checkpoint, resume, config, model, optimiser, scheduler, device)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    _record_run(out, model_spec or vizkit.models.model_info(model).spec, config, preprocess, command)

    def save_checkpoint(epoch_done: int, where: dict | None) -> None:
        save_torch_atomic(checkpoint, _checkpoint(model, optimiser, scheduler, config, epoch_done, where, best))

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
                save_torch_atomic(out / "best.pt", {"model": model.state_dict(), **best})
            metrics = {
                "epoch": epoch,
                **_epoch_metrics(sums, val_loss, val_accuracy, optimiser.param_groups[0]["lr"]),
                "seconds": round(time.perf_counter() - started, 1),  # of this process's share of the epoch
                "best": improved,  # a new best validation accuracy: best.pt holds this epoch
                "best_epoch": best["epoch"],
            }
            _append_json_line(out / "metrics.jsonl", metrics)
            save_checkpoint(epoch, None)
            if epoch in config.snapshot_epochs:
                save_torch_atomic(out / f"weights_epoch{epoch:03d}.pt", model.state_dict())
            if progress:
                print(json.dumps(metrics), flush=True)
    save_torch_atomic(out / "weights.pt", model.state_dict())
    return metrics


def _random_state() -> dict:
    """Every random generator a training step can touch (dropout draws from torch's)."""
    _kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    numpy_state = {
        "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
        "pos": int(pos),
        "gauss": [int(has_gauss), cached],
    }
    # plain tensors, ints and tuples only: the checkpoint loads with weights_only=True
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}


def _set_random_state(state: Any) -> None:
    if isinstance(state, torch.Tensor):  # checkpoints written before the other generators were saved
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy_state["pos"], numpy_state["gauss"][0], numpy_state["gauss"][1]))


def _append_json_line(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as log:
        log.write(json.dumps(record) + "\n")


def _epoch_bar(sums: dict[str, Any], batches: int, epoch: int, config: TrainConfig, progress: bool) -> Any:
    """The progress bar of an epoch, from the batches it resumes at."""
    return progress_bar(
        total=sums["batches"] + batches,
        initial=sums["batches"],
        desc=f"epoch {epoch}/{config.epochs}",
        enabled=progress,
    )


def _stop_training(out: Path, epoch: int, batches: int, command: list[str] | None, signal_name: str | None) -> NoReturn:
    """Training stopped (a signal, or ``stop_after``) with its checkpoint saved: how to resume,
    then KeyboardInterrupt."""
    _say_how_to_resume(out, epoch, batches, command, signal_name)
    raise KeyboardInterrupt(signal_name or "stop_after")


def _say_how_to_resume(out: Path, epoch: int, batches: int, command: list[str] | None, signal_name: str | None) -> None:
    again = list(command or ["vizkit", "train", "...", "--out", str(out)])
    if "--resume" not in again:
        again.append("--resume")
    why = f"{signal_name} received" if signal_name else "stopped"
    print(
        f"train: {why}; checkpoint saved in {out} at epoch {epoch}, batch {batches}. "
        f"To continue exactly where it stopped: {' '.join(again)}",
        file=sys.stderr,
    )


def export_weights(
    run_dir: str | Path,
    destination: str | Path,
    names: dict[str, str] | None = None,
    half: bool = True,
    which: str = "best",
) -> dict:
    """Package a training run's weights for shipping: ``<destination>.pt`` (a bare state_dict,
    fp16 by default) and ``<destination>.json`` (model, classes, preprocessing, the epoch and its
    validation accuracy, the best epoch and when the learning rate was cut, and the command that
    reproduces the run).

    ``which``: ``best`` (best.pt, the best validation epoch), ``last`` (the last complete epoch,
    checkpoint.pt), or several of ``best``, ``last`` and snapshot epoch numbers joined by ``+``
    (``best+last``, ``30+best+last``): the uniform average of those epochs' weights (weight
    averaging along the end of the trajectory, as in stochastic weight averaging, Izmailov et al.
    2018). An average was never evaluated by the training loop: its ``val_accuracy`` is None until
    measured (``scripts/bundle_weights.py --verify``).
    ``names`` maps class folder names (e.g. WordNet ids) to readable names."""
    run_dir, destination = Path(run_dir), Path(destination)
    info = vizkit.toolkit.read_run_info(run_dir)
    parts = which.split("+")
    if not parts or any(p not in ("best", "last") and not p.isdigit() for p in parts) or len(set(parts)) < len(parts):
        raise UsageError(f"which must be best, last, or epochs joined by + (best+last, 30+best+last), not '{which}'")
    states = [_epoch_weights(run_dir, part) for part in parts]
    epochs = [epoch for epoch, _ in states]
    if len(set(epochs)) < len(epochs):
        raise UsageError(f"which={which} names epoch {max(epochs, key=epochs.count)} twice")
    averaged = len(states) > 1
    weights = _exported_weights([state for _, state in states], half)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_epoch = {m["epoch"]: m for m in metrics}
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        raise UsageError(f"{run_dir}/metrics.jsonl has no line for epoch {missing[0]}")
    last = by_epoch[max(epochs)]
    folders = (run_dir / "classes.txt").read_text().split()
    schedule = info["config"].get("schedule")
    rates = [info["config"]["lr"]] + [m["lr"] for m in metrics]  # metrics' lr: after that epoch's step
    cuts = [m["epoch"] for m, before in zip(metrics, rates) if m["lr"] < before]
    whole_run = which == "best" or averaged or schedule == "cosine"
    meta = {
        "model": info["model"],
        "classes": [(names or {}).get(folder, folder) for folder in folders],
        "class_folders": folders,
        "preprocess": info["preprocess"],
        "epoch": max(epochs),
        "val_accuracy": None if averaged else last["val_accuracy"],
        "train_accuracy": None if averaged else last["train_accuracy"],
        "dtype": "float16" if half else "float32",
        "exported": which,
        **(
            {
                "averaged_epochs": sorted(epochs),
                "averaged_epochs_val_accuracy": [by_epoch[e]["val_accuracy"] for e in sorted(epochs)],
            }
            if averaged
            else {}
        ),
        # the plateau schedule's cuts; a cosine rate falls every epoch, so there is nothing to list
        **({"lr_cut_after_epochs": cuts} if schedule != "cosine" else {"lr_schedule": "cosine to 0 over the run"}),
        "val_curve": [round(m["val_accuracy"], 4) for m in metrics],
        "train_command": _without_resume(info.get("command")),
        # best or an average: the whole run (its best.pt and snapshots); last: the same run stopped
        # there, which the plateau schedule allows (it does not depend on --epochs) but cosine does not
        "reproduce_command": (
            _without_resume(info.get("command"))
            if whole_run
            else _with_epochs(_without_resume(info.get("command")), max(epochs))
        ),
        "recipe": {
            k: v
            for k, v in info["config"].items()
            if k not in ("out", "data", "workers", "device", "checkpoint_seconds")
        },
    }
    save_torch_atomic(destination.with_suffix(".pt"), weights)
    write_atomic(destination.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def _exported_weights(states: list[dict], half: bool) -> dict:
    """The uniform average of several state_dicts (one: itself), its floating tensors in fp16
    with ``half``."""
    model_state = states[0]
    if len(states) > 1:  # in fp32, whatever the storage: fp16 sums would round
        model_state = {
            k: (sum(s[k].float() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in model_state.items()
        }
    return {k: (v.half() if half and v.is_floating_point() else v) for k, v in model_state.items()}


def _epoch_weights(run_dir: Path, part: str) -> tuple[int, dict]:
    """(epoch, state_dict) for ``best`` (best.pt), ``last`` (the last complete epoch) or a
    snapshot epoch's number (weights_epochNNN.pt)."""
    if part.isdigit():
        path = run_dir / f"weights_epoch{int(part):03d}.pt"
        if not path.is_file():
            kept = sorted(int(p.stem[len("weights_epoch") :]) for p in run_dir.glob("weights_epoch*.pt"))
            raise UsageError(f"{run_dir} kept no weights of epoch {int(part)} (snapshots: {kept})")
        return int(part), torch.load(path, map_location="cpu", weights_only=True)
    path = run_dir / ("best.pt" if part == "best" else "checkpoint.pt")
    if not path.is_file():
        raise UsageError(f"{run_dir} has no {path.name} to export")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if part == "last" and state.get("position") is not None:  # stopped inside an epoch: weights of no epoch
        finished = run_dir / "weights.pt"
        if not finished.is_file():
            raise UsageError(f"{run_dir} stopped inside epoch {state['epoch'] + 1}; finish it with --resume first")
        return state["epoch"], torch.load(finished, map_location="cpu", weights_only=True)
    return state["epoch"], state["model"]


def _without_resume(command: list[str] | None) -> list[str] | None:
    """The run's command as if started once (runs.json of older resumed runs kept ``--resume``)."""
    return [arg for arg in command if arg != "--resume"] if command else command


def _with_epochs(command: list[str] | None, epochs: int) -> list[str] | None:
    if not command:
        return command
    out = list(command)
    if "--epochs" in out and out.index("--epochs") + 1 < len(out):
        out[out.index("--epochs") + 1] = str(epochs)
    else:
        out += ["--epochs", str(epochs)]
    return out


@vizkit.hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command("train")
    @click.option("--model", "model_spec", default="zfnet-compact", show_default=True, help="a ZF-topology model spec")
    @click.option(
        "--data", required=True, type=click.Path(file_okay=False), help="folder with train/ and val/ ImageFolder trees"
    )
    @click.option("--epochs", type=int, default=30, show_default=True)
    @click.option(
        "--batch-size",
        type=int,
        default=32,
        show_default=True,
        help="images per SGD step (the bundled zfnet-compact used 32; the paper 128)",
    )
    @click.option("--lr", type=float, default=0.01, show_default=True)
    @click.option(
        "--schedule",
        type=click.Choice(SCHEDULES),
        default="plateau",
        show_default=True,
        help="plateau: x0.1 when validation error stops falling; cosine: to 0 over --epochs",
    )
    @click.option(
        "--patience", type=int, default=2, show_default=True, help="plateau: epochs without improvement before a cut"
    )
    @click.option(
        "--min-epochs-before-decay", type=int, default=0, show_default=True, help="plateau: never cut before this epoch"
    )
    @click.option("--out", type=click.Path(file_okay=False), default="vizkit-train", show_default=True)
    @click.option("--resume", is_flag=True, help="continue from --out/checkpoint.pt")
    @click.option("--device", default="cpu", show_default=True)
    @click.option(
        "--snapshot-epochs", default="1,2,5,10,20,30,40,64", show_default=True, help="epochs whose weights are kept"
    )
    @click.option("--no-clip", is_flag=True, help="turn feature scale clipping off")
    @click.option("--clip-radius", type=float, default=0.1, show_default=True)
    @click.option("--crop", type=int, default=None, help="training crop size (default: the model's)")
    @click.option("--workers", type=int, default=2, show_default=True)
    @click.option(
        "--limit",
        type=int,
        default=None,
        help="train on a random subset of N training images (drawn with --seed; validation uses all of val/): "
        "for quick trials and tests",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option(
        "--checkpoint-seconds",
        type=float,
        default=60.0,
        show_default=True,
        help="inside an epoch, write the checkpoint at least this often (SIGINT/SIGTERM also write it)",
    )
    @click.option("--quiet", is_flag=True)
    @click.pass_context
    def train_command(
        context: click.Context,
        model_spec: str,
        data: str,
        epochs: int,
        batch_size: int,
        lr: float,
        schedule: str,
        patience: int,
        min_epochs_before_decay: int,
        out: str,
        resume: bool,
        device: str,
        snapshot_epochs: str,
        no_clip: bool,
        clip_radius: float,
        crop: int | None,
        workers: int,
        limit: int | None,
        seed: int,
        checkpoint_seconds: float,
        quiet: bool,
    ) -> None:
        """Train a ZF backbone with the paper's recipe (SGD, annealing, dropout, crops, clipping)."""
        try:
            snapshots = [int(v) for v in snapshot_epochs.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--snapshot-epochs expects e.g. 1,2,5,10; not '{snapshot_epochs}'") from None
        if any(epoch < 1 for epoch in snapshots):
            raise UsageError(f"--snapshot-epochs counts epochs from 1, not '{snapshot_epochs}'")
        if limit is not None and limit < 1:
            raise UsageError(f"--limit must be at least 1 (leave it out to use every training image), not {limit}")
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise UsageError("--epochs and --batch-size must be positive and --lr above 0")
        if workers < 0:
            raise UsageError(f"--workers must be 0 or more, not {workers}")
        if not checkpoint_seconds >= 0:
            raise UsageError(f"--checkpoint-seconds must be 0 or more, not {checkpoint_seconds}")
        if patience < 0 or min_epochs_before_decay < 0:
            raise UsageError("--patience and --min-epochs-before-decay must be 0 or more")
        torch.manual_seed(seed)  # a training command owns its process: the model's initialisation
        app = (context.find_root().obj or {}).get("app")
        model, preprocess = untrained_model(model_spec, app)
        config = TrainConfig(
            data=data,
            out=out,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            schedule=schedule,
            patience=patience,
            min_epochs_before_decay=min_epochs_before_decay,
            clip_radius=None if no_clip else clip_radius,
            crop=crop or preprocess.crop,
            resize=preprocess.resize,
            snapshot_epochs=snapshots,
            workers=workers,
            seed=seed,
            device=device,
            limit=limit,
            checkpoint_seconds=checkpoint_seconds,
        )
        argv = (context.find_root().obj or {}).get("argv", [])
        metrics = train(
            model,
            config,
            preprocess,
            resume=resume,
            progress=not quiet and sys.stderr.isatty(),
            model_spec=model_spec,
            command=["vizkit", *argv],
        )
        click.echo(
            f"train: epoch {metrics.get('epoch')} val accuracy {metrics.get('val_accuracy', 0):.4f}; weights in "
            f"{out}/weights.pt; best epoch {metrics.get('best_epoch')} in {out}/best.pt"
        )
