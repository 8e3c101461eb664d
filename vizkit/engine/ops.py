"""Classification of the torch calls vizkit cares about.

Models reach the same operation by many routes (``nn.ReLU``, ``F.relu(inplace=True)``,
``x.relu_()``, ``torch.relu``); a ``TorchFunctionMode`` sees all of them as one ``func`` whose
``__name__`` names the operation. This module maps those names to a small vocabulary and binds
the arguments of the operations whose parameters the deconvnet needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

# canonical op -> the call names that perform it
_NAMES: dict[str, tuple[str, ...]] = {
    "relu": ("relu", "relu_"),
    "max_pool2d": ("max_pool2d", "max_pool2d_with_indices"),
    "avg_pool2d": ("avg_pool2d",),
    "adaptive_avg_pool2d": ("adaptive_avg_pool2d",),
    "local_response_norm": ("local_response_norm",),
    "batch_norm": ("batch_norm",),
    "conv2d": ("conv2d",),
    "linear": ("linear",),
    "dropout": ("dropout", "dropout2d", "feature_alpha_dropout", "alpha_dropout"),
    "cat": ("cat", "concat", "concatenate"),
    "add": ("add", "add_", "__add__", "__iadd__", "__radd__"),
    "reshape": ("view", "reshape", "flatten"),
    "identity": ("contiguous", "clone"),
}
OP_OF_NAME: dict[str, str] = {name: op for op, names in _NAMES.items() for name in names}

# Functional ops that are layers in their own right when a model calls them directly (so that
# `vizkit layers` lists the pools and ReLUs of e.g. torchvision's Inception and GoogLeNet).
LAYER_OPS: frozenset[str] = frozenset(
    {"relu", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "local_response_norm", "batch_norm"}
)

# The module class that owns each layer op: a call made by such a module is that module's own.
OWNER_TYPES: dict[str, type | tuple[type, ...]] = {
    "relu": nn.ReLU,
    "max_pool2d": nn.MaxPool2d,
    "avg_pool2d": nn.AvgPool2d,
    "adaptive_avg_pool2d": nn.AdaptiveAvgPool2d,
    "local_response_norm": nn.LocalResponseNorm,
    "batch_norm": nn.modules.batchnorm._BatchNorm,
}

NORMALISATION_OPS: frozenset[str] = frozenset({"local_response_norm", "batch_norm"})


def op_of(func: Callable) -> str | None:
    """The canonical op a torch call performs, or None for calls vizkit does not track."""
    return OP_OF_NAME.get(getattr(func, "__name__", ""))


def _signature(text: str) -> inspect.Signature:
    namespace: dict[str, Any] = {}
    exec(f"def f{text}: pass", namespace)
    return inspect.signature(namespace["f"])


_SIGNATURES = {
    "max_pool2d": _signature(
        "(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)"
    ),
    "avg_pool2d": _signature(
        "(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None)"
    ),
    "conv2d": _signature("(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)"),
    "linear": _signature("(input, weight, bias=None)"),
    "relu": _signature("(input, inplace=False)"),
    "adaptive_avg_pool2d": _signature("(input, output_size)"),
    "cat": _signature("(tensors, dim=0, out=None)"),
    "add": _signature("(input, other, alpha=1, out=None)"),
}


def bind(op: str, args: tuple, kwargs: dict | None) -> dict[str, Any]:
    """The arguments of a call to ``op`` by parameter name, defaults filled in."""
    bound = _SIGNATURES[op].bind(*args, **(kwargs or {}))
    bound.apply_defaults()
    return dict(bound.arguments)
