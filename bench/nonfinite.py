"""Benchmark: what refusing NaN/inf activations costs an instrumented forward.

    python bench/nonfinite.py [--batch-size 32] [--repeats 20] [--layer conv5]

The bundled zfnet-compact at its own input size (144 px), CPU. The same instrumented forward
(all layers recorded, switches on) followed by reading one layer's activation runs with
``check_finite=True`` and ``False``, interleaved, and the medians are compared; the cost of one
check (``isfinite().all()``) on the output and on the layer's activation is timed on its own, and
so is checking every layer on every forward (the design rejected for its cost).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import vizkit


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--layer", default="conv5")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = vizkit.load_model("zfnet-compact")
    size = vizkit.data.preprocess_for(model).crop
    x = torch.randn(args.batch_size, 3, size, size)
    runs: dict[bool, list[float]] = {True: [], False: []}
    with torch.no_grad():
        for check in (True, False):  # warm-up, untimed
            with vizkit.instrument(model, check_finite=check) as im:
                im(x)
        for _ in range(args.repeats):
            for check in (True, False):
                with vizkit.instrument(model, check_finite=check) as im:
                    started = time.perf_counter()
                    im(x)
                    im.activation(args.layer)
                    runs[check].append(time.perf_counter() - started)
        with vizkit.instrument(model) as im:
            output = im(x)
            activation = im.activation(args.layer)
            every = [im.activation(name) for name in im.layers]
        output_check = timed(lambda: bool(torch.isfinite(output).all()), args.repeats * 10)
        layer_check = timed(lambda: bool(torch.isfinite(activation).all()), args.repeats * 10)
        every_check = timed(lambda: all(bool(torch.isfinite(a).all()) for a in every), args.repeats)
    on, off = statistics.median(runs[True]), statistics.median(runs[False])
    report = {
        "batch_size": args.batch_size,
        "input": size,
        "forward_checked_ms": round(on * 1e3, 2),
        "forward_unchecked_ms": round(off * 1e3, 2),
        "checked_over_unchecked": round(on / off, 4),
        "output_check_us": round(output_check * 1e6, 1),
        f"{args.layer}_check_us": round(layer_check * 1e6, 1),
        "every_layer_check_ms": round(every_check * 1e3, 2),
        "every_layer_check_fraction_of_forward": round(every_check / off, 4),
    }
    print(f"forward + read {args.layer}: checked {on * 1e3:.1f} ms, unchecked {off * 1e3:.1f} ms, ratio {on / off:.4f}")
    print(
        f"one check: output {output_check * 1e6:.0f} us, {args.layer} {layer_check * 1e6:.0f} us; "
        f"every layer {every_check * 1e3:.1f} ms ({every_check / off:.1%} of a forward)"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
