"""Deconvnet projections and image patches of the winners of a running top-k (paper Figs. 2, 4).

Shared by every analysis that first finds the strongest activations of feature maps over a set
of images and then shows them: only the winning images are run again, each once for all the
maps that chose it, and each winning activation is projected with that image's own switches.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vizkit.data import ImageList, Preprocess
from vizkit.engine.deconv import project
from vizkit.engine.recorder import Recorder
from vizkit.engine.rules import ProjectionRule
from vizkit.toolkit.progress import progress_bar
from vizkit.toolkit.topk import RunningTopK


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
    height, width = image.shape[-2:]
    crop = image[:, y0:y1, x0:x1]
    side = max(y1 - y0, x1 - x0)
    pad_y, pad_x = side - (y1 - y0), side - (x1 - x0)
    top = pad_y if y0 == 0 and y1 < height else (0 if y1 == height and y0 > 0 else pad_y // 2)
    left = pad_x if x0 == 0 and x1 < width else (0 if x1 == width and x0 > 0 else pad_x // 2)
    crop = F.pad(crop, (left, pad_x - left, top, pad_y - top), value=fill)
    return F.interpolate(crop[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


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
        batch_size: how many winning images are run together.
        device: where the winning images are run (the model's device).
        progress: show a progress bar on stderr.
    """
    maps, k = state.values.shape[0], state.filled()
    width = boxes.shape[1]
    by_image: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for m in range(maps):
        for j in range(k):
            by_image[int(state.images[m, j])].append((m, j))
    projections = np.zeros((maps, k, 3, patch_size, patch_size), dtype=np.float16)
    scales = np.zeros((maps, k), dtype=np.float32)
    patches = np.zeros((maps, k, patch_size, patch_size, 3), dtype=np.uint8)
    recomputed = np.zeros((maps, k), dtype=np.float32)
    position = np.zeros((maps, k, 2), dtype=np.int64)
    winners = sorted(by_image)
    bar = progress_bar(total=len(winners), desc=f"project {layer}", unit="images", enabled=progress)
    for start in range(0, len(winners), batch_size):
        chunk = winners[start : start + batch_size]
        x = torch.stack([dataset[i][0] for i in chunk]).to(device)
        requests = [by_image[i] for i in chunk]
        longest = max(len(r) for r in requests)
        padded = [r + [r[0]] * (longest - len(r)) for r in requests]  # repeats are computed, then dropped
        table = torch.tensor([[channels[m] for m, _ in r] for r in padded])
        flat = torch.stack([torch.stack([state.positions[m, j] for m, j in r]) for r in padded]).cpu()
        where = torch.stack([flat // width, flat % width], dim=-1)
        result = project(im, x, layer, table, position=where, rule=rule, chunk=len(chunk))
        shown = preprocess.denormalize(x.cpu())
        for b, request in enumerate(requests):
            for slot, (m, j) in enumerate(request):
                row, col = where[b, slot].tolist()
                box = boxes[row, col].tolist()
                signal = crop_to_box(result.images[b, slot].cpu(), box, patch_size, 0.0)
                scale = float(signal.abs().max()) or 1.0
                projections[m, j] = (signal / scale).numpy().astype(np.float16)
                scales[m, j] = scale
                patch = crop_to_box(shown[b], box, patch_size, 0.5)
                patches[m, j] = (patch.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                recomputed[m, j] = float(result.values[b, slot])
                position[m, j] = (row, col)
        bar.update(len(chunk))
    bar.close()
    return {
        "projections": projections,
        "projection_scale": scales,
        "patches": patches,
        "recomputed": recomputed,
        "position": position,
    }
