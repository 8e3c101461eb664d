"""Caltech-101 with a CDBN's pooling maps as the local descriptors of Spatial Pyramid Matching.

Lee et al. (ICML 2009, Sec. 4.2) feed the first- and second-layer CDBN features to Lazebnik et
al.'s SPM pipeline: 65.4 ± 0.5 % with 30 training images per class (layers 1+2). Here the maps
are the pooling units' probabilities from feed-forward inference: layer 1's (24 maps at half the
image's size) and, for "1+2", layer 2's, each repeated over the 2x2 layer-1 pooling units its
cell covers and shifted to the centre of its receptive field, stacked behind them. The same
:mod:`vizkit.toolkit.spm` pipeline as the ADN's turns them into dense descriptors (the maps
summed over a 4x4 grid of cells in 8x8 patches every 4 units of layer 1's pooling grid, i.e.
SIFT's 16x16 pixels every 8, and SIFT's normalisation), a
k-means vocabulary, a 3-level pyramid and an intersection-kernel SVM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vizkit import UsageError

from .training import finished_network, load_images

PAPER = {"1+2": (65.4, 0.5), "1": None}  # ICML 2009, Sec. 4.2 (layers 1+2)
# on layer 1's pooling grid (half the image's resolution): 8x8 patches every 4 units are SIFT's
# 16x16 pixels every 8 (on 20 classes, 1 split: 55.3 % against 44.0 % for 16 every 8 units)
PATCH, STRIDE = 8, 4


def aligned_layer2(pooled2: Tensor, pool1: int, pool2: int, filter2: int, size: tuple[int, ...] | torch.Size) -> Tensor:
    """Layer-2 pooling maps ``[N, K, h2, w2]`` on layer 1's pooling grid ``size``: each unit
    repeated over the ``pool2 x pool2`` layer-1 pooling units of its cell and offset by half the
    filter, so it sits over the centre of what it sees."""
    up = pooled2.repeat_interleave(pool2, dim=-2).repeat_interleave(pool2, dim=-1)
    offset = (filter2 - 1) // 2
    height, width = int(size[0]), int(size[1])
    padded = F.pad(up, (offset, max(0, width - up.shape[-1] - offset), offset, max(0, height - up.shape[-2] - offset)))
    return padded[..., :height, :width]


def cdbn_features(run: Path, which: str, batch_size: int = 16) -> Callable[[list[Path]], Tensor]:
    """Paths -> ``[N, K, H, W]`` maps: layer 1's pooling probabilities (``which="1"``) or layers
    1 and 2's stacked (``"1+2"``)."""
    if which not in ("1", "1+2"):
        raise UsageError(f"--features must be 1 or 1+2, not {which!r}")
    network = finished_network(run)
    layers = 1 if which == "1" else 2
    if len(network.layers) < layers:
        raise UsageError(f"{run}: --features {which} needs {layers} trained layers, the run has {len(network.layers)}")
    size = network.config.image_size

    def features(paths: list[Path]) -> Tensor:
        out = []
        for start in range(0, len(paths), batch_size):
            states = network.infer(load_images(list(paths[start : start + batch_size]), size), layers=layers)
            maps = [states[0][1]]
            if layers == 2:
                second = network.layers[1]
                maps.append(
                    aligned_layer2(
                        states[1][1], network.layers[0].pool, second.pool, second.weight.shape[-1], maps[0].shape[-2:]
                    )
                )
            out.append(torch.cat(maps, dim=1))
        return torch.cat(out)

    return features


def evaluate_run(
    run: Path,
    data: Path,
    which: str,
    splits: int,
    train: int,
    test: int,
    words: int,
    classes: int | None,
    seed: int,
    out: Path,
    progress: bool = True,
    patch: int = PATCH,
    stride: int = STRIDE,
) -> str:
    """Run the protocol, write ``out`` and return a one-line summary."""
    from vizkit.toolkit import spm

    return spm.evaluate_to_file(
        cdbn_features(run, which),
        data,
        out,
        f"CDBN layer {which}",
        PAPER.get(which),
        splits=splits,
        train=train,
        test=test,
        words=words,
        classes=classes,
        seed=seed,
        progress=progress,
        record={"run": str(run)},
        patch=patch,
        stride=stride,
    )
