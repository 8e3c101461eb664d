"""The public API documents itself: every exported function says what each of its parameters is
(in a Google-style ``Args:`` section, or by naming it as ``name`` in its prose), and every
exported class has a docstring, so ``help(vizkit.x)`` is enough to call it."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

import vizkit
from helpers import tiny_net

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


# ---------------------------------------------------------------------- vizkit.run's arguments
def _tiny_model() -> torch.nn.Module:
    """conv (5x5, stride 2) -> ReLU -> flatten -> linear, layers numbered, for 32x32 images."""
    model = tiny_net(stride=2, conv2_padding=None, gap=False, named=False)
    model(torch.zeros(1, 3, 32, 32))  # materialise the lazy layer
    return model


def test_run_reads_labels_given_as_a_file_name(tmp_path):
    """A str is a Sequence[str]: ``labels="names.txt"`` used to be taken as one label per
    character (silently right-sized for a 3-class model given a 3-letter name), not as a file."""
    names = tmp_path / "abc"  # three characters, three classes: the silent case
    names.write_text("cat\ndog\nowl\n")
    x = torch.randn(1, 3, 32, 32)
    result = vizkit.run("deconvnet", _tiny_model(), images=x, labels=str(names), layer="0", top=1)
    assert {p["label"] for p in result["predicted"]} == {"cat", "dog", "owl"}
    result = vizkit.run("deconvnet", _tiny_model(), images=x, labels=names, layer="0", top=1)  # a Path too
    assert {p["label"] for p in result["predicted"]} == {"cat", "dog", "owl"}
    with pytest.raises(vizkit.UsageError, match="2 labels given but the model has 3 outputs"):
        vizkit.run("deconvnet", _tiny_model(), images=x, labels=["a", "b"], layer="0", top=1)


def test_run_takes_one_image_path_as_one_image(photo_path):
    model = _tiny_model()
    result = vizkit.run(
        "deconvnet", model, images=str(photo_path), layer="0", top=1, preprocess=vizkit.Preprocess(40, 32)
    )
    assert result["images"] == [photo_path.name]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"images": torch.randn(3, 32, 32)}, r"tensor must be a preprocessed float batch \[N, 3, H, W\]"),
        ({"images": torch.zeros(1, 3, 32, 32, dtype=torch.uint8)}, "torch.uint8"),
        ({"model": "zfnet-compact"}, r"nn.Module .* vizkit.load_model\('zfnet-compact'\)"),
        ({"preprocess": "imagenet"}, "preprocess must be a vizkit.Preprocess, not str"),
        ({"batch_size": 2.5}, "--batch-size must be a whole number, not 2.5"),
    ],
)
def test_run_refuses_malformed_arguments_with_a_usage_error(arguments, message):
    given: dict[str, Any] = {"model": _tiny_model(), "images": torch.randn(1, 3, 32, 32), **arguments}
    with pytest.raises(vizkit.UsageError, match=message):
        vizkit.run("deconvnet", layer="0", top=1, **given)
