"""Where ``occlusion``'s square goes: the grid of occluder positions kept inside the image, and
copies of an image with the square filled at given positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass(frozen=True)
class OcclusionGrid:
    """Occluder positions: squares of ``size`` px, ``stride`` apart, kept inside the image."""

    height: int
    width: int
    size: int
    stride: int

    @property
    def rows(self) -> int:
        return (self.height - self.size) // self.stride + 1

    @property
    def cols(self) -> int:
        return (self.width - self.size) // self.stride + 1

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def top_left(self, row: int, col: int) -> tuple[int, int]:
        return row * self.stride, col * self.stride

    def corners(self) -> list[tuple[int, int]]:
        return [self.top_left(r, c) for r in range(self.rows) for c in range(self.cols)]

    def centers_y(self) -> np.ndarray:
        return (np.arange(self.rows) * self.stride + (self.size - 1) / 2).astype(np.float32)

    def centers_x(self) -> np.ndarray:
        return (np.arange(self.cols) * self.stride + (self.size - 1) / 2).astype(np.float32)

    def extent(self) -> tuple[float, float, float, float]:
        """imshow extent (left, right, bottom, top) placing each cell on its occluder's centre.

        A cell spans the stride between neighbouring positions; along an axis with a single
        position (the occluder as large as the image, or a stride past its edge) there is no
        neighbour, and the cell spans the occluder itself (not a stride-wide sliver, or a cell
        far wider than the image)."""
        half_y = (self.stride if self.rows > 1 else self.size) / 2
        half_x = (self.stride if self.cols > 1 else self.size) / 2
        cy, cx = self.centers_y(), self.centers_x()
        return (float(cx[0] - half_x), float(cx[-1] + half_x), float(cy[-1] + half_y), float(cy[0] - half_y))


def occluded_batch(x: Tensor, corners: list[tuple[int, int]], size: int, fill: Tensor) -> Tensor:
    """Copies of one image [3,H,W], each with the square at one of ``corners`` filled."""
    batch = x.unsqueeze(0).repeat(len(corners), 1, 1, 1)
    colour = fill.to(x.device, x.dtype).reshape(3, 1, 1)
    for k, (y0, x0) in enumerate(corners):
        batch[k, :, y0 : y0 + size, x0 : x0 + size] = colour
    return batch
