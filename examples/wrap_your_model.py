"""Wrap your own PyTorch model with vizkit: layers, pooling switches and deconvnet projections.

The model below is deliberately not an ``nn.Sequential``: its ``forward`` adds a residual
connection and calls ``F.max_pool2d`` / ``F.relu`` directly. vizkit still sees every module
call and every functional pool / ReLU (functional calls become layers named
``<module>.<op>``, e.g. ``max_pool2d`` for a call made by the model's own ``forward``).

Run it:

    python examples/wrap_your_model.py

The ``build()`` factory makes the same model usable from the command line:

    vizkit layers examples/wrap_your_model.py:build
    vizkit run deconvnet --model examples/wrap_your_model.py:build --image photo.jpg --layer head
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import vizkit


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection: relu(x + conv2(relu(conv1(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))  # residual add, functional ReLUs


class TinyResNet(nn.Module):
    """A small classifier: stem conv, functional max-pool, a residual block, a second pool, fc."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 5, stride=2, padding=2)
        self.res = ResidualBlock(width)
        self.head = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), kernel_size=3, stride=2, padding=1)  # 112 -> 56
        x = self.res(x)
        x = F.max_pool2d(F.relu(self.head(x)), kernel_size=2)  # 56 -> 28
        x = F.adaptive_avg_pool2d(x, 7)
        return self.fc(torch.flatten(x, 1))


def build() -> nn.Module:
    """The factory behind the spec ``examples/wrap_your_model.py:build`` (random weights)."""
    torch.manual_seed(0)
    return TinyResNet()


def main() -> None:
    model = build().eval()
    x = torch.randn(1, 3, 224, 224)

    with vizkit.instrument(model) as im:  # every hook is removed when the block ends
        logits = im(x)
        print(f"output: {tuple(logits.shape)}")
        print("layers (name, type, output shape):")
        for info in im.layer_infos():
            shape = "x".join(str(d) for d in info.shape[1:]) if info.shape else "-"
            print(f"  {info.name:<20} {info.type:<22} {shape}")
        print("pools with switches:", ", ".join(im.pools))

        layer, channel = "head", 3  # above the residual block: the projection splits at the add
        strongest = im.activation(layer)[0, channel].max().item()
        print(f"projecting channel {channel} of {layer} (strongest activation {strongest:.4f})")
        via_autograd = im.project(layer, channel=channel, method="autograd")  # [1, 3, 224, 224]
        via_explicit = im.project(layer, channel=channel, method="explicit")

    difference = (via_autograd - via_explicit).norm() / via_autograd.norm().clamp_min(1e-12)
    touched = (via_autograd.abs().sum(dim=1) > 0).sum().item()
    print(
        f"projection shape {tuple(via_autograd.shape)}, {touched} non-zero pixels; "
        f"relative difference autograd vs explicit: {difference.item():.2e}"
    )
    print("hooks left on the model:", sum(vizkit.hook_counts(model).values()))


if __name__ == "__main__":
    main()
