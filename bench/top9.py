"""Benchmark: the top9 scan pass vs a plain no_grad forward over the same images, same run.

    python bench/top9.py [--images 1000] [--layer features.12] [--batch-size 32] [--repeats 2]
                         [--memory-sizes 1000,3925]

Real SqueezeNet and Imagenette val from ../shared (VIZKIT_SHARED). Both loops read the same
images through the same DataLoader settings; the scan ranks every feature map of the layer.
Timings alternate (plain, scan, plain, scan, ...) and the medians are compared. Peak memory is
measured in a fresh process per dataset size (ru_maxrss), so the sizes do not share a peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader

import vizkit
import vizkit_plugins.top9.scan as top9_scan
from common import SHARED, squeezenet
from vizkit.toolkit.distributed import ProcessGroup

VAL = SHARED / "data/imagenette/val"


def dataset(count: int) -> vizkit.data.ImageList:
    images = vizkit.data.image_list(VAL)
    images.paths = images.paths[:count]
    return images


def plain_forward(model: torch.nn.Module, data, batch_size: int, workers: int) -> float:
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    started = time.perf_counter()
    with torch.no_grad():
        for images, _ in loader:
            model(images)
    return time.perf_counter() - started


def vizkit_scan(
    model: torch.nn.Module, data, layer: str, batch_size: int, workers: int
) -> tuple[float, vizkit.toolkit.RunningTopK]:
    with vizkit.instrument(model, layers=[layer], switches=False) as im:
        with torch.no_grad():
            channels = list(range(im(data[0][0][None], until=layer).shape[1]))
        ctx = vizkit.RunContext(
            model=model,
            instrumented=im,
            preprocess=data.preprocess,
            device=torch.device("cpu"),
            data=data,
            batch_size=batch_size,
            analysis="top9",
        )
        started = time.perf_counter()
        state, _ = top9_scan.scan(
            ctx, layer, channels, 9, resume=False, checkpoint_every=0, workers=workers, group=ProcessGroup()
        )
        return time.perf_counter() - started, state


def child(count: int, layer: str, batch_size: int, workers: int) -> None:
    model = squeezenet()
    seconds, _ = vizkit_scan(model, dataset(count), layer, batch_size, workers)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": count, "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--layer", default="features.12")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-sizes", default="1000,3925")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.layer, args.batch_size, args.workers)
        return

    model = squeezenet()
    data = dataset(args.images)
    plain_forward(model, dataset(args.batch_size * 2), args.batch_size, 0)  # warm-up
    plain, scan = [], []
    for _ in range(args.repeats):
        plain.append(plain_forward(model, data, args.batch_size, args.workers))
        scan.append(vizkit_scan(model, data, args.layer, args.batch_size, args.workers)[0])
    p, s = statistics.median(plain), statistics.median(scan)
    print(
        f"squeezenet1_0, {len(data)} Imagenette val images, batch {args.batch_size}, {args.workers} loader workers, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  plain no_grad forward : {p:.2f} s ({len(data) / p:.1f} img/s)  runs {[round(t, 2) for t in plain]}")
    print(f"  vizkit top9 scan {args.layer}: {s:.2f} s ({len(data) / s:.1f} img/s)  runs {[round(t, 2) for t in scan]}")
    print(f"  scan / plain = {s / p:.3f}x")

    peaks = []
    for size in [int(v) for v in args.memory_sizes.split(",")]:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(size),
                "--layer",
                args.layer,
                "--batch-size",
                str(args.batch_size),
                "--workers",
                str(args.workers),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  peak RSS scanning {size} images: {peaks[-1]['peak_rss_mb']:.0f} MB ({peaks[-1]['seconds']:.1f} s)")
    if len(peaks) == 2:
        print(
            f"  peak memory ratio {peaks[1]['images']} / {peaks[0]['images']} images = "
            f"{peaks[1]['peak_rss_mb'] / peaks[0]['peak_rss_mb']:.3f}"
        )


if __name__ == "__main__":
    main()
