"""Training-run folders: what ``vizkit train`` writes and the analyses of its snapshots read.

A run folder holds ``run.json`` (model spec, data, settings, preprocessing, command), the
per-epoch ``metrics.jsonl``, ``checkpoint.pt`` and the weight snapshots ``weights_epochNNN.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vizkit.data import Preprocess
from vizkit.errors import UsageError
from vizkit.framework.results import write_atomic

RUN_FILE = "run.json"


def write_run_info(
    out: Path,
    model_spec: str,
    data: str | Path,
    settings: dict[str, Any],
    preprocess: Preprocess,
    command: list[str] | None = None,
) -> None:
    """``run.json``: what a training run is, so that analyses of its snapshots
    (``vizkit run evolution --run DIR``) need nothing else.

    Args:
        out: the run folder (it must exist); ``run.json`` is written into it atomically.
        model_spec: the spec the model was built from (e.g. ``zfnet-compact``), to rebuild it.
        data: the training data (recorded as an absolute path).
        settings: the training configuration (JSON-serialisable), recorded as ``config``.
        preprocess: the preprocessing the model was trained with.
        command: the command line that started the run, if known.
    """
    info = {
        "model": model_spec,
        "data": str(Path(data).resolve()),
        "config": settings,
        "preprocess": preprocess.to_dict(),
        "command": command,
    }
    write_atomic(Path(out) / RUN_FILE, (json.dumps(info, indent=2) + "\n").encode())


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a training run folder (a one-line error if there is none).

    Args:
        run_dir: the folder ``vizkit train`` wrote (see :func:`write_run_info`).
    """
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a vizkit training run (no {RUN_FILE}; vizkit train writes one)")
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    return info


def snapshot_paths(run_dir: str | Path) -> dict[int, Path]:
    """{epoch: weights file} of the snapshots a training run kept, in epoch order.

    Args:
        run_dir: the training run folder; its ``weights_epochNNN.pt`` files are the snapshots
            (none: an empty dict).
    """
    found = {}
    for path in Path(run_dir).glob("weights_epoch*.pt"):
        digits = path.stem[len("weights_epoch") :]
        if digits.isdigit():
            found[int(digits)] = path
    return dict(sorted(found.items()))
