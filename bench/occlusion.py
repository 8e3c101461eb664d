"""Benchmark: occlusion, vizkit (exact incremental, fast approximate, batched) vs captum Occlusion.

    python bench/occlusion.py [--model squeezenet|vgg16|resnet18|alexnet] [--size 48] [--stride 8]
                              [--repeats 2] [--per-eval 8,16,32,64] [--quick] [--captum-batches K]
    python bench/occlusion.py --fidelity [--geometries 16/4,48/8] [--drill-down 0.2,0.3] [--per-eval 32,64]

Same image, same square, stride and baseline (the dataset mean: zero after normalisation), same
run. captum is timed at each ``--per-eval`` (perturbations_per_eval) and its best is the anchor;
it computes the target-class probability only, while vizkit's numbers include the feature-map
activity and top label too. The cost model (multiply-adds of convolutions and linear layers)
gives the bound of exact incremental inference: full-forward MACs / MACs its changed windows
need per position; the achieved speed-up over captum is printed against it. captum is also timed
on a channels-last copy of the model and image, to show how much of vizkit's speed is memory
layout alone (``--quick``: exact at batch 32, fast and captum only, for slow models such as
VGG16 at 16/4; ``--captum-batches K`` extrapolates captum from K batches of its forwards
instead of running it whole, and says so). Only SqueezeNet has real (ImageNet) weights; vgg16,
resnet18 and alexnet are torchvision's architectures with random weights, which is fine for
timing (the work per position does not depend on the weights) but not for fidelity.

``--fidelity`` compares fast mode with exact, on the real SqueezeNet, over the first validation
image of each of the ten Imagenette classes plus the Pomeranian and car wheel samples, at each
of ``--geometries`` (size/stride): SSIM of the probability and activity maps (``data_range``:
the exact map's own range), max |delta p| relative to that range, top-label agreement, and the
speed-ups over exact (per image) and over captum (timed once per geometry, on the Pomeranian:
captum's work does not depend on the image), all in the same run, for each ``--drill-down``
fraction (exact computed once). Then a target that is not the top class: tennis ball on the
Pomeranian, whose probability rises under the occluder; its peak exact and fast, and what the
default ``--check 32`` sample reports for it.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.models as tvm

import vizkit
from common import POMERANIAN, SHARED, median_time, squeezenet
from vizkit.data import read_labels, resolve_target
from vizkit_plugins.occlusion.analysis import explain_cost, fidelity_entry
from vizkit_plugins.occlusion.grid import OcclusionGrid
from vizkit_plugins.occlusion.maps import FAST_DRILL_DOWN, FAST_TAU, drill_levels, occlusion_maps

MODELS = {
    "squeezenet": (squeezenet, "features.12"),
    "vgg16": (lambda: tvm.vgg16().eval(), "features.29"),  # random weights: timing only
    "resnet18": (lambda: tvm.resnet18().eval(), "layer4"),  # random weights: timing only
    "alexnet": (lambda: tvm.alexnet().eval(), "features.11"),  # random weights: timing only
}
FAST = {"tau": FAST_TAU, "drill_down": FAST_DRILL_DOWN}


def time_vizkit(im, x, layer, grid, target, repeats, channel=0, **options):
    """Median seconds of :func:`occlusion_maps` on one image, its maps and its cost records."""
    costs: list[vizkit.engine.OcclusionCost] = []

    def once():
        costs.clear()
        return occlusion_maps(
            im, x, layer, torch.tensor([channel]), torch.tensor([target]), grid, torch.zeros(3), costs=costs, **options
        )

    seconds, maps = median_time(once, repeats)
    return seconds, maps, list(costs)


def _fast_once(im, x, grid, target, channel, fraction):
    """Fast mode on SqueezeNet's features.12 at one drill-down fraction, timed once."""
    return time_vizkit(
        im, x, "features.12", grid, target, 1, channel=channel, mode="fast", tau=FAST_TAU, drill_down=fraction
    )


def time_captum(model, x, grid, target, repeats, per_evals) -> tuple[float, int]:
    """captum ``Occlusion`` of the target's probability: the best median seconds over ``per_evals``."""
    from captum.attr import Occlusion

    probability = lambda inputs: model(inputs).softmax(1)
    best: tuple[float, int] | None = None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for per_eval in per_evals:
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


