"""Benchmark: the model-zoo matrix as the README's table.

    python bench/zoo.py [--models SPEC,...] [--batch 2] [--size 224] [--rounds 3] [--threads 1]

For every entry of the matrix in tests/test_model_zoo.py (the smallest torchvision model of each
classification family and timm's of the same families, random weights), one Markdown row:

* what works: each of the test's checks, run exactly as the test runs it (its own functions, at
  the test's small input): ``projection`` (explicit and autograd paths agree under every rule),
  ``occlusion`` (exact incremental equals batched), ``top9``, ``invariance``, ``attribution``
  (saliency and guided backprop); a failing check is named with its error;
* recording ratio: an all-layer recording (``vizkit.instrument(model)``: every activation and
  every max-pool's switches) over a plain ``torch.no_grad()`` forward, ``--batch`` images at
  ``--size`` px, the two interleaved round after round and the minimum of ``--rounds`` kept
  (bench/recording.py's method), timed in this process's CPU seconds on ``--threads`` 1: on a
  machine shared with other jobs, wall-clock times of one ResNet-18 forward spread over
  431-604 ms and their ratios fell below 1, while CPU times stayed within 107-116 ms
  (``--clock wall`` takes bench/recording.py's wall-clock timer instead);
* occlusion bound: the cost model of exact incremental occlusion
  (:class:`vizkit.engine.IncrementalOcclusion`) after evaluating every position of a 48 px square
  at stride 32 over a ``--size`` px image, tracking the default layer: full-forward multiply-adds
  over the multiply-adds each position's changed windows need, the speed-up over full forwards
  that incremental inference can reach at most (bench/occlusion.py explains one such cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from recording import _time  # bench/recording.py's wall-clock timer (--clock wall)

import vizkit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_model_zoo as zoo  # the matrix and its checks, from the test itself

OCCLUDER, STRIDE = 48, 32


def what_works(entry: Any) -> dict[str, str]:
    """Each check of the test on ``entry``: "yes", or "no (Error: message)" when it fails."""
    outcome = {}
    for check in zoo.CHECKS:
        try:
            zoo.CHECK_FUNCTIONS[check](entry)
            outcome[check] = "yes"
        except Exception as error:  # a failing check is a table cell, not the end of the run
            message = str(error).splitlines()[0][:80] if str(error) else ""
            outcome[check] = f"no ({type(error).__name__}: {message})" if message else f"no ({type(error).__name__})"
    return outcome


def _cpu_time(function: Callable[[], Any]) -> float:
    """CPU seconds this process spent in one call of ``function``."""
    start = time.process_time()
    function()
    return time.process_time() - start


def recording_ratio(
    model: torch.nn.Module, x: torch.Tensor, rounds: int, timer: Callable[[Callable[[], Any]], float] = _cpu_time
) -> tuple[float, float]:
    """Seconds of a plain no-grad forward and of an all-layer recording (the minimum over
    ``rounds`` interleaved rounds, after one warm-up of each), as ``timer`` measures a call."""
    plain, recorded = [], []
    with vizkit.instrument(model) as im, torch.no_grad():
        model(x), im(x)  # warm-up: first-call allocations and kernel selection
        for _ in range(rounds):
            plain.append(timer(lambda: model(x)))
            recorded.append(timer(lambda: im(x)))
    return min(plain), min(recorded)


def occlusion_bound(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, str, int]:
    """Exact incremental occlusion's cost-model bound over the whole grid, its layer and the
    number of positions."""
    size = x.shape[-1]
    corners = [(r, c) for r in range(0, size - OCCLUDER + 1, STRIDE) for c in range(0, size - OCCLUDER + 1, STRIDE)]
    with vizkit.instrument(model) as im, torch.no_grad():
        logits = im(x)
        layer = vizkit.toolkit.default_layer(model, im, logits.shape[1])
        engine = vizkit.engine.IncrementalOcclusion(im, x, layer)
        for start in range(0, len(corners), 16):
            engine.evaluate(corners[start : start + 16], OCCLUDER, torch.zeros(3))
    return engine.cost.bound, layer, len(corners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(entry.spec for entry in zoo.ZOO), help="specs of zoo entries")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="how the recording ratio is timed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    entries = {entry.spec: entry for entry in zoo.ZOO}
    wanted = [entries[spec if ":" in spec else f"torchvision:{spec}"] for spec in args.models.split(",")]
    print(
        f"checks at {zoo.ZOO[0].size} px (Inception v3: 75); recording: batch {args.batch} at {args.size} px, "
        f"min of {args.rounds} interleaved rounds, {args.clock} time; occlusion bound: {OCCLUDER} px square, stride {STRIDE}, "
        f"{args.size} px; {torch.get_num_threads()} thread(s); torch {torch.__version__}",
        flush=True,
    )
    print(f"| model | family | {' | '.join(zoo.CHECKS)} | recording ratio | occlusion bound (layer) |")
    print(f"| --- | --- | {' | '.join('---' for _ in zoo.CHECKS)} | --- | --- |", flush=True)
    for entry in wanted:
        started = time.perf_counter()
        works = what_works(entry)
        zoo.prepared.cache_clear()
        model = zoo.build(entry)
        size = max(args.size, entry.size)
        x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        try:
            plain, recorded = recording_ratio(model, x, args.rounds, _cpu_time if args.clock == "cpu" else _time)
            ratio = f"{recorded / plain:.2f}x (plain: {plain * 1000:.0f} ms {args.clock})"
        except Exception as error:
            ratio = f"failed ({type(error).__name__})"
        try:
            bound, layer, positions = occlusion_bound(model, x[:1])
            occlusion = f"{bound:.2f}x (`{layer}`, {positions} positions)"
        except Exception as error:
            occlusion = f"failed ({type(error).__name__})"
        cells = " | ".join(works[check] for check in zoo.CHECKS)
        print(f"| `{entry.name}` | {entry.family} | {cells} | {ratio} | {occlusion} |", flush=True)
        print(f"  ({entry.name}: {time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        del model


if __name__ == "__main__":
    main()
