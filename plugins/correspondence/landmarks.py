"""The landmarks file of ``correspondence``: images of one kind of object with their named parts
and optional object box, read and checked (a UsageError says what is wrong)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vizkit

RESERVED_KEYS = ("image", "class_index", "box", "parts", "name")


@dataclass(frozen=True)
class LandmarkedImage:
    """One image of the landmarks file: its path, named parts and optional object box, all in
    the stored image's pixels, and its optional class."""

    path: Path
    parts: dict[str, tuple[float, float]]
    box: tuple[float, float, float, float] | None = None
    class_index: int | None = None


def _resolve_image(name: str, folder: Path) -> Path | None:
    """The image ``name`` relative to the landmarks file's folder, then each parent folder, then
    as given."""
    for base in (folder, *folder.parents):
        candidate = base / name
        if candidate.is_file():
            return candidate
    given = Path(name)
    return given if given.is_file() else None


def _point(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def read_landmarks(path: str | Path) -> list[LandmarkedImage]:
    """The images of a landmarks file (the format of ``shared/data/dog_landmarks.json``).

    Args:
        path: a JSON file: ``{"images": [...]}`` or a bare list; each entry has ``image`` (a path),
            any number of parts as ``"name": [x, y]`` (or under ``"parts": {...}``), an optional
            ``box`` [x0, y0, x1, y1] and an optional ``class_index``.
    """
    path = Path(path)
    if not path.is_file():
        raise vizkit.UsageError(f"landmarks file not found: {path}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise vizkit.UsageError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    entries = document.get("images") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise vizkit.UsageError(f"{path} must hold a list of images (or {{'images': [...]}})")
    images = [_landmarked_image(path, number, entry) for number, entry in enumerate(entries)]
    if len(images) < 2:
        raise vizkit.UsageError(f"{path} lists {len(images)} image(s); correspondence needs at least two")
    if not any(image.parts for image in images):
        raise vizkit.UsageError(f'{path} names no parts (e.g. "nose": [x, y]) in any image')
    return images


def _landmarked_image(path: Path, number: int, entry: Any) -> LandmarkedImage:
    """Entry ``number`` of landmarks file ``path``, checked (a UsageError says what is wrong)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        raise vizkit.UsageError(f"{path}: image {number} has no 'image' path")
    found = _resolve_image(entry["image"], path.parent)
    if found is None:
        raise vizkit.UsageError(f"{path}: image not found: {entry['image']} (looked next to the file and above it)")
    source = entry["parts"] if isinstance(entry.get("parts"), dict) else entry
    parts = {}
    for key, value in source.items():
        if key in RESERVED_KEYS:
            continue
        point = _point(value)
        if point is None:
            raise vizkit.UsageError(f"{path}: part '{key}' of {entry['image']} is not an [x, y] pair")
        parts[key] = point
    box = entry.get("box")
    if box is not None and not (isinstance(box, list) and len(box) == 4 and box[0] < box[2] and box[1] < box[3]):
        raise vizkit.UsageError(f"{path}: the box of {entry['image']} must be [x0, y0, x1, y1] with x0 < x1, y0 < y1")
    class_index = entry.get("class_index")
    corners = (float(box[0]), float(box[1]), float(box[2]), float(box[3])) if box else None
    return LandmarkedImage(found, parts, corners, class_index)