def estimate_captum(model, x, grid, target, per_evals, batches) -> tuple[float, int]:
    """Seconds captum ``Occlusion`` would take, extrapolated from ``batches`` batches of its work
    (for models too slow to run it whole here): ``per_eval`` copies occluded as captum does
    (input * (1 - mask) + baseline * mask, baseline 0), forwarded and softmaxed, times the
    number of batches the grid needs. The best over ``per_evals``."""
    best: tuple[float, int] | None = None
    for per_eval in per_evals:
        corners = grid.corners()[: per_eval * batches]
        start = time.perf_counter()
        with torch.no_grad():
            for first in range(0, len(corners), per_eval):
                part = corners[first : first + per_eval]
                mask = torch.zeros(len(part), 1, *x.shape[-2:])
                for k, (y0, x0) in enumerate(part):
                    mask[k, :, y0 : y0 + grid.size, x0 : x0 + grid.size] = 1
                model(x * (1 - mask)).softmax(1)[:, target]
        seconds = (time.perf_counter() - start) * grid.count / len(corners)
        print(
            f"  captum-equivalent forwards (perturbations_per_eval {per_eval:2d}, {len(corners)} positions,"
            f" extrapolated) {seconds:7.2f} s",
            flush=True,
        )
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
    weights = "real ImageNet weights" if args.model == "squeezenet" else "random weights (timing only)"
    print(
        f"{args.model} ({weights}) 224x224, layer {layer}, {args.size}px square, stride {args.stride}: "
        f"{grid.rows}x{grid.cols} = {grid.count} positions, drill-down levels {drill_levels(grid)}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    runs = (
        [("exact", 32), ("fast", 32)] if args.quick else [("exact", 32), ("exact", 16), ("fast", 32), ("batched", 32)]
    )
    rows = []
    with vizkit.instrument(model) as im:
        for mode, batch in runs:
            options = FAST if mode == "fast" else {}
            seconds, _, costs = time_vizkit(
                im, x, layer, grid, target, args.repeats, mode=mode, batch_size=batch, **options
            )
            rows.append((mode, batch, seconds, costs))
            print(f"  vizkit {mode:7s} (batch {batch})                {seconds:7.2f} s", flush=True)
    if args.captum_batches:
        captum_seconds, per_eval = estimate_captum(model, x, grid, target, args.per_eval, args.captum_batches)
    else:
        captum_seconds, per_eval = time_captum(model, x, grid, target, args.repeats, args.per_eval)
    exact_seconds = min(s for mode, _, s, _ in rows if mode == "exact")
    fast_seconds = min(s for mode, _, s, _ in rows if mode == "fast")
    cost = next(c for mode, _, _, c in rows if mode == "exact")[0]
    fast_cost = next(c for mode, _, _, c in rows if mode == "fast")[0]
    print(f"  cost model (exact): {explain_cost(cost)}")
    print(f"  cost model (fast):  {explain_cost(fast_cost)}")
    print(f"  captum best: perturbations_per_eval {per_eval}, {grid.count / captum_seconds:.1f} positions/s")
    print(
        f"  exact:   {captum_seconds / exact_seconds:5.2f}x captum; bound {cost.bound:.2f}x ->"
        f" {captum_seconds / exact_seconds / cost.bound:.0%} of the bound vs captum"
    )
    print(
        f"  fast:    {captum_seconds / fast_seconds:5.2f}x captum, {exact_seconds / fast_seconds:5.2f}x exact"
        f" (tau {FAST_TAU}, drill-down {FAST_DRILL_DOWN}, {fast_cost.positions} of {grid.count} positions evaluated)"
    )
    if args.quick:
        return
    batched_seconds = min(s for mode, _, s, _ in rows if mode == "batched")
    print(
        f"  batched: {captum_seconds / batched_seconds:5.2f}x captum; exact {batched_seconds / exact_seconds:5.2f}x it"
    )
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    captum_cl, per_eval_cl = time_captum(
        channels_last, x.contiguous(memory_format=torch.channels_last), grid, target, args.repeats, args.per_eval
    )
    print(
        f"  captum on a channels-last copy: {captum_cl:.2f} s (perturbations_per_eval {per_eval_cl}):"
        f" exact {captum_cl / exact_seconds:.2f}x, fast {captum_cl / fast_seconds:.2f}x of it"
    )


