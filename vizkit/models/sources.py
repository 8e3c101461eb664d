"""The model spec forms vizkit itself understands: ``torchvision:<builder>`` (an untrained
torchvision classifier), ``path/to/file.py:factory`` and ``package.module:factory`` (the module a
user's callable returns). :mod:`vizkit.framework.builtins` registers them as
:class:`~vizkit.models.ModelSource` s, through the same hook as a plugin's."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from torch import nn

from vizkit.errors import UsageError, VizkitError


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
