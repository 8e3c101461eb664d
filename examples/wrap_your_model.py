"""Wrap your own PyTorch model with vizkit, then run two analyses on it from Python.

The model below is deliberately not an ``nn.Sequential``: its ``forward`` adds a residual
connection and calls ``F.max_pool2d`` / ``F.relu`` directly. vizkit still sees every module
call and every functional pool / ReLU (functional calls become layers named
``<module>.<op>``, e.g. ``max_pool2d`` for a call made by the model's own ``forward``).

What it shows, in order:

1. give the model its own preprocessing (``model.vizkit_info``, a ``vizkit.models.ModelInfo``), so that
   ``vizkit.load_images(paths, model)`` and ``vizkit.run`` feed it at its size by default;
2. ``vizkit.instrument``: the recorded layers, the pooling switches, and one deconvnet
   projection computed by both paths (autograd and explicit), which agree;
3. ``vizkit.run("deconvnet", ...)`` and ``vizkit.run("occlusion", ...)``, each saved as a result
   folder (``result.json``, ``arrays.npz``, PNG figures); ``vizkit report OUT`` shows both.

The weights are random (seeded): the point is the mechanics. To see real features, load yours
with ``model.load_state_dict(torch.load("mine.pt", weights_only=True))`` before step 1.

Run it (a few seconds on a CPU):

    python examples/wrap_your_model.py [--image photo.jpg ...] [--out wrap-your-model-out] [--crop 112]

The ``build()`` factory makes the same model usable from the command line:

    vizkit layers examples/wrap_your_model.py:build
    vizkit run deconvnet --model examples/wrap_your_model.py:build --image photo.jpg --layer head
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import matplotlib.cbook
import torch
import torch.nn.functional as F
from torch import nn

import vizkit

# a photograph that ships with matplotlib, so the example needs no download
SAMPLE_IMAGE = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection: relu(x + conv2(relu(conv1(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))  # residual add, functional ReLUs


class TinyResNet(nn.Module):
    """A small classifier: stem conv, functional max-pool, a residual block, a second pool, fc.

    Any input size works (the last pool is adaptive); ``vizkit_default_layer`` tells analyses
    such as ``occlusion`` which layer to track when none is given.
    """

    vizkit_default_layer = "head"

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 5, stride=2, padding=2)
        self.res = ResidualBlock(width)
        self.head = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), kernel_size=3, stride=2, padding=1)  # 112 -> 28
        x = self.res(x)
        x = F.max_pool2d(F.relu(self.head(x)), kernel_size=2)  # 28 -> 14
        x = F.adaptive_avg_pool2d(x, 7)
        return self.fc(torch.flatten(x, 1))


def build() -> nn.Module:
    """The factory behind the spec ``examples/wrap_your_model.py:build``: random weights (seeded)
    and the model's own preprocessing, 112x112 crops of images resized to 128, which
    ``vizkit.load_model`` keeps, so ``vizkit layers`` / ``vizkit run`` feed it 112x112 too."""
    with torch.random.fork_rng(devices=[]):  # seeded, and the caller's global generator is left alone
        torch.manual_seed(0)
        model = TinyResNet()
    model.vizkit_info = vizkit.models.ModelInfo(preprocess=vizkit.Preprocess(resize=128, crop=112))
    return model


def inspect_and_project(model: nn.Module, x: torch.Tensor) -> None:
    """Print the recorded layers and compare the two deconvnet projection paths on ``x``."""
    with vizkit.instrument(model) as im:  # every hook is removed when the block ends
        logits = im(x)
        print(f"output: {tuple(logits.shape)}")
        print("layers (name, type, output shape):")
        for info in im.layer_infos():
            shape = "x".join(str(d) for d in info.shape[1:]) if info.shape else "-"
            print(f"  {info.name:<20} {info.type:<22} {shape}")
        print("pools with switches:", ", ".join(im.pools))

        layer = "head"  # above the residual block: the projection splits at the add
        channel = int(im.activation(layer)[0].flatten(1).amax(1).argmax())  # the map that fires most
        strongest = im.activation(layer)[0, channel].max().item()
        print(f"projecting channel {channel} of {layer}, the strongest map (activation {strongest:.4f})")
        via_autograd = im.project(layer, channel=channel, method="autograd")  # [1, 3, H, W]
        via_explicit = im.project(layer, channel=channel, method="explicit")

    difference = (via_autograd - via_explicit).norm() / via_autograd.norm().clamp_min(1e-12)
    touched = (via_autograd.abs().sum(dim=1) > 0).sum().item()
    shown = vizkit.to_image(via_autograd)  # [H, W, 3] in [0, 1]: plt.imshow(shown) displays it
    print(
        f"projection shape {tuple(via_autograd.shape)}, {touched} non-zero pixels; "
        f"relative difference autograd vs explicit: {difference.item():.2e}; to_image -> {tuple(shown.shape)}"
    )


def main(argv: list[str] | None = None) -> None:
    """Wrap the model, inspect it, run deconvnet and occlusion and save both results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", action="append", type=Path, help="an image (repeatable; default: a sample photo)")
    parser.add_argument("--out", type=Path, default=Path("wrap-your-model-out"), help="folder for the results")
    parser.add_argument("--crop", type=int, help="another input size for the model (default: its own, 112)")
    args = parser.parse_args(argv)
    images = args.image or [SAMPLE_IMAGE]

    model = build().eval()
    print("weights are random (seeded): the figures show the mechanics, not learnt features")
    # 1. the model's own preprocessing (build() set 112x112): load_images(paths, model) and
    #    vizkit.run use it by default; vizkit.data.preprocess_for(model) reads it
    if args.crop:
        preprocess = vizkit.Preprocess(resize=args.crop * 8 // 7, crop=args.crop)
        model.vizkit_info = replace(vizkit.models.model_info(model), preprocess=preprocess)
    print(f"preprocessing: {vizkit.data.preprocess_for(model)}")
    x = vizkit.load_images(images, model)
    print(f"input batch {tuple(x.shape)} from {', '.join(p.name for p in images)}")

    # 2. instrument: layers, switches, projections
    inspect_and_project(model, x[:1])

    # 3. two analyses, each a Result saved as a folder (rerunning the example replaces them)
    deconv = vizkit.run("deconvnet", model, images=images, layer="head", top=4)
    print(f"deconvnet: maps {deconv['channels']} of {deconv['layer']}, activations {deconv['activations']}")
    occlusion = vizkit.run("occlusion", model, images=images[:1], size=24, stride=8)
    print(
        f"occlusion: tracked map {occlusion['strongest_map'][0]} of {TinyResNet.vizkit_default_layer}, target "
        f"{occlusion['target_name'][0]} (the model's top-1), {occlusion['positions']} occluder positions"
    )
    for name, result in (("deconvnet", deconv), ("occlusion", occlusion)):
        folder = result.save(args.out / name, overwrite=True)
        print(f"saved {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")

    print(f"one page over both: vizkit report {args.out}")
    print("hooks left on the model:", sum(vizkit.engine.hook_counts(model).values()))


if __name__ == "__main__":
    main()
