"""Benchmark: featvis's optimisation, units per minute at 512 steps on SqueezeNet 1.0
``features.7`` (issue 29), and the same objective in lucent, same run.

    python bench/featvis.py [--units 16] [--steps 512] [--size 128] [--threads N] [--device cpu]
                            [--lucent DIR] [--no-lucent]

The model is the real ImageNet SqueezeNet 1.0 of ../shared/models (VIZKIT_SHARED). Every unit's
channel mean is optimised from the same kind of start in both tools: Lucid's decorrelated
Fourier parametrisation of a 128 x 128 picture, Adam at lr 0.05, Lucid's standard transforms.

    vizkit   plugins/featvis optimize(): all --units in one batch (the analysis's chunks of
             --batch-size units), forward up to the layer only, redirected-ReLU gradients
    lucent   lucent.optvis.render.render_vis with param.image(size, batch=U) and the sum of
             objectives.channel("features_7", u, batch=i): all units in one batch as well, the
             whole model run each step (lucent's hooks read the layer), pictures resized to
             ``--size`` after the transforms (fixed_image_size; lucent's default upsamples to 224)

Both pictures are then scored by the same code (a plain forward hook on the bare model): the
unit's channel mean on its final, untransformed picture. Printed: seconds, units per minute, the
median activation reached, and the ratios lucent / vizkit of time and activation.

lucent (0.1.8, its last release, 2021) pins kornia <= 0.4.1, which pip will not put beside this
project's torch; it runs with it anyway when installed apart:

    pip install --target /tmp/lucent_pkgs --no-deps torch-lucent "kornia<=0.4.1" decorator ipython
    python bench/featvis.py --lucent /tmp/lucent_pkgs

Measured on this 2-core CPU (no GPU lent), see the issue note and the table below.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIZKIT_SHARED", REPO.parent / "shared"))
WEIGHTS = SHARED / "models" / "squeezenet1_0_imagenet.pt"
LAYER = "features.7"


def squeezenet(device: str) -> torch.nn.Module:
    import vizkit

    return vizkit.load_model("torchvision:squeezenet1_0", weights=str(WEIGHTS)).to(device).eval()


def channel_means(model: torch.nn.Module, pictures: torch.Tensor, units: list[int]) -> list[float]:
    """Each picture's unit's channel mean at features.7, by a plain hook (pictures in [0, 1])."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=pictures.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=pictures.device).view(1, 3, 1, 1)
    kept: dict[str, torch.Tensor] = {}
    handle = model.features[7].register_forward_hook(lambda m, a, out: kept.__setitem__("out", out))
    try:
        with torch.no_grad():
            model((pictures - mean) / std)
    finally:
        handle.remove()
    maps = kept["out"]
    return [float(maps[i, u].mean()) for i, u in enumerate(units)]


def run_vizkit(model: torch.nn.Module, units: list[int], steps: int, size: int) -> tuple[float, torch.Tensor]:
    sys.path.insert(0, str(REPO))
    from vizkit_plugins.featvis.optimize import optimize

    started = time.perf_counter()
    found = optimize(model, LAYER, units, steps=steps, size=size, param="fourier", transforms="standard")
    return time.perf_counter() - started, found.images


def run_lucent(
    model: torch.nn.Module, units: list[int], steps: int, size: int, device: str
) -> tuple[float, torch.Tensor]:
    from lucent.optvis import objectives, param, render

    objective = objectives.channel("features_7", units[0], batch=0)
    for index, unit in enumerate(units[1:], start=1):
        objective = objective + objectives.channel("features_7", unit, batch=index)

    def param_f():
        return param.image(size, batch=len(units), fft=True, decorrelate=True)  # on its own device choice

    started = time.perf_counter()
    images = render.render_vis(
        model,
        objective,
        param_f,
        thresholds=(steps,),
        show_image=False,
        progress=False,
        fixed_image_size=size,
    )
    seconds = time.perf_counter() - started
    pictures = torch.from_numpy(images[-1]).permute(0, 3, 1, 2).to(device)
    return seconds, pictures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=16, help="units 0..N-1 of features.7, optimised together")
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lucent", default=None, help="a folder holding lucent (pip install --target ...)")
    parser.add_argument("--no-lucent", action="store_true", help="time vizkit only")
    parser.add_argument("--save", default=None, help="write both tools' pictures, a row each, to this PNG")
    args = parser.parse_args()
    if not WEIGHTS.is_file():
        sys.exit(f"bench/featvis.py needs the SqueezeNet weights at {WEIGHTS} (set VIZKIT_SHARED)")
    if args.threads:
        torch.set_num_threads(args.threads)
    units = list(range(args.units))
    model = squeezenet(args.device)
    print(f"SqueezeNet 1.0 {LAYER}, {len(units)} units in one batch, {args.steps} steps, {args.size} px, "
          f"{args.device}, {torch.get_num_threads()} threads")  # fmt: skip
    seconds, pictures = run_vizkit(model, units, args.steps, args.size)
    reached = channel_means(model, pictures.to(args.device), units)
    rows = [("vizkit", seconds, reached)]
    strips = [pictures.cpu()]
    if not args.no_lucent:
        if args.lucent:
            sys.path.insert(0, args.lucent)
        try:
            import lucent  # noqa: F401
        except ImportError:
            print("lucent: not installed (see this file's docstring); vizkit only")
        else:
            seconds, pictures = run_lucent(model, units, args.steps, args.size, args.device)
            rows.append(("lucent", seconds, channel_means(model, pictures, units)))
            strips.append(pictures.cpu())
    if args.save:
        import torchvision

        grid = torch.cat(strips).clamp(0, 1)
        torchvision.utils.save_image(grid, args.save, nrow=len(units), padding=2, pad_value=1.0)
    print(f"{'tool':8} {'seconds':>8} {'units/min':>10} {'median act.':>12}")
    for name, seconds, values in rows:
        print(f"{name:8} {seconds:8.1f} {len(units) * 60 / seconds:10.2f} {statistics.median(values):12.1f}")
    if len(rows) == 2:
        (_, ours, mine), (_, theirs, their_values) = rows
        ratios = [t / m for t, m in zip(their_values, mine) if m > 0]
        print(f"lucent / vizkit: time {theirs / ours:.2f}x, activation reached (median over units) "
              f"{statistics.median(ratios):.2f}x; units where vizkit reaches more: "
              f"{sum(m > t for m, t in zip(mine, their_values))} of {len(units)}")  # fmt: skip


if __name__ == "__main__":
    main()
