"""The public API documents itself: every exported function says what each of its parameters is
(in a Google-style ``Args:`` section, or by naming it as ``name`` in its prose), and every
exported class has a docstring, so ``help(vizkit.x)`` is enough to call it."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any

import vizkit

# an Args entry: "name:", "*name:", "**name:" or "name (type):", at the section's entry indent
_ENTRY = re.compile(r"^(\s+)\*{0,2}(\w+)(?: \([^)]*\))?:")
_ARGS_HEADERS = {"Args:", "Arguments:"}


def _args_entries(doc: str) -> set[str]:
    """The parameter names a docstring's ``Args:`` section(s) describe."""
    names: set[str] = set()
    inside = False
    indent: int | None = None
    for line in doc.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():  # a section header or unindented prose ends the section
            inside = line.strip() in _ARGS_HEADERS
            indent = None
            continue
        match = _ENTRY.match(line) if inside else None
        if match and (indent is None or len(match.group(1)) == indent):
            indent = len(match.group(1))
            names.add(match.group(2))
    return names


def _undocumented(function: Callable[..., Any]) -> list[str]:
    """The parameters of ``function`` its docstring does not describe (all of them without one)."""
    doc = inspect.getdoc(function) or ""
    if not doc:
        return ["(no docstring)"]
    described = _args_entries(doc)
    params = [p.lstrip("*") for p in inspect.signature(function).parameters if p != "self"]
    return [p for p in params if p not in described and f"``{p}``" not in doc]


def _has_docstring(cls: type) -> bool:
    """Whether ``cls`` has a docstring of its own (not the signature a dataclass makes up)."""
    doc = (cls.__doc__ or "").strip()
    return bool(doc) and not (dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("))


def test_public_functions_document_their_parameters():
    offenders = {}
    for name in vizkit.__all__:
        obj = getattr(vizkit, name)
        if inspect.isfunction(obj):
            missing = _undocumented(obj)
            if missing:
                offenders[name] = missing
    assert not offenders, "public functions with undocumented parameters: " + "; ".join(
        f"{name}: {', '.join(missing)}" for name, missing in sorted(offenders.items())
    )


def test_public_classes_have_docstrings():
    missing = [
        name
        for name in vizkit.__all__
        if inspect.isclass(getattr(vizkit, name)) and not _has_docstring(getattr(vizkit, name))
    ]
    assert not missing, f"public classes without a docstring: {', '.join(missing)}"
