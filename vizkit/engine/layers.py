"""Layers as the recorder names them.

A layer is a module call, named as ``model.named_modules()`` names the module, or a functional
pooling/ReLU/normalisation call made from a module's own ``forward`` (``F.max_pool2d`` in
torchvision's Inception), named ``<module>.<op>`` (``Mixed_5b.max_pool2d``; the bare op name at
the model's top level). A module (or functional op) called more than once per forward gets one
layer per call: ``relu``, ``relu#1``, ... .
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from vizkit.engine import ops
from vizkit.errors import UsageError


class UnknownLayerError(UsageError, KeyError):
    """A layer name that the model does not have."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class LayerInfo:
    """One layer as seen in the last forward: a module call or a functional op call."""

    name: str
    type: str  # module class name, or "F.<op>" for a functional call
    functional: bool
    shape: tuple[int, ...] | None  # output shape, None for non-tensor outputs
    has_switches: bool


def nth_call(calls: Counter[str], base: str) -> str:
    """The layer name of this call of ``base`` in a forward: ``base`` the first time, then
    ``base#1``, ``base#2``, ...; ``calls`` counts the forward's calls so far (updated here)."""
    count = calls[base]
    calls[base] += 1
    return base if count == 0 else f"{base}#{count}"


def functional_layer(op: ops.Op | None, module: nn.Module) -> ops.Op | None:
    """``op`` when its call from ``module``'s forward is a layer of its own (a functional
    pool/ReLU/norm called by a composite module), else None (not a layer-making op, or the
    module's own op: ``nn.ReLU`` calling ``relu`` is the layer already)."""
    return op if op is not None and op.layer and not op.owns(module) else None


def functional_base(module_name: str, op: ops.Op) -> str:
    """``<module>.<op>`` (the bare op name at the model's top level), before :func:`nth_call`."""
    return f"{module_name}.{op.name}" if module_name else op.name


def unknown_layer_message(name: str, valid: Sequence[str]) -> str:
    """The message of :class:`UnknownLayerError`: the name, close matches, and every valid one."""
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown layer '{name}'{hint}; valid layers: {', '.join(valid)}"
