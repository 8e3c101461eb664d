"""What a run keeps to resume exactly: the checkpoint's contents, every random generator's
state, where a run starts (fresh or resumed), and how a stopped run says to resume it."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from vizkit import UsageError

from .config import TrainConfig, resumable_settings, same_settings


def _starting_point(
    checkpoint: Path,
    resume: bool,
    config: TrainConfig,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    labels: list[int] | None = None,
) -> tuple[int, dict, dict | None]:
    """Where training starts: the first epoch to run, the best validation epoch so far (kept in
    best.pt), and the position inside an unfinished epoch (its batches done and running sums;
    None: from its start).

    With ``resume`` the model, optimiser, scheduler and random generators are the checkpoint's;
    without, a previous run in the folder is discarded (its log and best epoch are not mixed in).
    ``labels``: the shuffled training labels of ``--shuffle-labels`` (None: the true ones); a
    resumed run must have the very labels the checkpoint was trained with."""
    out = checkpoint.parent
    best = {"epoch": 0, "val_accuracy": -1.0}
    if resume:
        if not checkpoint.exists():
            raise UsageError(f"--resume: no checkpoint in {out}")
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        saved_shuffle = bool(state["config"].get("shuffle_labels", False))
        if saved_shuffle != config.shuffle_labels:
            raise UsageError(
                f"{checkpoint} was trained with {'shuffled' if saved_shuffle else 'true'} labels; "
                f"{'add' if saved_shuffle else 'drop'} --shuffle-labels to resume it, or use another --out"
            )
        if not same_settings(state["config"], config):
            raise UsageError(
                f"{checkpoint} was written with other training settings; drop --resume or use another --out"
            )
        if labels is not None and not torch.equal(state.get("labels", torch.empty(0)), _label_tensor(labels)):
            raise UsageError(
                f"{checkpoint} was trained with another permutation of the labels (--data changed?); use another --out"
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


def _checkpoint(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    epoch_done: int,
    where: dict | None,
    best: dict,
    labels: list[int] | None = None,
) -> dict[str, Any]:
    """What checkpoint.pt holds: everything ``--resume`` needs to go on as if never stopped (with
    ``--shuffle-labels``, the shuffled label of each training image too, which a resumed run checks)."""
    return {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _random_state(),
        "epoch": epoch_done,  # complete epochs
        "position": where,  # None, or the unfinished epoch's batches done and running sums
        "best": best,
        "config": resumable_settings(config),
        **(label_record(config, labels) if labels is not None else {}),
    }


def label_record(config: TrainConfig, labels: list[int] | None = None) -> dict[str, Any]:
    """What says a run's labels were shuffled (checkpoint.pt, best.pt; the export's JSON without
    ``labels``): nobody mistakes its weights for a model of the classes."""
    record: dict[str, Any] = {"shuffled_labels": True, "label_seed": config.seed}
    if labels is not None:
        record["labels"] = _label_tensor(labels)
    return record


def _label_tensor(labels: list[int]) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.int64)


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
