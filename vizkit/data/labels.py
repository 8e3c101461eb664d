"""Class labels: reading a labels file, checking it against the model's outputs, naming a class
and resolving a ``--target`` (an index, a name or a WordNet id)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vizkit.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor

_CAFFE_SYNSET = re.compile(r"^(n\d{8}) +(\S.*)$")  # a line of Caffe's synset_words.txt


class Labels(list):
    """Class names (a plain list of str) that may carry the WordNet ids they were read with
    (``wnids``), so a target can be given as ``n02112018`` as well as ``Pomeranian``."""

    wnids: list[str] | None = None


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names, one per line: ``name`` or ``wnid<TAB>name`` (the name is kept, the wnids too
    when every line has one: see :class:`Labels`), or Caffe's ``synset_words.txt`` lines
    (``n01440764 tench, Tinca tinca``: the wnid and the first synonym).

    Args:
        path: a UTF-8 text file (a byte-order mark is ignored: it used to stick to the first
            name, so that class could not be named as a target); blank lines are skipped, and an
            empty file is a UsageError.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"labels file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"labels file is not UTF-8 text: {path}") from None
    rows = [line.split("\t", 1) for line in lines if line.strip()]
    if not rows:
        raise UsageError(f"labels file is empty: {path}")
    if all(len(row) == 1 and _CAFFE_SYNSET.match(row[0].strip()) for row in rows):
        # Caffe's synset_words.txt ("n01440764 tench, Tinca tinca"): the wnid, and the first of
        # the synonyms as the name (as in torchvision's and ../shared's lists), not the whole line
        matches = [_CAFFE_SYNSET.match(row[0].strip()) for row in rows]
        rows = [[m.group(1), m.group(2).split(",")[0]] for m in matches if m is not None]
    labels = Labels(row[-1].strip() for row in rows)
    if all(len(row) == 2 for row in rows):
        labels.wnids = [row[0].strip() for row in rows]
    return labels


def check_labels(labels: Sequence[str] | None, num_classes: int) -> None:
    """Refuse class names that do not match the model's outputs one to one (a UsageError), so a
    wrong labels file is caught before it mislabels every figure.

    Args:
        labels: the class names; None (no labels) always passes.
        num_classes: how many outputs the model's classifier has.
    """
    if labels is not None and len(labels) != num_classes:
        raise UsageError(f"{len(labels)} labels given but the model has {num_classes} outputs")


def label_name(labels: Sequence[str] | None, index: int) -> str:
    """How figures and summaries name a class: its label, or ``class <index>`` without one.

    Args:
        labels: the class names, or None when there are none.
        index: the class index (an index outside ``labels`` gets the ``class <index>`` form).
    """
    return labels[index] if labels and 0 <= index < len(labels) else f"class {index}"


def resolve_targets(text: str, labels: Sequence[str] | None, logits: Tensor) -> Tensor:
    """``--target`` for a batch: ``auto`` (each image's top-1), an index or a label name for
    every image, or one per image separated by commas (``259,car wheel``; an empty entry is an
    image without a target, refused).

    Args:
        text: the option's value.
        labels: the class names (for names).
        logits: the model's [N, classes] output for the N images (for ``auto`` and the range).
    """
    import torch

    n, num_classes = logits.shape
    try:
        given = [resolve_target(text, labels, num_classes)]
    except UsageError:
        if "," not in str(text):
            raise
        parts = [part.strip() for part in str(text).split(",")]
        if "" in parts:
            raise UsageError(
                f"--target '{text}' leaves image {parts.index('') + 1} without a target; give one per image or one for all"
            ) from None
        given = [resolve_target(part, labels, num_classes) for part in parts]
    if len(given) not in (1, n):
        raise UsageError(f"give one --target for all images or one per image ({n}), not {len(given)}")
    given = given * n if len(given) == 1 else given
    top = logits.argmax(1).tolist()
    return torch.tensor([top[i] if t is None else t for i, t in enumerate(given)], device=logits.device)


def resolve_target(target: str | int, labels: Sequence[str] | None, num_classes: int) -> int | None:
    """``auto`` -> None (use the model's top-1), an index, or a class name from the labels.

    Args:
        target: ``"auto"``, a class index (an int or its digits), a class name matched
            case-insensitively against ``labels`` (a name two classes share is a UsageError
            naming both), or a WordNet id when the labels came with them (:func:`read_labels`).
        labels: the class names; needed only when ``target`` is a name.
        num_classes: how many outputs the model has; an index outside it is a UsageError.
    """
    if isinstance(target, int):
        index = target
    elif str(target).lower() == "auto":
        return None
    elif str(target).lstrip("-").isdigit():
        index = int(target)
    else:
        if not labels:
            raise UsageError(f"target '{target}' is a name but no --labels were given")
        wnids = getattr(labels, "wnids", None) or []
        matches = [i for i, name in enumerate(labels) if name.lower() == str(target).lower()]
        matches = matches or [i for i, wnid in enumerate(wnids) if wnid.lower() == str(target).lower()]
        if not matches:
            raise UsageError(f"unknown target class '{target}' (not in the labels)")
        if len(matches) > 1:
            where = " and ".join(str(i) for i in matches)
            hint = " or the wnid" if wnids else ""
            raise UsageError(f"target '{target}' names several classes ({where}); give the index{hint}")
        index = matches[0]
    if not 0 <= index < num_classes:
        raise UsageError(f"target {index} is out of range (the model has {num_classes} classes)")
    return index