def _fidelity_images() -> list[Path]:
    """The first validation image of each Imagenette class, the Pomeranian and the car wheel."""
    val = SHARED / "data/imagenette/val"
    paths = [sorted((val / d).iterdir())[0] for d in sorted(p.name for p in val.iterdir())]
    return [*paths, POMERANIAN, SHARED / "data/imagenet-samples/n02974003_car_wheel.jpg"]


def _compare(exact: dict, fast: dict, cells: np.ndarray | None = None) -> dict[str, float]:
    """:func:`fidelity_entry` of one image's fast maps against its exact ones (``cells``: all)."""
    if cells is None:
        cells = np.arange(exact["true_class_prob"][0].size)
    truth = {key: exact[key][0].reshape(-1)[cells] for key in exact}
    return fidelity_entry({key: fast[key][0] for key in fast}, truth, cells)


def _target_and_channel(im, x, target: int | None) -> tuple[int, int]:
    """``target`` (None: the image's top class) and the strongest map of features.12."""
    with torch.no_grad():
        im(x)
        channel = int(im.activation("features.12")[0].flatten(1).amax(1).argmax())
        return (int(im.output.argmax(1)) if target is None else target), channel


def fidelity(args) -> None:
    model = squeezenet()
    paths = _fidelity_images()
    pomeranian = vizkit.load_images([str(POMERANIAN)], vizkit.Preprocess())
    tennis_ball = resolve_target("tennis ball", read_labels(SHARED / "data/imagenet_classes.txt"), 1000)
    assert tennis_ball is not None
    for size, stride in args.geometries:
        grid = OcclusionGrid(224, 224, size, stride)
        print(
            f"fidelity of fast mode (tau {FAST_TAU}, drill-down {', '.join(map(str, args.drill_down))},"
            f" levels {drill_levels(grid)}) at {size}/{stride} ({grid.rows}x{grid.cols} positions) on"
            f" {len(paths)} images, squeezenet, torch threads {torch.get_num_threads()}",
            flush=True,
        )
        exact_times: list[float] = []
        runs: dict[float, list[tuple[dict, float, int]]] = {f: [] for f in args.drill_down}
        with vizkit.instrument(model) as im:
            for path in paths:
                x = vizkit.load_images([str(path)], vizkit.Preprocess())
                target, channel = _target_and_channel(im, x, None)
                te, exact, _ = time_vizkit(im, x, "features.12", grid, target, 1, channel=channel, mode="exact")
                exact_times.append(te)
                print(f"  {path.name:28s} exact {te:6.2f} s", flush=True)
                for fraction in args.drill_down:
                    tf, fast, costs = _fast_once(im, x, grid, target, channel, fraction)
                    entry = _compare(exact, fast)
                    runs[fraction].append((entry, tf, costs[0].positions))
                    print(
                        f"    drill-down {fraction:<5g} SSIM p {entry['ssim_probability']:.3f}  activity"
                        f" {entry['ssim_activity']:.3f}  max|dp|/range {entry['max_abs_delta_p_relative']:.3f}"
                        f" (range {entry['probability_range']:.3f})  top-label agreement"
                        f" {entry['top_label_agreement']:.3f}  fast {tf:6.2f} s  {te / tf:.2f}x exact"
                        f" ({costs[0].positions} positions)",
                        flush=True,
                    )
            top, _ = _target_and_channel(im, pomeranian, None)
        captum_seconds, per_eval = time_captum(model, pomeranian, grid, top, 1, args.per_eval)
        print(
            f"  seconds per image: exact mean {np.mean(exact_times):.2f}; captum {captum_seconds:.2f} (Pomeranian,"
            f" perturbations_per_eval {per_eval}); exact over captum {captum_seconds / np.mean(exact_times):.2f}x"
        )
        for fraction, results in runs.items():
            entries = [entry for entry, _, _ in results]
            fast_times = np.array([seconds for _, seconds, _ in results])
            ssim_p = [e["ssim_probability"] for e in entries]
            ssim_a = [e["ssim_activity"] for e in entries]
            relative = [e["max_abs_delta_p_relative"] for e in entries]
            ratios = np.array(exact_times) / fast_times
            evaluated = np.mean([positions for _, _, positions in results]) / grid.count
            print(
                f"  {size}/{stride} drill-down {fraction:g}: SSIM of p mean {np.mean(ssim_p):.3f}, min"
                f" {np.min(ssim_p):.3f}, median {np.median(ssim_p):.3f}; SSIM of activity mean {np.mean(ssim_a):.3f},"
                f" min {np.min(ssim_a):.3f}; max|dp|/range mean {np.mean(relative):.3f}, max {np.max(relative):.3f},"
                f" median {np.median(relative):.3f}; top-label agreement"
                f" {np.mean([e['top_label_agreement'] for e in entries]):.3f}; {evaluated:.1%} of the positions"
            )
            print(
                f"    fast mean {fast_times.mean():.2f} s: over exact mean {ratios.mean():.2f}x (min {ratios.min():.2f}x);"
                f" over captum {captum_seconds / fast_times.mean():.2f}x (slowest image"
                f" {captum_seconds / fast_times.max():.2f}x)",
                flush=True,
            )
        with vizkit.instrument(model) as im:
            target, channel = _target_and_channel(im, pomeranian, tennis_ball)
            te, exact, _ = time_vizkit(im, pomeranian, "features.12", grid, target, 1, channel=channel, mode="exact")
            for fraction in args.drill_down:
                tf, fast, _ = _fast_once(im, pomeranian, grid, target, channel, fraction)
                entry = _compare(exact, fast)
                sample = np.sort(np.random.default_rng(0).choice(grid.count, size=min(32, grid.count), replace=False))
                checked = _compare(exact, fast, sample)
                print(
                    f"  non-top target, tennis ball ({tennis_ball}) on the Pomeranian, drill-down {fraction:g}: peak p"
                    f" exact {exact['true_class_prob'].max():.4f}, fast {fast['true_class_prob'].max():.4f}; SSIM p"
                    f" {entry['ssim_probability']:.3f}, activity {entry['ssim_activity']:.3f}; max|dp|/range"
                    f" {entry['max_abs_delta_p_relative']:.3f} (range {entry['probability_range']:.4f});"
                    f" {te / tf:.2f}x exact; a --check 32 sample reports max|dp|/range"
                    f" {checked['max_abs_delta_p_relative']:.3f}, mean {checked['mean_abs_delta_p_relative']:.4f}",
                    flush=True,
                )


