"""The reference point for `vizkit adn caltech`: the same Spatial Pyramid Matching pipeline
(vizkit.toolkit.spm) on the ImageNet SqueezeNet 1.0's conv1 + ReLU maps (96 maps, 7x7, stride 2:
72x72 at 150 px) instead of an ADN's, on Caltech-101 (30 training / up to 50 test images a class).

    python scripts/spm_squeezenet_reference.py [--shared ../shared] [--splits 3] [--patch 16 --stride 8]

--patch/--stride are in map pixels: 8/4 on these stride-2 maps is the 16/8 grid in image pixels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torchvision

from vizkit.toolkit import spm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--size", type=int, default=150)
    args = parser.parse_args()
    start = time.perf_counter()
    model = torchvision.models.squeezenet1_0()
    weights = args.shared / "models" / "squeezenet1_0_imagenet.pt"
    model.load_state_dict(torch.load(weights, weights_only=True))
    features = spm.module_features(model.features[:2].eval(), args.size)
    result = spm.evaluate(
        features,
        args.shared / "data" / "caltech101",
        splits=args.splits,
        patch=args.patch,
        stride=args.stride,
    )
    print("per-split mean per-class accuracy:", [round(100 * a, 2) for a in result.accuracies])
    print(f"SqueezeNet conv1: {result.summary()}")
    print("seconds per stage:", {k: round(v, 1) for k, v in result.timings.items()})
    print(f"total {time.perf_counter() - start:.0f} s; settings {json.dumps(result.settings)}")


if __name__ == "__main__":
    main()
