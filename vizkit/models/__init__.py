"""Model specs and weights: what a model is and how it is built and loaded.

A spec names a model: a registered name (``zfnet-compact``, the trained compact ZF model that
ships with weights; ``zfnet``, the paper's layout, untrained), or a form some :class:`ModelSource`
understands: ``torchvision:<builder>``, ``path/to/file.py:factory``, ``package.module:factory``
(vizkit's own sources), or whatever a plugin adds (e.g. ``timm:<name>``). Which names and
sources exist is the plugin registry's business (:func:`vizkit.load_model` consults it); this
package holds the pieces: the entries, the built-in sources, and weights read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vizkit.data import Preprocess
from vizkit.errors import UsageError, VizkitError
from vizkit.models.info import ModelInfo, model_info


@dataclass
class ModelEntry:
    """A named model a plugin contributes: a factory, and optionally its weights and labels."""

    name: str
    factory: Callable[[], nn.Module]
    description: str = ""
    weights: Path | None = None  # default weights (a state_dict file), if the model ships them
    labels: list[str] | None = None
    # the input the model expects (load_model records it, vizkit.run and load_images use it);
    # None: the ImageNet default (resize 256, crop 224)
    preprocess: Preprocess | None = None
    tags: tuple[str, ...] = ()
    plugin: str = field(default="", compare=False)


@dataclass
class ModelSource:
    """A form of model spec and how to build it: ``prefix:<rest>`` specs (``build(rest)``), or
    specs that ``accepts(spec)`` recognises (``build(spec)``)."""

    name: str
    build: Callable[[str], nn.Module]
    usage: str  # how a spec of this form is written, e.g. "torchvision:<builder>"
    description: str = ""
    prefix: str | None = None
    accepts: Callable[[str], bool] | None = None
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if (self.prefix is None) == (self.accepts is None):
            raise TypeError(f"model source '{self.name}' needs exactly one of prefix= or accepts=")

    def handles(self, spec: str) -> str | None:
        """What ``build`` receives for ``spec``, or None when the spec is not of this form."""
        if self.prefix is not None:
            head, sep, rest = spec.partition(":")
            return rest if sep and head == self.prefix else None
        assert self.accepts is not None
        return spec if self.accepts(spec) else None


def torchvision_builders() -> list[str]:
    """The torchvision image-classification builders usable as ``torchvision:<builder>``."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def build_torchvision(builder: str) -> nn.Module:
    """An untrained torchvision classification model by builder name."""
    names = torchvision_builders()
    if builder not in names:
        close = difflib.get_close_matches(builder, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown torchvision model '{builder}'{hint}; see torchvision.models.list_models()")
    import torchvision.models as tvm

    return tvm.get_model(builder, weights=None)


def is_file_factory(spec: str) -> bool:
    """``path/to/file.py:factory``."""
    target, sep, _ = spec.rpartition(":")
    return bool(sep) and (target.endswith(".py") or os.sep in target)


def is_module_factory(spec: str) -> bool:
    """``package.module:factory`` (any other ``a:b`` spec, so that a bad one gets its error)."""
    return ":" in spec and not is_file_factory(spec)


def call_factory(spec: str) -> nn.Module:
    """The module a ``file.py:factory`` or ``package.module:factory`` spec's callable returns."""
    target, _, name = spec.rpartition(":")
    if not target or not name.isidentifier():
        raise UsageError(f"bad model spec '{spec}'; expected file.py:factory or package.module:factory")
    if is_file_factory(spec):
        module = _import_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise UsageError(f"cannot import module '{target}': {error}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"'{name}' is not a callable in {target}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    module_name = f"vizkit_user_model_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise VizkitError(f"cannot import {path}: {type(error).__name__}: {error}") from error
    return module


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
    ``model_state_dict``; strips a DataParallel ``module.`` prefix.

    Args:
        path: the weights file (a state_dict, a checkpoint holding one, or a pickled module).
        trust: allow arbitrary unpickling; only for files from a trusted source.
    """
    path = Path(path)
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
            data = torch.load(path, map_location="cpu", weights_only=not trust)
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


def describe(model: nn.Module, weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """What result.json records about a model: its spec, class and weights.

    Args:
        model: the model, with the :class:`ModelInfo` :func:`vizkit.load_model` stores (a
            model built otherwise is described by its class name).
        weights: the file whose weights it holds now, when an analysis loaded others than it was
            built with (hashed here); None: the weights it was loaded with.
    """
    info = model_info(model)
    return {
        "spec": info.spec or type(model).__name__,
        "class": type(model).__name__,
        "weights": str(weights) if weights is not None else info.weights,
        "weights_sha256": sha256_file(weights) if weights is not None else info.weights_sha256,
    }


from vizkit.models.zfnet import clip_feature_scale  # noqa: E402  (public: the ZF models' feature clipping)

__all__ = [
    "ModelEntry",
    "ModelInfo",
    "ModelSource",
    "apply_state_dict",
    "clip_feature_scale",
    "describe",
    "model_info",
    "read_state_dict",
    "sha256_file",
]
