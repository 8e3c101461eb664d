"""Benchmark: occlusion on SqueezeNet at 224x224, vizkit (exact, batched) vs captum Occlusion.

    python bench/occlusion.py [--size 48] [--stride 8] [--repeats 2]

Same image, same square, stride and baseline (the dataset mean: zero after normalisation), same
run. captum is timed at several perturbations_per_eval and its best is the anchor; it computes
the target-class probability only, while vizkit's numbers include the feature-map activity and
top label too. Prints positions per second and the ratios, and checks the probability maps agree.
"""

from __future__ import annotations

import argparse
import warnings

import torch

import vizkit
from common import POMERANIAN, median_time, squeezenet
from vizkit_plugins.occlusion import OcclusionGrid, occlusion_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image", default=str(POMERANIAN))
    args = parser.parse_args()
    from captum.attr import Occlusion

    model = squeezenet()
    x = vizkit.load_images([args.image], vizkit.Preprocess())
    grid = OcclusionGrid(224, 224, args.size, args.stride)
    target = 259
    rows = []
    with vizkit.instrument(model) as im:
        for mode, batch in [("exact", 32), ("exact", 16), ("batched", 32), ("batched", 16)]:
            seconds, maps = median_time(
                lambda mode=mode, batch=batch: occlusion_maps(
                    im,
                    x,
                    "features.12",
                    torch.tensor([0]),
                    torch.tensor([target]),
                    grid,
                    torch.zeros(3),
                    mode=mode,
                    batch_size=batch,
                ),
                args.repeats,
            )
            rows.append((f"vizkit {mode} (batch {batch})", seconds))
            if mode == "exact" and batch == 32:
                exact_prob = maps["true_class_prob"][0]
    probability = lambda inputs: model(inputs).softmax(1)
    best = None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for per_eval in (8, 16, 32, 64):
            seconds, _ = median_time(
                lambda per_eval=per_eval: Occlusion(probability).attribute(
                    x,
                    sliding_window_shapes=(3, args.size, args.size),
                    strides=(3, args.stride, args.stride),
                    target=target,
                    baselines=0,
                    perturbations_per_eval=per_eval,
                ),
                args.repeats,
            )
            rows.append((f"captum Occlusion (perturbations_per_eval {per_eval})", seconds))
            best = min(best or seconds, seconds)
        # agreement: captum's attribution of the top-left pixel is p0 - p(first window) when only it covers it
        p0 = float(probability(x)[0, target])
        first = (
            Occlusion(probability)
            .attribute(
                x,
                sliding_window_shapes=(3, args.size, args.size),
                strides=(3, args.stride, args.stride),
                target=target,
                baselines=0,
                perturbations_per_eval=32,
            )[0, 0, 0, 0]
            .item()
        )
    print(
        f"squeezenet1_0 224x224, {args.size}px square, stride {args.stride}: {grid.count} positions, "
        f"torch threads {torch.get_num_threads()}"
    )
    for name, seconds in rows:
        print(f"  {name:46s} {seconds:7.2f} s  {grid.count / seconds:7.1f} positions/s")
    exact = min(seconds for name, seconds in rows if "exact" in name)
    batched = min(seconds for name, seconds in rows if "batched" in name)
    print(f"  captum best / vizkit exact best   = {best / exact:.2f}x")
    print(f"  captum best / vizkit batched best = {best / batched:.2f}x")
    print(
        f"  top-left pixel: captum attribution {first:.6f}, vizkit p0 - p(window 0) {p0 - float(exact_prob[0, 0]):.6f}"
    )


if __name__ == "__main__":
    main()
