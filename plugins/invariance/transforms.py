"""The transformations of ``invariance`` (translate, scale, rotate) and the steps each is
applied at, the identity always among them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

import vizkit

TRANSFORMS = ("translate", "scale", "rotate")
IDENTITY = {"translate": 0.0, "scale": 1.0, "rotate": 0.0}
UNITS = {"translate": "vertical translation (px)", "scale": "scale", "rotate": "rotation (degrees)"}


@dataclass(frozen=True)
class Transform:
    """One transformation family and the values it is applied at."""

    name: str
    steps: tuple[float, ...]

    def apply(self, image: Tensor, value: float, fill: list[float]) -> Tensor:
        """``image`` [3,H,W] in [0,1] (resized, not yet cropped) transformed by ``value``."""
        from torchvision.transforms import InterpolationMode  # torchvision costs seconds at start-up
        from torchvision.transforms.v2 import functional as tf

        if value == IDENTITY[self.name]:
            return image
        bilinear = InterpolationMode.BILINEAR
        if self.name == "translate":
            return tf.affine(
                image,
                angle=0.0,
                translate=[0, round(value)],
                scale=1.0,
                shear=[0.0, 0.0],
                interpolation=bilinear,
                fill=fill,
            )
        if self.name == "scale":
            return tf.affine(
                image, angle=0.0, translate=[0, 0], scale=value, shear=[0.0, 0.0], interpolation=bilinear, fill=fill
            )
        return tf.rotate(image, value, interpolation=bilinear, fill=fill)


def parse_range(text: str, flag: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError:
        raise vizkit.UsageError(f"{flag} expects two comma-separated numbers LOW,HIGH, not '{text}'") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise vizkit.UsageError(f"{flag} needs LOW < HIGH, not '{text}'")
    return low, high


def make_transforms(names: list[str], steps: int, ranges: dict[str, tuple[float, float]]) -> list[Transform]:
    """The transforms ``names`` (of :data:`TRANSFORMS`, as ``--transforms`` gives them) with
    ``steps`` steps each over their ``ranges`` (the identity always among them)."""
    if ranges["scale"][0] <= 0:
        raise vizkit.UsageError(f"--range-scale must be above 0, not {ranges['scale'][0]}")
    out = []
    for name in names:
        low, high = ranges[name]
        values = np.linspace(low, high, steps)
        if name == "translate":
            values = np.round(values)  # whole input pixels
        grid = sorted({float(v) for v in values} | {IDENTITY[name]})
        if len(grid) < 2:  # a translation range inside (-0.5, 0.5) rounds to the identity alone
            raise vizkit.UsageError(
                f"--range-{name} {low:g},{high:g} gives no step but the identity (translations are whole "
                "input pixels); give a range that reaches at least one pixel"
            )
        out.append(Transform(name, tuple(grid)))
    return out