def _geometries(text: str) -> list[tuple[int, int]]:
    """``16/4,48/8`` -> [(16, 4), (48, 8)]: occluder size and stride pairs."""
    try:
        pairs = [tuple(int(n) for n in part.split("/")) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"geometries are size/stride pairs like 16/4,48/8, not {text!r}") from None
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise argparse.ArgumentTypeError(f"geometries are size/stride pairs like 16/4,48/8, not {text!r}")
    return [(p[0], p[1]) for p in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="squeezenet")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image", default=str(POMERANIAN))
    parser.add_argument(
        "--per-eval",
        type=lambda text: [int(n) for n in text.split(",")],
        default=None,
        help="captum perturbations_per_eval values to time (default 8,16,32,64; with --fidelity 32,64)",
    )
    parser.add_argument("--quick", action="store_true", help="exact (batch 32), fast and captum only")
    parser.add_argument(
        "--captum-batches",
        type=int,
        default=0,
        help="extrapolate captum from this many batches of its work instead of running it whole (slow models)",
    )
    parser.add_argument("--fidelity", action="store_true", help="fast vs exact over 12 images instead of timing")
    parser.add_argument("--geometries", type=_geometries, default=[(16, 4), (48, 8)], help="with --fidelity")
    parser.add_argument(
        "--drill-down",
        type=lambda text: [float(f) for f in text.split(",")],
        default=[FAST_DRILL_DOWN],
        help="with --fidelity: drill-down fractions to compare, exact computed once (default: the fast default)",
    )
    args = parser.parse_args()
    if args.per_eval is None:
        args.per_eval = [32, 64] if args.fidelity else [8, 16, 32, 64]
    fidelity(args) if args.fidelity else speed(args)


if __name__ == "__main__":
    main()
