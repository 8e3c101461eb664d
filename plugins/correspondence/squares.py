"""The occluding squares of ``correspondence``: each image's parts mapped into the crop, a
square on every part, and the random squares drawn inside the object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

import vizkit

from .landmarks import LandmarkedImage


@dataclass(frozen=True)
class Square:
    """An occluder: top-left (row, col) in input pixels and side; may reach past the border,
    where it is clipped."""

    top: int
    left: int
    size: int

    @classmethod
    def centred(cls, x: float, y: float, size: int) -> Square:
        return cls(round(y - (size - 1) / 2), round(x - (size - 1) / 2), size)

    def apply(self, image: Tensor, fill: Tensor) -> Tensor:
        """A copy of ``image`` [3,H,W] with the square (clipped to the image) filled."""
        out = image.clone()
        height, width = image.shape[-2:]
        y0, x0 = max(0, self.top), max(0, self.left)
        y1, x1 = min(height, self.top + self.size), min(width, self.left + self.size)
        out[:, y0:y1, x0:x1] = fill.to(image.device, image.dtype).reshape(3, 1, 1)
        return out


def object_region(
    image: LandmarkedImage, parts: dict[str, tuple[float, float]], size: int, crop: int, to_input: Any
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in input pixels where random squares are centred: the mapped ``box``, or
    the box around the image's mapped parts grown by ``size``; clipped to the crop."""
    if image.box is not None:
        x0, y0 = to_input(image.box[0], image.box[1])
        x1, y1 = to_input(image.box[2], image.box[3])
    else:
        xs = [p[0] for p in parts.values()]
        ys = [p[1] for p in parts.values()]
        x0, y0, x1, y1 = min(xs) - size, min(ys) - size, max(xs) + size, max(ys) + size
    clip = lambda v: min(max(v, 0.0), crop - 1.0)
    return clip(x0), clip(y0), clip(x1), clip(y1)


def _parts_in_crop(
    entries: list[LandmarkedImage], pictures: list[Any], preprocess: vizkit.Preprocess
) -> tuple[list[dict[str, tuple[float, float]]], list[str]]:
    """Each image's parts mapped to input pixels, and the parts the crop cuts away (reported
    and skipped), in words."""
    crop = preprocess.crop
    mapped: list[dict[str, tuple[float, float]]] = []
    skipped: list[str] = []
    for entry, picture in zip(entries, pictures):
        width, height = picture.size
        inside = {}
        for part, (x, y) in entry.parts.items():
            ix, iy = preprocess.input_point(x, y, width, height)
            if 0 <= ix < crop and 0 <= iy < crop:
                inside[part] = (ix, iy)
            else:
                skipped.append(f"{part} of {entry.path.name} (at {ix:.0f},{iy:.0f}, outside the {crop}x{crop} crop)")
        mapped.append(inside)
    return mapped, skipped


def _named_in(mapped: list[dict[str, tuple[float, float]]], part: str) -> int:
    """How many images name ``part`` inside the crop."""
    return sum(part in inside for inside in mapped)


def _squares(
    entries: list[LandmarkedImage],
    mapped: list[dict[str, tuple[float, float]]],
    pictures: list[Any],
    parts: list[str],
    preprocess: vizkit.Preprocess,
    size: int,
    random: int,
    seed: int,
) -> tuple[list[list[Square]], list[tuple[float, float, float, float]]]:
    """Every image's squares: one per part it has (a placeholder where it has not), then
    ``random`` squares drawn inside its object region; and those regions."""
    crop = preprocess.crop
    generator = np.random.default_rng(seed)
    squares: list[list[Square]] = []
    regions = []
    for entry, inside, picture in zip(entries, mapped, pictures):
        own = [Square.centred(*inside[part], size) if part in inside else Square(0, 0, 0) for part in parts]

        def to_input(
            x: float, y: float, width: int = picture.size[0], height: int = picture.size[1]
        ) -> tuple[float, float]:
            return preprocess.input_point(x, y, width, height)

        region = object_region(entry, inside or {"centre": (crop / 2, crop / 2)}, size, crop, to_input)
        regions.append(region)
        xs = generator.uniform(region[0], region[2], random)
        ys = generator.uniform(region[1], region[3], random)
        squares.append(own + [Square.centred(float(x), float(y), size) for x, y in zip(xs, ys)])
    return squares, regions
