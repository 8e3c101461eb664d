"""Caltech-101 with an ADN's maps as the local descriptors of Spatial Pyramid Matching.

The ADN paper (ICCV 2011, Table 1) feeds its layer-1 (and layer 1+2) feature maps to Lazebnik et
al.'s SPM pipeline in place of SIFT: 67.8 +- 1.2 % with layer 1, 30 training images per class.
Here the maps are the magnitudes of the unpooled codes |z_1| (15 maps at the image's size) and,
for "1+2", |z_2| brought to the same size (each layer-2 position repeated over the 3x3 pixels its
pooling region covers) and stacked behind them; :mod:`vizkit.toolkit.spm` turns them into dense
descriptors (sums of each map over a 4x4 grid of cells in 16x16 patches, every 8 pixels, SIFT's
normalisation), a k-means vocabulary, a 3-level pyramid and an intersection-kernel SVM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vizkit import UsageError

from .model import load_adn_model
from .training import load_prepared

PAPER = {"1": (67.8, 1.2), "1+2": None}  # ICCV 2011 Table 1 (layer 1); the CDBN's 65.4, SIFT-SPM's 64.6


def adn_features(run: Path, which: str) -> Callable[[list[Path]], Tensor]:
    """Paths -> ``[N, K, H, W]`` maps: |z_1| (``which="1"``) or |z_1| and |z_2| stacked."""
    if which not in ("1", "1+2"):
        raise UsageError(f"--features must be 1 or 1+2, not {which!r}")
    model = load_adn_model(run)
    layers = 1 if which == "1" else 2
    if len(model.layers) < layers:
        raise UsageError(f"{run}: --features {which} needs {layers} trained layers, the run has {len(model.layers)}")
    network = model.network()
    size = network.config.image_size

    def features(paths: list[Path]) -> Tensor:
        y = load_prepared(list(paths), size)
        codes = network.infer(y, layers=layers)
        maps = [codes[0].z.abs()]
        if layers == 2:
            up = codes[1].z.abs().repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)
            maps.append(F.pad(up, (0, max(0, size - up.shape[-1]), 0, max(0, size - up.shape[-2])))[..., :size, :size])
        return torch.cat(maps, dim=1)

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
) -> str:
    """Run the protocol, write ``out`` (JSON: per split, mean, std, settings, the paper's
    number) and return a one-line summary (:func:`vizkit.toolkit.spm.evaluate_to_file`)."""
    from vizkit.toolkit import spm

    return spm.evaluate_to_file(
        adn_features(run, which),
        data,
        out,
        f"ADN layer {which}",
        PAPER.get(which),
        splits=splits,
        train=train,
        test=test,
        words=words,
        classes=classes,
        seed=seed,
        progress=progress,
        record={"run": str(run)},
    )
