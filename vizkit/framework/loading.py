"""Building and loading models by spec, through the names and sources plugins registered."""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from vizkit.data import Preprocess, read_labels
from vizkit.errors import UsageError
from vizkit.framework.registry import App, get_app
from vizkit.models import ModelEntry, apply_state_dict, read_state_dict, sha256_file
from vizkit.models.info import ATTRIBUTE, model_info
from vizkit.models.weight_files import weights_preprocess


def _app(app: App | None) -> App:
    return app or get_app()  # None: the registry of the installed plugins


def list_models(app: App | None = None, pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style ``pattern`` (timm style).

    Args:
        app: the plugin registry to consult; None: the installed plugins' (:func:`vizkit.framework.get_app`).
        pattern: a shell-style pattern such as ``"zf*"``; ``"*"`` lists every name.
    """
    return sorted(name for name in _app(app).models if fnmatch.fnmatch(name, pattern))


def build_model(spec: str, app: App | None = None) -> tuple[nn.Module, ModelEntry | None]:
    """Instantiate the model a spec names, with its initial weights (load_model applies files):
    a registered name, else the first registered source whose form the spec has.

    Returns the model and the registered entry it came from (None when a source built it).

    Args:
        spec: a registered model name (``zfnet``) or a spec form a source understands
            (``torchvision:<builder>``, ``file.py:factory``, ``package.module:factory``, ...).
        app: the plugin registry to consult; None: the installed plugins' (:func:`vizkit.framework.get_app`).
    """
    if not spec or not isinstance(spec, str):
        raise UsageError("no model given; use e.g. --model zfnet-compact or --model torchvision:alexnet")
    app = _app(app)
    entry = app.models.get(spec)
    if entry is not None:
        return entry.factory(), entry
    sources = sorted(app.model_sources.values(), key=lambda s: s.prefix is None)  # prefixes first
    for source in sources:
        argument = source.handles(spec)
        if argument is not None:
            return source.build(argument), None
    known = ", ".join(sorted(app.models)) or "none"
    close = difflib.get_close_matches(spec, list(app.models), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    forms = ", ".join(s.usage for s in app.model_sources.values()) or "none"
    raise UsageError(f"unknown model '{spec}'{hint}; registered models: {known}; or use {forms}{app.failed_hint()}")


def load_model(
    spec: str,
    weights: str | os.PathLike | None = None,
    labels: str | os.PathLike | Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    trust_weights: bool = False,
    app: App | None = None,
    preprocess: Preprocess | None = None,
) -> nn.Module:
    """A model, in eval mode, from a spec and optional weights / labels.

    The model carries what vizkit learnt about it as one :class:`vizkit.models.ModelInfo`,
    ``model.vizkit_info`` (read it with :func:`vizkit.models.model_info`): its spec, weights file
    and their SHA-256, labels, and the preprocessing it expects, which :func:`vizkit.run`,
    :func:`vizkit.load_images` (``model=``) and the CLI use unless told otherwise
    (:func:`vizkit.data.preprocess_for` reads it; None means the ImageNet default).

    Args:
        spec: what to build, as for :func:`build_model` (a registered name or a source's form).
        weights: a state_dict file, read with ``weights_only=True`` unless ``trust_weights``;
            None: the registered model's bundled weights, if any (else it stays untrained).
        labels: a file of class names (one per line, or ``wnid<TAB>name``) or a list of them;
            None: the registered model's labels, if any.
        device: where the model is moved (``"cpu"``, ``"cuda"``, a ``torch.device``).
        trust_weights: allow arbitrary unpickling of ``weights``; only for trusted files.
        app: the plugin registry to consult; None: the installed plugins' (:func:`vizkit.framework.get_app`).
        preprocess: the preprocessing the model expects; None: the one recorded in the JSON beside
            ``weights`` (``<name>.json``, or a ``vizkit train`` run's ``run.json``), else the registered model's own
            (``zfnet-compact``: resize 160, crop 144), else the one in the ``vizkit_info`` its
            factory set, else none (the ImageNet default applies).
    """
    if preprocess is not None and not isinstance(preprocess, Preprocess):
        raise UsageError(f"preprocess must be a vizkit.Preprocess, not {type(preprocess).__name__}")
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
    declared = model_info(model)  # what the factory or the class declares
    info = replace(
        declared,
        spec=spec,
        weights=str(weights_path) if weights_path else None,
        weights_sha256=sha,
        labels=label_list if label_list is not None else declared.labels,
        preprocess=preprocess
        or (weights_preprocess(weights) if weights is not None else None)
        or (entry.preprocess if entry else None)
        or declared.preprocess,
    )
    setattr(model, ATTRIBUTE, info)  # a plain attribute, not a parameter or buffer
    return model.to(device).eval()
