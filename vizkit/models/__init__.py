"""Model specs and loading.

A spec names a model: a registered name (``zfnet``), ``torchvision:<builder>``,
``path/to/file.py:factory`` or ``package.module:factory``. Weights are a state_dict loaded with
``torch.load(weights_only=True)``. A loaded model carries what vizkit learnt about it as
attributes: ``vizkit_spec``, ``vizkit_weights_sha256``, ``vizkit_labels``, ``vizkit_preprocess``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import torch
from torch import nn

from vizkit.data import Preprocess, read_labels
from vizkit.errors import UsageError, VizkitError

if TYPE_CHECKING:  # pragma: no cover
    from vizkit.plugins import App


@dataclass
class ModelEntry:
    """A named model a plugin contributes: a factory, and optionally its weights and labels."""

    name: str
    factory: Callable[[], nn.Module]
    description: str = ""
    weights: Path | None = None  # default weights (a state_dict file), if the model ships them
    labels: list[str] | None = None
    preprocess: Preprocess | None = None
    tags: tuple[str, ...] = ()
    plugin: str = field(default="", compare=False)


def list_models(app: "App | None" = None, pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style ``pattern`` (timm style)."""
    import fnmatch

    app = app or _default_app()
    return sorted(name for name in app.models if fnmatch.fnmatch(name, pattern))


def torchvision_builders() -> list[str]:
    """The torchvision image-classification builders usable as ``torchvision:<builder>``."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def build_model(spec: str, app: "App | None" = None) -> tuple[nn.Module, ModelEntry | None]:
    """Instantiate the model a spec names (untrained unless a registered entry ships weights)."""
    if not spec or not isinstance(spec, str):
        raise UsageError("no model given; use e.g. --model zfnet or --model torchvision:alexnet")
    if spec.startswith("torchvision:"):
        builder = spec.split(":", 1)[1]
        names = torchvision_builders()
        if builder not in names:
            close = difflib.get_close_matches(builder, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"unknown torchvision model '{builder}'{hint}; see torchvision.models.list_models()")
        import torchvision.models as tvm

        return tvm.get_model(builder, weights=None), None
    if ":" in spec:
        return _call_factory(spec), None
    app = app or _default_app()
    entry = app.models.get(spec)
    if entry is None:
        known = ", ".join(sorted(app.models)) or "none"
        close = difflib.get_close_matches(spec, list(app.models), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(
            f"unknown model '{spec}'{hint}; registered models: {known}; "
            "or use torchvision:<builder>, path/to/file.py:factory, package.module:factory"
        )
    return entry.factory(), entry


def _call_factory(spec: str) -> nn.Module:
    target, _, name = spec.rpartition(":")
    if not target or not name.isidentifier():
        raise UsageError(f"bad model spec '{spec}'; expected file.py:factory or package.module:factory")
    if target.endswith(".py") or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        module_name = f"vizkit_user_model_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as error:
            del sys.modules[module_name]
            raise VizkitError(f"cannot import {path}: {type(error).__name__}: {error}") from error
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


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike, trust: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from a file, with ``weights_only=True`` unless ``trust`` is given.

    Accepts a bare state_dict or a checkpoint holding one under ``state_dict`` / ``model`` /
    ``model_state_dict``; strips a DataParallel ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unpickling refused"
        raise UsageError(
            f"refusing to load {path} with arbitrary unpickling ({first}); "
            "pass --trust-weights only if you trust the file"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise UsageError(f"cannot read weights {path}: {str(error).splitlines()[0]}") from None
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
        data = {k[len("module."):]: v for k, v in data.items()}
    return dict(data)


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
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


def load_model(
    spec: str,
    weights: str | os.PathLike | None = None,
    labels: str | os.PathLike | Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    trust_weights: bool = False,
    app: "App | None" = None,
) -> nn.Module:
    """A model, in eval mode, from a spec and optional weights / labels."""
    model, entry = build_model(spec, app)
    weights_path = Path(weights) if weights is not None else (entry.weights if entry else None)
    sha = None
    if weights_path is not None:
        apply_state_dict(model, read_state_dict(weights_path, trust_weights), str(weights_path))
        sha = sha256_file(weights_path)
    if labels is None:
        label_list = entry.labels if entry else None
    elif isinstance(labels, (str, os.PathLike)):
        label_list = read_labels(labels)
    else:
        label_list = list(labels)
    model.vizkit_spec = spec
    model.vizkit_weights = str(weights_path) if weights_path else None
    model.vizkit_weights_sha256 = sha
    model.vizkit_labels = label_list
    model.vizkit_preprocess = entry.preprocess if entry and entry.preprocess else None
    return model.to(device).eval()


def describe(model: nn.Module) -> dict[str, Any]:
    """What result.json records about a model."""
    return {
        "spec": getattr(model, "vizkit_spec", type(model).__name__),
        "class": type(model).__name__,
        "weights": getattr(model, "vizkit_weights", None),
        "weights_sha256": getattr(model, "vizkit_weights_sha256", None),
    }


def _default_app() -> "App":
    from vizkit.plugins import get_app

    return get_app()
