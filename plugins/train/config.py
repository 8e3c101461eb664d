"""The training settings (:class:`TrainConfig`), which of them a resumed run must share, and
the learning-rate schedule."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


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
    # label randomization (Adebayo et al. 2018): the training images' labels permuted once, drawn
    # from ``seed``; validation keeps the true labels
    shuffle_labels: bool = False
    augment: bool = True  # random crops and flips; False: the centre crop (validation's), e.g. to memorise quickly


SCHEDULES = ("plateau", "cosine")


def inapplicable_settings(config: TrainConfig) -> list[str]:
    """The settings that have no effect under ``config``'s schedule: the plateau rule's
    ``patience`` and ``min_epochs_before_decay`` with the cosine schedule."""
    return ["patience", "min_epochs_before_decay"] if config.schedule == "cosine" else []


def resumable_settings(config: TrainConfig) -> dict:
    """The settings a resumed run must share with the checkpoint (not device or workers, nor
    epochs unless the schedule depends on them, nor the settings the schedule does not use)."""
    free = ["device", "workers", "checkpoint_seconds", *inapplicable_settings(config)]
    if config.schedule != "cosine":
        free.append("epochs")
    return {k: v for k, v in asdict(config).items() if k not in free}


# settings added after checkpoints were written, with the value those checkpoints were trained with
SETTINGS_ADDED_LATER: dict[str, Any] = {"shuffle_labels": False, "augment": True}


def same_settings(saved: dict, config: TrainConfig) -> bool:
    """Whether a checkpoint's ``saved`` settings (:func:`resumable_settings` when it was written)
    are ``config``'s, leaving aside the settings ``config``'s schedule does not use (a checkpoint
    written before they were left out still holds them)."""
    unused = set(inapplicable_settings(config))
    saved = {**SETTINGS_ADDED_LATER, **saved}  # a checkpoint written before a setting existed had its default
    return {k: v for k, v in saved.items() if k not in unused} == resumable_settings(config)


def make_scheduler(optimiser: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The learning-rate schedule of ``config.schedule`` (stepped once per epoch by :func:`train`)."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=0.1, patience=config.patience)


def _schedule(scheduler: Any, config: TrainConfig, epoch: int, val_accuracy: float) -> None:
    """The learning rate's step after an epoch: cosine annealing, or a cut on a plateau of the
    validation error (never before ``min_epochs_before_decay``)."""
    if config.schedule == "cosine":
        scheduler.step()
    elif epoch > config.min_epochs_before_decay:
        scheduler.step(1.0 - val_accuracy)
