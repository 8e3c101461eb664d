"""A training run's weights packaged for shipping (:func:`export_weights`): one epoch's or the
average of several, with the metadata that says where they come from."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import vizkit
from vizkit import UsageError
from vizkit.framework import save_torch_atomic, write_atomic


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
    reproduces the run). A run trained with ``--shuffle-labels`` says so in the JSON:
    ``"shuffled_labels": true`` and ``"label_seed"`` (its ``--seed``).

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
    shuffled = bool(info["config"].get("shuffle_labels", False))
    meta = {
        "model": info["model"],
        # --shuffle-labels: trained on randomly permuted labels (Adebayo et al. 2018's sanity check), not a
        # model of the classes; its train_accuracy is memorisation of the shuffled labels
        **({"shuffled_labels": True, "label_seed": info["config"]["seed"]} if shuffled else {}),
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
