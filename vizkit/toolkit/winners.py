"""Deconvnet projections and image patches of the winners of a running top-k (paper Figs. 2, 4).

Shared by every analysis that first finds the strongest activations of feature maps over a set
of images and then shows them: only the winning images are run again, a chunk at a time, and each
winning activation is projected with that image's own switches, inside its receptive field, by
:func:`vizkit.engine.project_units` (every unit that chose an image shares its forward; memory is
bounded by the chunk of images and a bounded batch of projections, however many maps share an
image).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vizkit.data import ImageList, Preprocess
from vizkit.engine.batched import project_units
from vizkit.engine.recorder import Recorder
from vizkit.engine.rules import ProjectionRule
from vizkit.toolkit.progress import progress_bar
from vizkit.toolkit.topk import RunningTopK

_UNIT_CHUNK = 64  # (cut, unit) slots of one forward-and-backward of project_units
_CROP_BYTES = 64 * 2**20  # float32 receptive-box crops one project_units call may return
_IMAGES_PER_CALL = 256  # winning images loaded per project_units round (at least batch_size) ...
_IMAGE_BYTES = 128 * 2**20  # ... and at most this much of them


def crop_to_box(image: Tensor, box: list[int], size: int, fill: float) -> Tensor:
    """``image`` [C,H,W] cut to ``box`` (x0, y0, x1, y1), padded to a square on the side(s) the
    image border clipped (so nothing is stretched), resized to ``size`` x ``size``.

    Args:
        image: a [C,H,W] image or projection.
        box: (x0, y0, x1, y1) in pixels, exclusive ends, inside the image (e.g. a receptive box).
        size: the side of the square result, in pixels.
        fill: the value of the padding (e.g. 0.0 for a projection, 0.5 grey for an image).
    """
    x0, y0, x1, y1 = box
    return _square(image[:, y0:y1, x0:x1], box, (image.shape[-2], image.shape[-1]), size, fill)


def _square(crop: Tensor, box: Sequence[int], extent: tuple[int, int], size: int, fill: float) -> Tensor:
    """:func:`crop_to_box` of an image of ``extent`` (H, W) whose cut to ``box`` is ``crop``."""
    x0, y0, x1, y1 = box
    height, width = extent
    side = max(y1 - y0, x1 - x0)
    pad_y, pad_x = side - (y1 - y0), side - (x1 - x0)
    top = pad_y if y0 == 0 and y1 < height else (0 if y1 == height and y0 > 0 else pad_y // 2)
    left = pad_x if x0 == 0 and x1 < width else (0 if x1 == width and x0 > 0 else pad_x // 2)
    crop = F.pad(crop, (left, pad_x - left, top, pad_y - top), value=fill)
    return F.interpolate(crop[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def _bounded(slots: list[tuple[int, int, int, int, int]], boxes: Tensor) -> list[list[tuple[int, int, int, int, int]]]:
    """``slots`` (image, map, slot, row, col) in runs whose receptive-box crops take at most
    ``_CROP_BYTES`` (at least one slot each); sorted by (image, row, col) first, so units that
    share a cut (and so a forward) stay together."""
    runs: list[list[tuple[int, int, int, int, int]]] = []
    run: list[tuple[int, int, int, int, int]] = []
    used = 0
    for slot in sorted(slots, key=lambda s: (s[0], s[3], s[4], s[1], s[2])):
        x0, y0, x1, y1 = boxes[slot[3], slot[4]].tolist()
        size = 3 * 4 * (y1 - y0) * (x1 - x0)
        if run and used + size > _CROP_BYTES:
            runs.append(run)
            run, used = [], 0
        run.append(slot)
        used += size
    if run:
        runs.append(run)
    return runs


def project_winners(
    im: Recorder,
    dataset: ImageList,
    preprocess: Preprocess,
    layer: str,
    channels: list[int],
    state: RunningTopK,
    boxes: Tensor,
    patch_size: int,
    rule: str | ProjectionRule = "deconvnet",
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """For every filled slot [map, j] of ``state`` (maps = ``channels`` of ``layer``): the
    projection cut to its receptive box and scaled to max |value| 1 (``projections`` fp16
    [M,k,3,P,P], ``projection_scale``), the image patch under the box (``patches`` uint8
    [M,k,P,P,3]), the activation recomputed by the projection's forward (``recomputed``) and its
    (row, col) in the map (``position`` [M,k,2]).

    The winning images are loaded ``batch_size`` at a time, and their units projected by
    :func:`vizkit.engine.project_units` (each inside its receptive box, every unit of one cut in
    one forward), in runs of bounded size: memory does not grow with how many maps share an image.
    Each projection equals ``vizkit.project``'s of that one unit, cut to its box.

    Args:
        im: the instrumented model (:func:`vizkit.instrument`).
        dataset: the images ``state`` was computed over; its indices are ``state.images``.
        preprocess: the dataset's preprocessing, used to turn inputs back into [0, 1] patches.
        layer: the layer whose maps ``state`` ranks.
        channels: the M feature maps of ``layer`` that the rows of ``state`` stand for.
        state: the running top-k over ``dataset`` of those maps (M rows, k slots each).
        boxes: the layer's receptive boxes, [h, w, 4] from :func:`vizkit.engine.receptive_boxes`.
        patch_size: P, the side of every projection and patch, in pixels.
        rule: the projection rule, or a built-in one's name (``"deconvnet"``: the paper's).
        batch_size: the fewest winning images loaded together (up to 256 are, within 128 MB).
        device: where the winning images are run (the model's device).
        progress: show a progress bar on stderr.
    """
    maps, k = state.values.shape[0], state.filled()
    width = boxes.shape[1]
    images, flat = state.images[:, :k].cpu().tolist(), state.positions[:, :k].cpu().tolist()
    by_image: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)  # image -> (map, slot, row, col)
    for m in range(maps):
        for j in range(k):
            by_image[images[m][j]].append((m, j, flat[m][j] // width, flat[m][j] % width))
    projections = np.zeros((maps, k, 3, patch_size, patch_size), dtype=np.float16)
    scales = np.zeros((maps, k), dtype=np.float32)
    patches = np.zeros((maps, k, patch_size, patch_size, 3), dtype=np.uint8)
    recomputed = np.zeros((maps, k), dtype=np.float32)
    position = np.zeros((maps, k, 2), dtype=np.int64)
    winners = sorted(by_image)
    bar = progress_bar(total=len(winners), desc=f"project {layer}", unit="images", enabled=progress)
    # more images per call, fewer project_units calls with few seeds each; the images' memory bounded
    first = dataset[winners[0]][0] if winners else None
    per_image = first.numel() * 4 if first is not None else 1
    step = max(1, batch_size, min(_IMAGES_PER_CALL, _IMAGE_BYTES // per_image))
    geometry: dict = {}  # the layer's receptive boxes of the image and of each cut size, computed once
    for start in range(0, len(winners), step):
        chunk = winners[start : start + step]
        x = torch.stack([dataset[i][0] for i in chunk]).to(device)
        extent = (int(x.shape[-2]), int(x.shape[-1]))
        shown = preprocess.denormalize(x.cpu())
        slots = [(b, m, j, row, col) for b, i in enumerate(chunk) for m, j, row, col in by_image[i]]
        for run in _bounded(slots, boxes):
            table = [(b, channels[m], row, col) for b, m, _, row, col in run]
            result = project_units(im, x, layer, table, rule=rule, chunk=_UNIT_CHUNK, geometry=geometry)
            for r, (b, m, j, row, col) in enumerate(run):
                box = boxes[row, col].tolist()
                if result.boxes[r].tolist() == box:
                    signal = _square(result.crops[r].cpu(), box, extent, patch_size, 0.0)
                else:  # not expected: project_units' box of the unit is the one given
                    signal = crop_to_box(result.image(r).cpu(), box, patch_size, 0.0)
                scale = float(signal.abs().max()) or 1.0
                projections[m, j] = (signal / scale).numpy().astype(np.float16)
                scales[m, j] = scale
                patch = crop_to_box(shown[b], box, patch_size, 0.5)
                patches[m, j] = (patch.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                recomputed[m, j] = float(result.values[r])
                position[m, j] = (row, col)
            del result
        bar.update(len(chunk))
    bar.close()
    return {
        "projections": projections,
        "projection_scale": scales,
        "patches": patches,
        "recomputed": recomputed,
        "position": position,
    }
