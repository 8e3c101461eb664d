"""Occlusion sensitivity (PAPER.md §6): the occluder grid and the engines that evaluate it.

``occlusion_maps`` returns, for every image and occluder position, the total activity of one
feature map of a layer, the target class's probability and the top label. Two engines compute
the same numbers: ``batched`` (many occluded copies per forward) and ``exact`` (incremental:
only the changed window of each layer is recomputed, see :mod:`vizkit.incremental`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vizkit.data import Preprocess
from vizkit.errors import UsageError
from vizkit.instrument import Instrumented
from vizkit.progress import progress_bar


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
        """imshow extent (left, right, bottom, top) placing each cell on its occluder's centre."""
        half = self.stride / 2
        cy, cx = self.centers_y(), self.centers_x()
        return (float(cx[0] - half), float(cx[-1] + half), float(cy[-1] + half), float(cy[0] - half))


def parse_fill(text: str, preprocess: Preprocess) -> Tensor:
    """The occluder colour in the model's (normalised) input space, as a [3] tensor."""
    mean, std = torch.tensor(preprocess.mean), torch.tensor(preprocess.std)
    text = str(text).strip().lower()
    if text == "mean":
        return torch.zeros(3)  # the dataset mean is zero after normalisation
    if text == "zero":
        return (0 - mean) / std  # black
    try:
        rgb = torch.tensor([float(v) for v in text.split(",")])
    except ValueError:
        rgb = torch.tensor([])
    if rgb.numel() != 3 or bool((rgb < 0).any()) or bool((rgb > 255).any()):
        raise UsageError(f"--fill expects mean, zero, or R,G,B with values 0-255; not '{text}'")
    return (rgb / 255 - mean) / std


def occluded_batch(x: Tensor, corners: list[tuple[int, int]], size: int, fill: Tensor) -> Tensor:
    """Copies of one image [3,H,W], each with the square at one of ``corners`` filled."""
    batch = x.unsqueeze(0).repeat(len(corners), 1, 1, 1)
    colour = fill.to(x.device, x.dtype).reshape(3, 1, 1)
    for k, (y0, x0) in enumerate(corners):
        batch[k, :, y0:y0 + size, x0:x0 + size] = colour
    return batch


def occlusion_maps(
    im: Instrumented,
    x: Tensor,
    layer: str,
    feature_maps: Tensor,
    targets: Tensor,
    grid: OcclusionGrid,
    fill: Tensor,
    mode: str = "exact",
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per image [N, rows, cols]: ``feature_activity`` (sum of map ``feature_maps[i]`` of
    ``layer``), ``true_class_prob`` (softmax of ``targets[i]``) and ``top_label``."""
    if mode not in ("exact", "batched"):
        raise UsageError(f"unknown occlusion mode '{mode}'; use exact or batched")
    n = x.shape[0]
    activity = np.zeros((n, grid.count), dtype=np.float32)
    probability = np.zeros((n, grid.count), dtype=np.float32)
    top = np.zeros((n, grid.count), dtype=np.int64)
    corners = grid.corners()
    bar = progress_bar(total=n * grid.count, desc="occlusion", enabled=progress)
    recording = im.record_switches
    if mode == "batched":  # full forwards: record the tracked layer only, and no switches (set once)
        im.set_layers([layer])
        im.record_switches = False
    try:
        for i in range(n):
            if mode == "exact":
                from vizkit.incremental import IncrementalOcclusion

                engine = IncrementalOcclusion(im, x[i:i + 1], layer)
                evaluate = lambda part: engine.evaluate(part, grid.size, fill)  # noqa: E731
            else:
                evaluate = lambda part: _batched(im, x[i], layer, part, grid.size, fill)  # noqa: E731
            for start in range(0, grid.count, batch_size):
                part = corners[start:start + batch_size]
                with torch.no_grad():
                    logits, layer_out = evaluate(part)
                p = logits.float().softmax(dim=1)
                window = slice(start, start + len(part))
                activity[i, window] = layer_out[:, int(feature_maps[i])].sum(dim=(1, 2)).cpu().numpy()
                probability[i, window] = p[:, int(targets[i])].cpu().numpy()
                top[i, window] = p.argmax(dim=1).cpu().numpy()
                bar.update(len(part))
    finally:
        im.record_switches = recording
        bar.close()
    shape = (n, grid.rows, grid.cols)
    return {"feature_activity": activity.reshape(shape), "true_class_prob": probability.reshape(shape),
            "top_label": top.reshape(shape)}


def _batched(im: Instrumented, image: Tensor, layer: str, corners, size: int, fill: Tensor) -> tuple[Tensor, Tensor]:
    logits = im(occluded_batch(image, corners, size, fill))
    return logits, im.activation(layer)
