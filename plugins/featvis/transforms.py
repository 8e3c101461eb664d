"""Transformation robustness (Lucid): the image is randomly jittered, scaled and rotated (and
padded) before each forward, so that the optimum is a pattern the unit answers to wherever and
however large it is, not one exact arrangement of pixels that fools it.

Each transform is a class taking a ``torch.Generator`` (drawn on the CPU, so a seed reproduces on
any device); ``compose`` chains them and :func:`build` makes them by name. They act on [B,3,H,W]
images in [0, 1] (before the model's normalisation), one draw for the whole batch per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import vizkit

Transform = Callable[[Tensor], Tensor]


def _choice(values: Sequence[float], generator: torch.Generator | None) -> float:
    return float(values[int(torch.randint(len(values), (1,), generator=generator))])


class Pad:
    """Pad by ``pixels`` on every side: ``mode`` "constant" (``value``, default mid-grey as
    Lucid's) or "reflect"; no randomness (``generator`` is accepted for a uniform interface)."""

    def __init__(
        self, pixels: int, mode: str = "constant", value: float = 0.5, generator: torch.Generator | None = None
    ) -> None:
        if mode not in ("constant", "reflect"):
            raise vizkit.UsageError(f"unknown padding mode '{mode}': use constant or reflect")
        self.pixels, self.mode, self.value = int(pixels), mode, float(value)

    def __call__(self, image: Tensor) -> Tensor:
        p = self.pixels
        if p == 0:
            return image
        if self.mode == "reflect":
            return F.pad(image, (p, p, p, p), mode="reflect")
        return F.pad(image, (p, p, p, p), mode="constant", value=self.value)


class Jitter:
    """Translate by a random offset of up to ``pixels`` in each direction (the image keeps its
    size; the uncovered border is filled by reflection)."""

    def __init__(self, pixels: int, generator: torch.Generator | None = None) -> None:
        self.pixels, self.generator = int(pixels), generator

    def __call__(self, image: Tensor) -> Tensor:
        p = self.pixels
        if p == 0:
            return image
        dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,), generator=self.generator))
        height, width = image.shape[-2:]
        mode = "reflect" if p < min(height, width) else "replicate"
        padded = F.pad(image, (p, p, p, p), mode=mode)
        return padded[..., dy : dy + height, dx : dx + width]


class Scale:
    """Resize by a factor drawn from ``factors`` (bilinear)."""

    def __init__(self, factors: Sequence[float], generator: torch.Generator | None = None) -> None:
        if not factors or any(f <= 0 for f in factors):
            raise vizkit.UsageError(f"scale factors must be positive, not {list(factors)}")
        self.factors, self.generator = list(factors), generator

    def __call__(self, image: Tensor) -> Tensor:
        factor = _choice(self.factors, self.generator)
        height, width = image.shape[-2:]
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        if size == (height, width):
            return image
        return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


class Rotate:
    """Rotate about the centre by an angle (degrees) drawn from ``degrees`` (bilinear; the corners
    brought in are filled by reflection)."""

    def __init__(self, degrees: Sequence[float], generator: torch.Generator | None = None) -> None:
        if not degrees:
            raise vizkit.UsageError("rotation needs at least one angle")
        self.degrees, self.generator = list(degrees), generator

    def __call__(self, image: Tensor) -> Tensor:
        angle = math.radians(_choice(self.degrees, self.generator))
        if angle == 0.0:
            return image
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=image.dtype, device=image.device)
        grid = F.affine_grid(theta.expand(image.shape[0], 2, 3), list(image.shape), align_corners=False)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class Compose:
    """The transforms applied in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor) -> Tensor:
        for transform in self.transforms:
            image = transform(image)
        return image


def compose(*transforms: Transform) -> Compose:
    return Compose(transforms)


NAMES = ("pad", "jitter", "scale", "rotate")


def build(names: str | Sequence[str] | None, generator: torch.Generator | None = None) -> Compose:
    """Lucid's standard transforms, or those of them named (in this order: pad 12 px, jitter 8 px,
    scale by 0.9..1.1, rotate by -10..10 degrees, jitter 4 px). ``names``: "standard", a comma
    list or sequence of ``pad``, ``jitter``, ``scale``, ``rotate``, or None / "" / "none" (none)."""
    if names is None or names in ("", "none"):
        return Compose([])
    chosen = set(NAMES) if names == "standard" else ({names} if isinstance(names, str) else set(names))
    if isinstance(names, str) and "," in names:
        chosen = {name.strip() for name in names.split(",") if name.strip()}
    unknown = sorted(chosen - set(NAMES))
    if unknown:
        raise vizkit.UsageError(f"unknown transform(s) {', '.join(unknown)}: use {', '.join(NAMES)} or standard")
    steps: list[Transform] = []
    if "pad" in chosen:
        steps.append(Pad(12))
    if "jitter" in chosen:
        steps.append(Jitter(8, generator))
    if "scale" in chosen:
        steps.append(Scale([1 + (i - 5) / 50 for i in range(11)], generator))
    if "rotate" in chosen:
        steps.append(Rotate(list(range(-10, 11)), generator))
    if "jitter" in chosen:
        steps.append(Jitter(4, generator))
    return Compose(steps)
