"""Which calls write into a tensor they are given: in-place methods (``relu_``, ``__iadd__``,
``x[i] = y``), functions called with ``inplace=True`` (by keyword or position) and ``out=``.

The recorder copies a kept activation before such a call overwrites it
(:mod:`vizkit.engine.kept`); the op table's own in-place checks read the same rule.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor

# Tensor methods that write into their first argument without ending in "_"
_IN_PLACE_DUNDERS = frozenset(
    f"__i{name}__"
    for name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "lshift", "rshift")
) | {"__setitem__", "__imatmul__"}
_kinds: dict[Any, tuple[bool, int | None]] = {}


def _kind(func: Callable) -> tuple[bool, int | None]:
    """Whether ``func`` always writes into its first argument, and the position of its
    ``inplace`` parameter (None: it has none)."""
    kind = _kinds.get(func)
    if kind is None:
        name = getattr(func, "__name__", "") or ""
        always = name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.endswith("__"))
        position = None
        try:
            names = list(inspect.signature(func).parameters)
            position = names.index("inplace") if "inplace" in names else None
        except (TypeError, ValueError):  # a builtin without a signature
            pass
        kind = _kinds[func] = (always, position)
    return kind


def always_in_place(func: Callable) -> bool:
    """Whether ``func`` writes into its first argument whatever its arguments (``relu_``,
    ``__iadd__``, ``__setitem__``; not ``__invert__`` or ``__index__``)."""
    return _kind(func)[0]


def overwritten(func: Callable, args: tuple, kwargs: dict) -> list[Tensor]:
    """The tensors a call is about to write into: its first argument for an in-place op
    (``relu_``, ``__iadd__``, ``x[i] = y``, ``inplace=True``) and its ``out=`` tensors."""
    targets = list(tensors_in(kwargs["out"])) if kwargs.get("out") is not None else []
    always, position = _kind(func)
    if args and isinstance(args[0], Tensor):
        flag = kwargs.get("inplace", args[position] if position is not None and position < len(args) else False)
        if always or flag is True:
            targets.append(args[0])
    return targets


def tensors_in(value: Any) -> Iterator[Tensor]:
    """The tensors in a (nested) tuple, list or dict."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
