"""Weights files: reading a state_dict safely (``torch.load(weights_only=True)`` unless trusted),
loading it only when it fits the model exactly, hashing the file for result.json, and the
preprocessing vizkit recorded beside it."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vizkit.data import Preprocess
from vizkit.errors import UsageError


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, so results can say exactly which weights they used.

    Args:
        path: the file to hash (typically a weights file).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike, trust: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from a file, with ``weights_only=True`` unless ``trust`` is given.

    Accepts a bare state_dict or a checkpoint holding one under ``state_dict`` / ``model`` /
    ``model_state_dict``; strips a DataParallel ``module.`` prefix. A ``.safetensors`` file is
    read with the ``safetensors`` package (installed with timm), which never unpickles.

    Args:
        path: the weights file (a state_dict, a checkpoint holding one, or a pickled module;
            or a ``.safetensors`` file).
        trust: allow arbitrary unpickling; only for files from a trusted source.
    """
    path = Path(path)
    if path.suffix == ".safetensors":  # no pickle at all: nothing to trust
        return _state_dict_in(_load_safetensors(path), path)
    return _state_dict_in(_load_torch_file(path, trust), path)


def _load_safetensors(path: Path) -> object:
    """The tensors in a ``.safetensors`` file (Hugging Face's format, e.g. timm's hub weights);
    a missing or unreadable file, or no ``safetensors`` package, is a one-line UsageError."""
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UsageError(f"reading {path} needs the safetensors package (pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError on a bad header
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot read weights {path}: {first}") from None


def _load_torch_file(path: Path, trust: bool) -> object:
    """What ``torch.save`` wrote into ``path``, read with ``weights_only=True`` unless ``trust``;
    a missing, empty, foreign, refused or unreadable file is a one-line UsageError."""
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if not head.startswith((b"PK", b"\x80")):  # torch.save writes a zip archive (or, before 1.6, a pickle)
        what = "is empty" if not head else "is not a torch file (torch.save writes a zip archive)"
        raise UsageError(f"weights {path} {what}")
    try:
        with warnings.catch_warnings():  # torch's hints about pickle protocols: the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # torch's own words first say weights_only changed; the reason is the line naming what it refused
        first = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "refused")
        raise UsageError(
            f"refusing to load {path} with arbitrary unpickling ({first}); "
            "pass --trust-weights only if you trust the file"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot read weights {path}: {first}") from None


def _state_dict_in(data: object, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict that ``data`` (read from ``path``) is or holds: a module's, a checkpoint's
    (under ``state_dict`` / ``model_state_dict`` / ``model``), with a DataParallel ``module.``
    prefix stripped; anything else is a UsageError."""
    if isinstance(data, nn.Module):
        data = data.state_dict()
    if isinstance(data, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in data and isinstance(data[key], Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UsageError(f"{path} does not hold a state_dict")
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module.") :]: v for k, v in data.items()}
    return dict(data)


def weights_preprocess(path: str | os.PathLike) -> Preprocess | None:
    """The preprocessing a weights file was trained with, from the JSON vizkit writes beside it.

    Looked up in ``<name>.json`` next to ``<name>.pt`` (what ``export_weights`` /
    ``scripts/bundle_weights.py`` write), then in the folder's ``run.json`` (a ``vizkit train``
    run folder: ``weights.pt``, ``best.pt``, ``weights_epochNNN.pt``). A JSON file that is not
    valid JSON or holds no ``preprocess`` is not vizkit's and is ignored; a ``preprocess`` entry
    that is malformed is a UsageError naming the file.

    Args:
        path: the weights file.

    Returns:
        The recorded preprocessing, or None when no JSON beside the file records one.
    """
    path = Path(path)
    for candidate in (path.with_suffix(".json"), path.parent / "run.json"):
        if candidate == path or not candidate.is_file():
            continue
        try:
            document = json.loads(candidate.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, OSError):
            continue
        recorded = document.get("preprocess") if isinstance(document, dict) else None
        if recorded is None:
            continue
        try:
            return Preprocess.from_dict(recorded)
        except (KeyError, TypeError, ValueError, UsageError) as error:
            raise UsageError(f"{candidate}: 'preprocess' is malformed ({type(error).__name__}: {error})") from None
    return None


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load weights into ``model`` only if they fit it exactly, so a wrong file fails with a
    one-line UsageError naming the missing, unexpected and mis-shaped keys instead of half loading.

    Args:
        model: the module to load into (in place); each tensor is cast to its parameter's dtype.
        state: the state_dict, e.g. from :func:`read_state_dict`.
        source: where the weights came from (usually the file path), for the error message.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            key = mismatched[0]
            problems.append(
                f"{len(mismatched)} with other shapes (e.g. {key}: {tuple(state[key].shape)} in file, "
                f"{tuple(own[key].shape)} in model)"
            )
        raise UsageError(f"weights {source} do not fit the model: " + "; ".join(problems))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
