"""Benchmark: faithfulness curves, vizkit (batched) vs Quantus 0.6, same model, images, maps and
settings, same run.

    python bench/faithfulness.py [--images 2] [--patch 16] [--percentages 10,30,50,70,90] [--repeats 3]

Uses the real ImageNet SqueezeNet and real images from ../shared (VIZKIT_SHARED); the maps are
the gradient saliency of each image's top-1 class (|gradient| summed over channels). Curves:

- deletion by squares (``--patch`` px, one square per step, most relevant first) against
  ``quantus.RegionPerturbation`` (which reports P(clean) - P(after each step));
- ROAD, most relevant first, at ``--percentages`` with noise from the same seed, against
  ``quantus.ROAD``. Quantus 0.6's ROAD only runs on one-channel images (it indexes the map
  broadcast over the channels as pixels), so both sides get the images in grey and the model
  repeats the grey channel three times before SqueezeNet. Quantus reports top-1 accuracy; the
  images it fed the model are recorded to compare P(target) too.

Quantus runs one forward per step over the images and builds each ROAD system entry by entry;
vizkit sends every perturbed image of the curve through the model in batches of
``--batch-size`` and assembles the ROAD systems with array operations. Both run ``--repeats``
times, interleaved (vizkit, Quantus, vizkit, ...), so that the machine's load weighs on both
alike; each side's model is wrapped to count its forwards and the images through them and to time
them. Prints each side's minimum seconds, its forwards and their share of its time, the ratio,
the **Amdahl bound** (Quantus's time over vizkit's forwards alone: both send the same images
through the same model, so vizkit can be no faster than that even were everything else free; and
the same over Quantus's forwards, the bound were vizkit's batched forwards no cheaper per image
than Quantus's small ones, as on a quiet CPU), and the largest difference of the curves.

Measured on the shared 2-core CPU, torch threads 2, no GPU, the machine busy (load 5-7: another
engineer's work), ``--images 2``, defaults otherwise, min of interleaved repeats:

    deletion 196 steps (2 repeats): vizkit 41.6 s, 7 forwards (batches of 64) of 394 images, forwards 96%;
        Quantus 155.8 s, 197 forwards (batches of 2) of 394 images, forwards 99%;
        ratio 3.74x, Amdahl bound 3.90x (1.01x at Quantus's forward cost); max diff 1.5e-06
    ROAD 5 percentages (3 repeats): vizkit 3.72 s, 1 forward of 10 images, forwards 43%;
        Quantus 11.3 s, 5 forwards of 10 images, forwards 42%;
        ratio 3.04x, Amdahl bound 7.08x (2.40x at Quantus's forward cost); max diff 9.6e-06

Deletion cannot reach 5x over Quantus on a CPU: Quantus spends 99% of its time in the same 394
forwards, so the ratio is at most what batching saves per image (3.9x busy, about 1x quiet: a
batch of 64 then costs about what 32 batches of 2 do). ROAD's remaining cost is SuperLU's
factorisation of the imputation systems (about 2/3 of what is not the forward); what the earlier
runs below measured before the forwards were counted:

Earlier, one repeat each, torch 2.14, 2 threads (the machine's load changed from run to run, and
the ratio with it):

    machine quiet, --images 2   deletion 196 steps: vizkit 8.6 s,  Quantus 8.0 s,   0.93x, max diff 1.6e-06
                                ROAD 5 percentages: vizkit 1.4 s,  Quantus 3.4 s,   2.42x, max diff 1.3e-06
    machine busy,  --images 2   deletion 196 steps: vizkit 68.9 s, Quantus 196.0 s, 2.84x, max diff 1.6e-06
                                ROAD 5 percentages: vizkit 6.7 s,  Quantus 18.2 s,  2.70x, max diff 1.3e-06
    machine busy,  --images 1   deletion 196 steps: vizkit 25.6 s, Quantus 153.8 s, 6.00x, max diff 6.3e-07
                                ROAD 5 percentages: vizkit 3.7 s,  Quantus 9.5 s,   2.57x, max diff 1.1e-06

On a quiet CPU the forwards are the cost and a batch of 64 costs about what 32 batches of 2 do:
the deletion curve is no faster than Quantus's there (the gains on the busy machine came from
Quantus's many small forwards suffering more from the load). ROAD is 2.4-2.7x faster: Quantus
builds each system entry by entry, and vizkit's nested-dissection order halves the sparse
factorisation both pay. Batching is what a GPU needs (one forward of a batch of 64 instead of
196 small ones, each with a copy to and from the device), and the 5x the issue asks for is
expected there; not measured here.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import vizkit
from common import SHARED, squeezenet
from vizkit_plugins.attribution import faithfulness as fm

IMAGES = ["n02112018_Pomeranian.jpg", "n01440764_tench.jpg", "n01514859_hen.jpg", "n01443537_goldfish.jpg"]


class Grey(nn.Module):
    """SqueezeNet on one-channel images: the grey channel repeated as R, G and B."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([x, x, x], dim=1))  # keeps the input's memory format


