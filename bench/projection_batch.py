"""Benchmark: many unit-exemplar projections, ``vizkit.project`` as top9 ran it before vs
``vizkit.engine.project_units``, same requests, same run (issue 28, item 3).

    python bench/projection_batch.py [--images 300] [--layer conv3] [--k 9] [--repeats 2]
                                     [--batch-size 32] [--chunk 64] [--threads N]

zfnet-compact over Imagenette val from ../shared (VIZKIT_SHARED): the first ``images / 10``
images of each class. The requests are those top9 projects: for every map of the layer, its k
strongest images (one unit per image, the image's strongest; ties to the smaller index). The
baseline groups them by image and calls ``vizkit.project`` per chunk of ``--batch-size`` winning
images, padded to the chunk's most-requested image, as ``project_winners`` did before it used
``project_units`` (bench/top9_projection.py times project_winners itself, old vs new). The two
paths alternate (baseline, batched, baseline, ...) and the minimum of each is reported, with the
largest difference between the two projections of a unit relative to its peak.

Measured on the 2-core CPU, defaults (1,728 unit-exemplars of conv3 over 300 images, 237 of
them winning, up to 59 per image), max difference 6.9e-7 of a map's peak in every run:

    quiet (load 0.65 -> 1.69), 2 threads   baseline 26.46 ms, batched 3.14 ms per projection: 8.4x
    quiet (load 1.58 -> 1.05), 1 thread    baseline 44.02 ms, batched 4.14 ms per projection: 10.6x
    loaded by a CI run (load 2.9-3.7), 1 thread   baseline 50.24 ms, batched 4.12 ms: 12.2x
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import torch

import vizkit
from common import SHARED
from vizkit.engine import project_units

VAL = SHARED / "data/imagenette/val"


def load(count: int, model: torch.nn.Module) -> torch.Tensor:
    folders = sorted(p for p in VAL.iterdir() if p.is_dir())
    per_class = max(1, count // len(folders))
    paths = [path for folder in folders for path in sorted(folder.iterdir())[:per_class]][:count]
    return vizkit.load_images(paths, model)


def top_k_requests(im: vizkit.Instrumented, x: torch.Tensor, layer: str, k: int) -> torch.Tensor:
    """(image, channel, row, col) of each map's k strongest images, their strongest unit each."""
    with torch.no_grad():
        act = torch.cat([im(x[s : s + 64], until=layer) for s in range(0, len(x), 64)])  # [N, C, h, w]
    flat = act.flatten(2)
    best, where = flat.max(dim=2)  # [N, C]: each image's strongest unit per map
    order = torch.sort(best.T, dim=1, descending=True, stable=True).indices[:, :k]  # [C, k] images
    width = act.shape[-1]
    rows = []
    for channel in range(act.shape[1]):
        for image in order[channel].tolist():
            pos = int(where[image, channel])
            rows.append((image, channel, pos // width, pos % width))
    return torch.tensor(rows)


def baseline(im: vizkit.Instrumented, x: torch.Tensor, layer: str, requests: torch.Tensor, batch_size: int):
    """vizkit.project per chunk of winning images, padded to the chunk's most-requested image
    (vizkit.toolkit.project_winners before project_units); returns each request's [3, H, W] projection."""
    by_image: dict[int, list[int]] = defaultdict(list)
    for r, image in enumerate(requests[:, 0].tolist()):
        by_image[image].append(r)
    out: list[torch.Tensor | None] = [None] * len(requests)
    winners = sorted(by_image)
    for start in range(0, len(winners), batch_size):
        chunk = winners[start : start + batch_size]
        lists = [by_image[i] for i in chunk]
        longest = max(len(r) for r in lists)
        padded = [r + [r[0]] * (longest - len(r)) for r in lists]
        table = torch.tensor([[int(requests[r, 1]) for r in row] for row in padded])
        where = torch.tensor([[requests[r, 2:].tolist() for r in row] for row in padded])
        result = vizkit.project(im, x[chunk], layer, table, position=where, chunk=len(chunk))
        for b, row in enumerate(lists):
            for slot, r in enumerate(row):
                out[r] = result.images[b, slot]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = vizkit.load_model("zfnet-compact")
    x = load(args.images, model)
    load_before = os.getloadavg()
    with vizkit.instrument(model) as im:
        requests = top_k_requests(im, x, args.layer, args.k)
        count = len(requests)
        per_image = torch.bincount(requests[:, 0])
        print(
            f"{count} unit-exemplars of {args.layer} over {len(x)} images ({int((per_image > 0).sum())} winning, "
            f"up to {int(per_image.max())} per image); {torch.get_num_threads()} torch threads"
        )
        times: dict[str, list[float]] = {"baseline": [], "batched": []}
        ref, mine = None, None
        for _ in range(args.repeats):
            start = time.perf_counter()
            ref = baseline(im, x, args.layer, requests, args.batch_size)
            times["baseline"].append(time.perf_counter() - start)
            start = time.perf_counter()
            mine = project_units(im, x, args.layer, requests, chunk=args.chunk)
            times["batched"].append(time.perf_counter() - start)
        assert ref is not None and mine is not None
        worst = 0.0
        for r in range(count):
            full = ref[r]
            assert full is not None
            peak = float(full.abs().max())
            if peak > 0:
                worst = max(worst, float((mine.image(r) - full).abs().max()) / peak)
            elif float(mine.crops[r].abs().max()) != 0:
                worst = float("inf")
    base, fast = min(times["baseline"]), min(times["batched"])
    print(f"baseline (vizkit.project per image chunk): {base * 1e3 / count:.2f} ms per projection ({base:.1f} s)")
    print(f"batched (project_units):                   {fast * 1e3 / count:.2f} ms per projection ({fast:.1f} s)")
    print(f"speed-up {base / fast:.1f}x; max |difference| / map peak {worst:.2e}")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
