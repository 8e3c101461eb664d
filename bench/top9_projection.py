"""Benchmark: top9's projection pass, ``vizkit.toolkit.project_winners`` on
``vizkit.engine.project_units`` vs its previous implementation, same winners, same run (issue 28,
item 3).

    python bench/top9_projection.py [--images 300] [--layer conv3] [--channels 192] [--k 9]
                                    [--batch-size 32] [--repeats 1] [--threads N]

zfnet-compact over the first ``--images`` paths (sorted) of Imagenette val from ../shared
(VIZKIT_SHARED); the winners are the top-k of every map (channels 0..N-1), as top9's scan finds
them. The previous implementation ("old") loaded each chunk of ``--batch-size`` winning images and
ran ``vizkit.project`` on it with every image padded to the chunk's most-requested image's number
of maps, at full image size, then cut each projection to its receptive box with crop_to_box. Each
measurement runs in a fresh process (old, new, old, new, ...), so every peak RSS is that path's
own: the process's (ru_maxrss) and the projection pass's (VmHWM, reset just before the pass, after
a small warm-up pass that does the lazy one-time initialisations). The minimum wall and CPU time of
each path is reported, per unit-exemplar projection, with the largest difference between the two
paths' projections (float16, scaled to max |value| 1).

Measured on the shared 2-core CPU, defaults (1,728 unit-exemplars of conv3 over the first 300
images: 255 winning, up to 34 per image), busy with other workers' jobs (load 3.6-5.8) and so
only roughly: fp16 projections within 4.9e-4 (one float16 step), scales within 1.0e-6 relative,
patches and positions equal, in every run:

    1 thread  (load 3.7)          old 38.71 ms, new  8.22 ms per projection (CPU time 35.50 vs 5.46 ms: 6.5x);
                                  peak RSS 1734 vs 1226 MB (the pass: +678 vs +215 MB)
    2 threads (load 3.6 -> 5.8)   old 89.21 ms, new 65.56 ms per projection (CPU time 60.58 vs 42.86 ms: 1.4x);
                                  peak RSS 1744 vs 1221 MB (the pass: +635 vs +203 MB)

With 2 threads on the loaded machine the many small operations of the new path spend their time
in OpenMP's spin-waiting (CPU time 42.9 ms a projection, 6.2 ms with OMP_WAIT_POLICY=PASSIVE,
5.5 ms with 1 thread). The new path's pass peak stays flat with the data: over 1,200 images (504
winning, 16 chunks) it was +194 MB, over 300 images +253 MB (the arrays returned are 63 MB of it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import vizkit
from common import SHARED
from vizkit.engine import project, receptive_boxes
from vizkit.toolkit import RunningTopK, crop_to_box, project_winners

VAL = SHARED / "data/imagenette/val"


def old_project_winners(im, dataset, preprocess, layer, channels, state, boxes, patch_size, batch_size=32):
    """project_winners as it was before project_units (rule deconvnet, CPU, no progress bar)."""
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
    for start in range(0, len(winners), batch_size):
        chunk = winners[start : start + batch_size]
        x = torch.stack([dataset[i][0] for i in chunk])
        requests = [by_image[i] for i in chunk]
        longest = max(len(r) for r in requests)
        padded = [r + [r[0]] * (longest - len(r)) for r in requests]  # repeats are computed, then dropped
        table = torch.tensor([[channels[m] for m, _ in r] for r in padded])
        flat = torch.stack([torch.stack([state.positions[m, j] for m, j in r]) for r in padded]).cpu()
        where = torch.stack([flat // width, flat % width], dim=-1)
        result = project(im, x, layer, table, position=where, chunk=len(chunk))
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
    return {
        "projections": projections,
        "projection_scale": scales,
        "patches": patches,
        "recomputed": recomputed,
        "position": position,
    }


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: the peak), in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so that it is the pass's own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(args: argparse.Namespace, path: str, save: str) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = vizkit.load_model("zfnet-compact")
    data = vizkit.data.image_list(VAL, vizkit.data.preprocess_for(model))
    data.paths = data.paths[: args.images]
    channels = list(range(args.channels))
    with vizkit.instrument(model) as im:
        state = RunningTopK.empty(len(channels), args.k)
        with torch.no_grad():
            for start in range(0, len(data), args.batch_size):
                indices = list(range(start, min(start + args.batch_size, len(data))))
                x = torch.stack([data[i][0] for i in indices])
                state.update(im.run_capturing(x, args.layer)[:, channels], torch.tensor(indices))
        boxes = receptive_boxes(im, x[:1], args.layer)
        run = old_project_winners if path == "old" else project_winners
        few = RunningTopK(state.values[:8], state.images[:8], state.positions[:8])  # 8 maps' winners
        run(im, data, data.preprocess, args.layer, channels[:8], few, boxes, args.patch_size)  # warm-up: lazy inits
        before, reset = status_mb("VmRSS"), reset_peak()
        started, cpu = time.perf_counter(), time.process_time()
        options = (im, data, data.preprocess, args.layer, channels, state, boxes, args.patch_size)
        arrays = run(*options, batch_size=args.batch_size)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    pass_peak = status_mb("VmHWM") if reset else float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_image = np.bincount(state.images[:, : state.filled()].flatten().numpy())
    np.savez(save, **arrays)
    print(
        json.dumps(
            {
                "path": path,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "projections": int(state.images.numel()),
                "winning_images": int((per_image > 0).sum()),
                "most_per_image": int(per_image.max()),
                "rss_before_mb": before,
                "pass_peak_rss_mb": pass_peak,
                "peak_rss_mb": peak,
                "threads": torch.get_num_threads(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--channels", type=int, default=192, help="maps 0..N-1 of the layer")
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args, args.child, args.save)
        return
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as folder:
        saved = {}
        for repeat in range(args.repeats):
            for path in ("old", "new"):
                saved[path] = str(Path(folder) / f"{path}.npz")
                command = [sys.executable, __file__, *sys.argv[1:], "--child", path, "--save", saved[path]]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                runs[path].append(json.loads(out.strip().splitlines()[-1]))
                print(f"run {repeat + 1} {path}: {runs[path][-1]}", flush=True)
        old, new = (dict(np.load(saved[p])) for p in ("old", "new"))
    first = runs["old"][0]
    count = first["projections"]
    print(
        f"{count} unit-exemplars of {args.layer} (maps 0-{args.channels - 1}, k={args.k}) over {args.images} images "
        f"({first['winning_images']} winning, up to {first['most_per_image']} per image); {first['threads']} torch threads"
    )
    best = {p: min(r["seconds"] for r in runs[p]) for p in runs}
    cpu = {p: min(r["cpu_seconds"] for r in runs[p]) for p in runs}
    peak = {p: max(r["peak_rss_mb"] for r in runs[p]) for p in runs}
    during = {p: max(r["pass_peak_rss_mb"] for r in runs[p]) for p in runs}
    base = {p: min(r["rss_before_mb"] for r in runs[p]) for p in runs}
    for p, name in (("old", "old (vizkit.project per padded image chunk)"), ("new", "new (project_units)")):
        print(
            f"{name:44s} {best[p] * 1e3 / count:6.2f} ms per projection ({best[p]:.1f} s; CPU time "
            f"{cpu[p] * 1e3 / count:.2f} ms); peak RSS of the "
            f"process {peak[p]:.0f} MB, of the pass {during[p]:.0f} MB ({during[p] - base[p]:+.0f} MB over the "
            f"{base[p]:.0f} MB before it)"
        )
    growth = {p: during[p] - base[p] for p in runs}
    print(
        f"speed-up {best['old'] / best['new']:.1f}x (CPU time {cpu['old'] / cpu['new']:.1f}x); peak RSS new / old: process {peak['new'] / peak['old']:.2f}, "
        f"pass {during['new'] / during['old']:.2f}, growth during the pass {growth['new'] / max(growth['old'], 1):.2f}"
    )
    scale = np.abs(new["projection_scale"] / old["projection_scale"] - 1).max()
    diff = np.abs(new["projections"].astype(np.float32) - old["projections"].astype(np.float32)).max()
    print(
        f"max |difference| of the fp16 projections (max |value| 1) {diff:.2e}, of their scales (relative) {scale:.2e}; "
        f"patches equal: {bool((new['patches'] == old['patches']).all())}, positions equal: "
        f"{bool((new['position'] == old['position']).all())}"
    )
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