class Recorder(nn.Module):
    """The model, keeping every batch Quantus gives it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []  # type: ignore[var-annotated]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def saliency(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """|d logit(top-1) / d x| summed over channels, [N, H, W], and the top-1 classes."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    targets = logits.argmax(1)
    logits[torch.arange(len(x)), targets].sum().backward()
    assert x.grad is not None
    return x.grad.abs().sum(1).numpy().astype(np.float64), targets.detach()


def quantus_call(metric, model, x, targets, maps, device: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(
            model=model,
            x_batch=x.cpu().numpy(),
            y_batch=targets.cpu().numpy(),
            a_batch=maps[:, None].astype(np.float32),
            device=device,
            softmax=True,
        )


class Timed(nn.Module):
    """The model, counting its forwards, the images through them and their wall-clock seconds."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forwards, self.images, self.seconds = 0, 0, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - start
        self.forwards, self.images = self.forwards + 1, self.images + x.shape[0]
        return out


@dataclass
class Side:
    """One side's runs: total and model-forward seconds of each repeat, forwards and images."""

    name: str
    totals: list[float] = field(default_factory=list)
    forward_seconds: list[float] = field(default_factory=list)
    forwards: int = 0
    images: int = 0
    value: Any = None

    def run(self, function: Callable[[Timed], Any], model: nn.Module) -> None:
        timed = Timed(model).eval()
        start = time.perf_counter()
        self.value = function(timed)
        self.totals.append(time.perf_counter() - start)
        self.forward_seconds.append(timed.seconds)
        self.forwards, self.images = timed.forwards, timed.images

    def line(self) -> str:
        total, forward = min(self.totals), min(self.forward_seconds)
        return (
            f"  {self.name:<8}: {total:.3f} s (min of {len(self.totals)}), {self.forwards} forwards of "
            f"{self.images} images in all, forwards {forward:.3f} s = {100 * forward / total:.0f}% of its time"
        )


def compare(args: argparse.Namespace, model: nn.Module, ours: Callable[[Timed], Any], theirs: Callable[[Timed], Any]):
    """Both sides ``--repeats`` times, interleaved (vizkit, Quantus, vizkit, ...): the machine's
    load then weighs on both alike; prints each side's minimum, the ratio and the Amdahl bound."""
    vizkit_side, quantus_side = Side("vizkit"), Side("quantus")
    for _ in range(args.repeats):
        with torch.no_grad():
            vizkit_side.run(ours, model)
        quantus_side.run(theirs, model)
    print(vizkit_side.line())
    print(quantus_side.line())
    t_ours, t_theirs = min(vizkit_side.totals), min(quantus_side.totals)
    ours_forward, theirs_forward = min(vizkit_side.forward_seconds), min(quantus_side.forward_seconds)
    # Amdahl: vizkit sends the same images through the same model; were everything else free,
    # its time would be its forwards' alone
    print(
        f"  ratio quantus / vizkit = {t_theirs / t_ours:.2f}x; Amdahl bound {t_theirs / ours_forward:.2f}x "
        f"(Quantus's time over vizkit's forwards alone: the same images go through the same model, so "
        f"were all else free); {t_theirs / theirs_forward:.2f}x were vizkit's forwards as dear as Quantus's"
    )
    return vizkit_side.value, quantus_side.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--percentages", default="10,30,50,70,90")
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-road", action="store_true")
    parser.add_argument("--skip-deletion", action="store_true")
    args = parser.parse_args()
    import quantus
    import scipy.sparse.linalg  # noqa: F401 (imported by quantus: not timed on either side)

    device = torch.device(args.device)
    model = squeezenet().to(device)
    paths = [SHARED / "data/imagenet-samples" / name for name in IMAGES[: args.images]]
    x = vizkit.load_images(paths, vizkit.Preprocess()).to(device)
    maps, targets = saliency(model, x)
    n, _, height, width = x.shape
    print(f"squeezenet1_0, {n} images {height}x{width}, device {device}, torch threads {torch.get_num_threads()}")

    if not args.skip_deletion:
        bench_deletion(args, quantus, model, x, maps, targets)
    if not args.skip_road:
        bench_road(args, quantus, model, x, maps, targets)


def bench_deletion(args: argparse.Namespace, quantus, model: nn.Module, x, maps: np.ndarray, targets) -> None:
    """Deletion by squares, one square a step, against quantus.RegionPerturbation."""
    height, width = x.shape[-2:]
    regions = (height // args.patch) * (width // args.patch)
    region = quantus.RegionPerturbation(
        patch_size=args.patch,
        order="morf",
        regions_evaluation=regions,
        abs=True,
        normalise=False,
        perturb_baseline=0.0,
        disable_warnings=True,
    )
    settings = fm.FaithfulnessSettings(steps=regions, patch=args.patch, baseline=0.0, batch_size=args.batch_size)
    print(
        f"deletion, {args.patch} px squares, {regions} steps, batch size {args.batch_size} (quantus.RegionPerturbation)"
    )
    ours, theirs = compare(
        args,
        model,
        lambda timed: fm.deletion(timed, x, maps, targets, settings),
        lambda timed: quantus_call(region, timed, x, targets, maps, args.device),
    )
    difference = float(np.abs((ours[:, :1] - ours[:, 1:]) - np.array(theirs)).max())
    print(f"  max |difference| of the curves {difference:.1e}")


def bench_road(args: argparse.Namespace, quantus, model: nn.Module, x, maps: np.ndarray, targets) -> None:
    """ROAD, most relevant first, on the images in grey, against quantus.ROAD."""
    n, device = x.shape[0], x.device
    grey_model = Grey(model).eval()
    grey = x.mean(1, keepdim=True)
    percentages = [float(p) for p in args.percentages.split(",")]
    orders = np.stack([fm.pixel_order(m, np.random.default_rng(0)) for m in maps])
    road = quantus.ROAD(percentages=percentages, noise=args.noise, abs=True, normalise=False, disable_warnings=True)

    def ours_road(timed: Timed):
        return fm.road_curves(timed, grey, np.arange(n), orders, targets, percentages, args.noise, 5, args.batch_size)

    def theirs_road(timed: Timed):
        recorder = Recorder(timed).eval()
        np.random.seed(5)
        accuracy = quantus_call(road, recorder, grey, targets, maps, args.device)
        return accuracy, recorder.inputs

    print(f"ROAD, most relevant first, {len(percentages)} percentages, noise {args.noise} (quantus.ROAD, grey images)")
    (probability, correct), (accuracy, fed) = compare(args, grey_model, ours_road, theirs_road)
    with torch.no_grad():
        fed_t = torch.stack(fed[-len(percentages) :], dim=1).flatten(0, 1).to(device)
        theirs_p = grey_model(fed_t).softmax(1).reshape(n, len(percentages), -1)
    theirs_p = theirs_p[torch.arange(n), :, targets.to(device)].cpu().numpy()
    difference = float(np.abs(probability - theirs_p).max())
    accuracy_difference = float(np.abs(correct.mean(0) - np.array([accuracy[p] for p in percentages])).max())
    print(f"  max |difference| of P(target) {difference:.1e}, of the accuracy {accuracy_difference:.1e}")


if __name__ == "__main__":
    main()
