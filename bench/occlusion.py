"""Benchmark: occlusion, vizkit (exact incremental, fast approximate, batched) vs captum Occlusion.

    python bench/occlusion.py [--model squeezenet|resnet18|alexnet] [--size 48] [--stride 8]
                              [--repeats 2] [--fidelity]

Same image, same square, stride and baseline (the dataset mean: zero after normalisation), same
run. captum is timed at several perturbations_per_eval and its best is the anchor; it computes
the target-class probability only, while vizkit's numbers include the feature-map activity and
top label too. The cost model (multiply-adds of convolutions and linear layers) gives the bound
of exact incremental inference: full-forward MACs / MACs its changed windows need per position;
the achieved speed-up over captum is printed against it. captum is also timed on a channels-last
copy of the model and image, to show how much of vizkit's speed is memory layout alone.

``--fidelity`` compares fast mode with exact over the first validation image of each of the ten
Imagenette classes plus the Pomeranian and car wheel samples (real SqueezeNet only): SSIM of the
probability and activity maps, max |delta p|, top-label agreement and the speed-up.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np
import torch
import torchvision.models as tvm

import vizkit
from common import POMERANIAN, SHARED, median_time, squeezenet
from vizkit_plugins.occlusion.analysis import explain_cost
from vizkit_plugins.occlusion.grid import OcclusionGrid
from vizkit_plugins.occlusion.maps import FAST_DRILL_DOWN, FAST_TAU, occlusion_maps

MODELS = {
    "squeezenet": (squeezenet, "features.12"),
    "resnet18": (lambda: tvm.resnet18().eval(), "layer4"),  # random weights: timing only
    "alexnet": (lambda: tvm.alexnet().eval(), "features.11"),
}


def time_vizkit(im, x, layer, grid, target, repeats, **options):
    costs: list[vizkit.engine.OcclusionCost] = []

    def once():
        costs.clear()
        return occlusion_maps(
            im, x, layer, torch.tensor([0]), torch.tensor([target]), grid, torch.zeros(3), costs=costs, **options
        )

    seconds, maps = median_time(once, repeats)
    return seconds, maps, list(costs)


def time_captum(model, x, grid, target, repeats) -> tuple[float, int]:
    from captum.attr import Occlusion

    probability = lambda inputs: model(inputs).softmax(1)
    best: tuple[float, int] | None = None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for per_eval in (8, 16, 32, 64):
            seconds, _ = median_time(
                lambda per_eval=per_eval: Occlusion(probability).attribute(
                    x,
                    sliding_window_shapes=(3, grid.size, grid.size),
                    strides=(3, grid.stride, grid.stride),
                    target=target,
                    baselines=0,
                    perturbations_per_eval=per_eval,
                ),
                repeats,
            )
            print(f"  captum Occlusion (perturbations_per_eval {per_eval:2d}) {seconds:7.2f} s", flush=True)
            if best is None or seconds < best[0]:
                best = (seconds, per_eval)
    assert best is not None
    return best


def speed(args) -> None:
    build, layer = MODELS[args.model]
    model = build()
    x = vizkit.load_images([args.image], vizkit.Preprocess())
    grid = OcclusionGrid(224, 224, args.size, args.stride)
    with torch.no_grad():
        target = int(model(x).argmax(1))
    print(
        f"{args.model} 224x224, layer {layer}, {args.size}px square, stride {args.stride}: {grid.count} positions, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    rows = []
    with vizkit.instrument(model) as im:
        for mode, batch in [("exact", 32), ("exact", 16), ("fast", 32), ("batched", 32)]:
            options = {"tau": FAST_TAU, "drill_down": FAST_DRILL_DOWN} if mode == "fast" else {}
            seconds, _, costs = time_vizkit(
                im, x, layer, grid, target, args.repeats, mode=mode, batch_size=batch, **options
            )
            rows.append((mode, batch, seconds, costs))
            print(f"  vizkit {mode:7s} (batch {batch})                {seconds:7.2f} s", flush=True)
    captum_seconds, per_eval = time_captum(model, x, grid, target, args.repeats)
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    captum_cl, per_eval_cl = time_captum(
        channels_last, x.contiguous(memory_format=torch.channels_last), grid, target, args.repeats
    )
    exact_seconds = min(s for mode, _, s, _ in rows if mode == "exact")
    fast_seconds = min(s for mode, _, s, _ in rows if mode == "fast")
    batched_seconds = min(s for mode, _, s, _ in rows if mode == "batched")
    cost = next(c for mode, _, _, c in rows if mode == "exact")[0]
    fast_cost = next(c for mode, _, _, c in rows if mode == "fast")[0]
    print(f"  cost model (exact): {explain_cost(cost)}")
    print(f"  cost model (fast):  {explain_cost(fast_cost)}")
    print(f"  captum best: perturbations_per_eval {per_eval}, {grid.count / captum_seconds:.1f} positions/s")
    print(
        f"  exact:   {captum_seconds / exact_seconds:5.2f}x captum, {batched_seconds / exact_seconds:5.2f}x vizkit batched;"
        f" bound {cost.bound:.2f}x -> {captum_seconds / exact_seconds / cost.bound:.0%} of the bound vs captum"
    )
    print(
        f"  fast:    {captum_seconds / fast_seconds:5.2f}x captum, {exact_seconds / fast_seconds:5.2f}x exact"
        f" (tau {FAST_TAU}, drill-down {FAST_DRILL_DOWN}, {fast_cost.positions} of {grid.count} positions evaluated)"
    )
    print(f"  batched: {captum_seconds / batched_seconds:5.2f}x captum")
    print(
        f"  captum on a channels-last copy: {captum_cl:.2f} s (perturbations_per_eval {per_eval_cl}):"
        f" exact {captum_cl / exact_seconds:.2f}x, fast {captum_cl / fast_seconds:.2f}x of it"
    )


def fidelity(args) -> None:
    model = squeezenet()
    val = SHARED / "data/imagenette/val"
    paths = [sorted((val / d).iterdir())[0] for d in sorted(p.name for p in val.iterdir())]
    paths += [POMERANIAN, SHARED / "data/imagenet-samples/n02974003_car_wheel.jpg"]
    grid = OcclusionGrid(224, 224, args.size, args.stride)
    print(f"fidelity of fast mode (tau {FAST_TAU}, drill-down {FAST_DRILL_DOWN}) on {len(paths)} images, squeezenet")
    ssim_p, ssim_a, max_dp, agree, ratios = [], [], [], [], []
    with vizkit.instrument(model) as im:
        for path in paths:
            x = vizkit.load_images([str(path)], vizkit.Preprocess())
            with torch.no_grad():
                im(x)
                target = int(im.output.argmax(1))
                channel = int(im.activation("features.12")[0].flatten(1).amax(1).argmax())
            runs = {}
            for mode in ("exact", "fast"):
                options = {"tau": FAST_TAU, "drill_down": FAST_DRILL_DOWN} if mode == "fast" else {}
                seconds, maps = median_time(
                    lambda options=options, mode=mode, x=x, channel=channel, target=target: occlusion_maps(
                        im,
                        x,
                        "features.12",
                        torch.tensor([channel]),
                        torch.tensor([target]),
                        grid,
                        torch.zeros(3),
                        mode=mode,
                        **options,
                    ),
                    1,
                )
                runs[mode] = (seconds, maps)
            (te, exact), (tf, fast) = runs["exact"], runs["fast"]
            ssim_p.append(vizkit.toolkit.ssim(fast["true_class_prob"][0], exact["true_class_prob"][0], data_range=1.0))
            ssim_a.append(vizkit.toolkit.ssim(fast["feature_activity"][0], exact["feature_activity"][0]))
            max_dp.append(float(np.abs(fast["true_class_prob"][0] - exact["true_class_prob"][0]).max()))
            agree.append(float((fast["top_label"][0] == exact["top_label"][0]).mean()))
            ratios.append(te / tf)
            print(
                f"  {path.name:28s} SSIM p {ssim_p[-1]:.3f}  activity {ssim_a[-1]:.3f}  max|dp| {max_dp[-1]:.3f}"
                f"  top-label agreement {agree[-1]:.3f}  {te / tf:.2f}x exact",
                flush=True,
            )
    print(
        f"  SSIM of p: mean {np.mean(ssim_p):.3f}, min {np.min(ssim_p):.3f}, median {np.median(ssim_p):.3f};"
        f" SSIM of activity: mean {np.mean(ssim_a):.3f}, min {np.min(ssim_a):.3f}"
    )
    print(
        f"  max|dp| over images {np.max(max_dp):.3f} (median {np.median(max_dp):.3f}); top-label agreement"
        f" mean {np.mean(agree):.3f}; speed-up over exact: mean {np.mean(ratios):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="squeezenet")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image", default=str(POMERANIAN))
    parser.add_argument("--fidelity", action="store_true", help="fast vs exact over 12 images instead of timing")
    args = parser.parse_args()
    fidelity(args) if args.fidelity else speed(args)


if __name__ == "__main__":
    main()
