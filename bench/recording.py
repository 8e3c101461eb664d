"""Benchmark: what recording costs against a plain forward, on today's convnets, same run.

    python bench/recording.py [--models squeezenet1_0,resnet50,efficientnet_b0,convnext_tiny]
                              [--batch 8] [--size 224] [--rounds 3]

For each torchvision model (random weights, eval mode, a fixed random batch), the variants run
interleaved, round after round, and the minimum over rounds is kept (the least disturbed run):

* ``plain``: ``model(x)`` under ``torch.no_grad()``;
* ``one layer``: ``vizkit.instrument(model, layers=[L], switches=False)`` forward, L the model's
  default layer (its last convolution);
* ``all layers``: ``vizkit.instrument(model)`` forward (every activation and every max-pool's
  switches: what it does by default);
* ``copying``: the same all-layer forward copying each output as it appears (before copy on
  write, :mod:`vizkit.engine.kept`), to show what keeping references saves;
* ``fwd+bwd``: a plain forward and a backward of one output unit's sum to the input only
  (``torch.autograd.grad``: no weight gradients, as in a projection);
* ``projection``: ``vizkit.project`` of one map of L (autograd path, deconvnet rule), which is a
  forward and a backward.

It prints each model's plain times and the ratios (recording / plain, projection / fwd+bwd), and
the memory an all-layer recording holds (activations and switches, in MB).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision

import vizkit

DEFAULT_MODELS = "squeezenet1_0,resnet50,efficientnet_b0,convnext_tiny"


def _time(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _recorded_megabytes(im: Any) -> float:
    """Bytes the last forward's recording holds: kept activations and forward records."""
    rec = im._rec  # benchmark only: what the recording holds, not part of any API
    tensors = list(rec.acts.values())
    for record in rec.records.values():
        tensors += [
            v for v in (vars(record).values() if hasattr(record, "__dict__") else ()) if isinstance(v, torch.Tensor)
        ]
    # layers holding the same tensor (a block and its last module) hold its storage once
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values()) / 2**20


def bench_model(name: str, batch: int, size: int, rounds: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(batch, 3, size, size)
    with vizkit.instrument(model) as probe, torch.no_grad():
        logits = probe(x)
        layer = vizkit.toolkit.default_layer(model, probe, logits.shape[1])
        channel = int(probe.activation(layer)[0].flatten(1).amax(1).argmax())

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        inp = x.clone().requires_grad_(True)
        torch.autograd.grad(model(inp)[:, 0].sum(), inp)  # to the input only, as a projection

    times: dict[str, list[float]] = {k: [] for k in ("plain", "one", "all", "copying", "fwdbwd", "projection")}
    memory = 0.0
    plain()  # warm-up: first-call allocations and kernel selection
    for _ in range(rounds):
        times["plain"].append(_time(plain))
        with vizkit.instrument(model, layers=[layer], switches=False) as im, torch.no_grad():
            times["one"].append(_time(lambda im=im: im(x)))
        with vizkit.instrument(model) as im, torch.no_grad():
            times["all"].append(_time(lambda im=im: im(x)))
            memory = _recorded_megabytes(im)
            with im._settings_changed(copy_kept=True):  # benchmark only: the copy-everything fallback
                times["copying"].append(_time(lambda im=im: im(x)))
        times["fwdbwd"].append(_time(forward_backward))
        with vizkit.instrument(model, layers=[layer]) as im:
            times["projection"].append(_time(lambda im=im: vizkit.project(im, x, layer, [channel])))
    best = {key: min(values) for key, values in times.items()}
    return {**best, "memory_mb": memory, "layer": layer}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        f"batch {args.batch} at {args.size} px, min of {args.rounds} interleaved rounds, {torch.get_num_threads()} threads"
    )
    print(
        f"{'model':<16} {'layer':<22} {'plain':>8} {'one layer':>10} {'all layers':>11} "
        f"{'copying':>8} {'fwd+bwd':>8} {'projection':>11} {'all-layer MB':>13}"
    )
    for name in args.models.split(","):
        try:
            r = bench_model(name, args.batch, args.size, args.rounds)
        except Exception as error:  # one model failing must not hide the others' numbers
            print(f"{name:<16} failed: {type(error).__name__}: {error}")
            continue
        print(
            f"{name:<16} {r['layer']!s:<22} {r['plain'] * 1000:6.0f}ms {r['one'] / r['plain']:9.2f}x "
            f"{r['all'] / r['plain']:10.2f}x {r['copying'] / r['plain']:7.2f}x {r['fwdbwd'] * 1000:6.0f}ms {r['projection'] / r['fwdbwd']:10.2f}x "
            f"{r['memory_mb']:12.0f}"
        )


if __name__ == "__main__":
    main()
