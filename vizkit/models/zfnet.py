"""The Zeiler & Fergus model (PAPER.md §1, paper Fig. 3) and feature scale clipping.

The five convolutional stages and three fully connected layers are submodules named ``conv1`` ..
``conv5``, ``fc6``, ``fc7``, ``fc8``, so the paper's layer names are ordinary ``named_modules()``
names: ``conv1`` is the stage output (after pool and normalisation), ``conv1.conv`` its
convolution, ``conv1.relu``, ``conv1.pool``, ``conv1.norm`` the rest.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ZFConfig:
    """Widths and input size of a ZF-topology network."""

    channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
    fc_width: int = 4096
    input_size: int = 224
    num_classes: int = 1000
    dropout: float = 0.5
    init_std: float | None = 0.01  # the paper's N(0, 0.01^2); None: per-layer sqrt(2 / fan_in) (He)


ZF_PAPER = ZFConfig()
# The compact variant: same topology, narrower, for 144x144 crops of 160x160 images (Imagenette)
# (N(0, 0.01^2) leaves its loss at ln 10 for the first epochs on CPU budgets, so it uses the
# fan-in-scaled Gaussian: still zero-mean Gaussian weights and zero biases)
ZF_COMPACT = ZFConfig(channels=(64, 128, 192, 192, 128), fc_width=512, input_size=144, num_classes=10, init_std=None)


def _conv_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _pool_out(size: int, kernel: int = 3, stride: int = 2, ceil: bool = True) -> int:
    rounding = math.ceil if ceil else math.floor
    out = int(rounding((size - kernel) / stride)) + 1
    if ceil and (out - 1) * stride >= size:  # PyTorch drops a last window that starts outside
        out -= 1
    return out


def conv5_size(input_size: int) -> int:
    """Spatial size of the conv5 stage output for a square input of ``input_size``."""
    size = _pool_out(_conv_out(input_size, 7, 2, 1))
    size = _pool_out(_conv_out(size, 5, 2))
    return _pool_out(size)


def _lrn() -> nn.LocalResponseNorm:
    # contrast normalisation across maps, with Krizhevsky et al.'s constants
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


def _stage(cin: int, cout: int, kernel: int, stride: int, padding: int, pool: bool, norm: bool) -> nn.Sequential:
    parts: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)),
        ("relu", nn.ReLU(inplace=True)),
    ]
    if pool:
        parts.append(("pool", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)))
    if norm:
        parts.append(("norm", _lrn()))
    return nn.Sequential(OrderedDict(parts))


class ZFNet(nn.Module):
    """ZF net: 7x7/2 conv1, 5x5/2 conv2, three 3x3 convs, two 4096-wide fc layers."""

    vizkit_default_layer = "conv5"  # the paper's "layer 5", e.g. for occlusion

    def __init__(self, config: ZFConfig = ZF_PAPER) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3, c4, c5 = config.channels
        self.conv1 = _stage(3, c1, 7, 2, 1, pool=True, norm=True)
        self.conv2 = _stage(c1, c2, 5, 2, 0, pool=True, norm=True)
        self.conv3 = _stage(c2, c3, 3, 1, 1, pool=False, norm=False)
        self.conv4 = _stage(c3, c4, 3, 1, 1, pool=False, norm=False)
        self.conv5 = _stage(c4, c5, 3, 1, 1, pool=True, norm=False)
        spatial = conv5_size(config.input_size)
        self.fc6 = nn.Sequential(
            OrderedDict(
                [
                    ("flatten", nn.Flatten()),
                    ("fc", nn.Linear(c5 * spatial * spatial, config.fc_width)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("dropout", nn.Dropout(config.dropout)),
                ]
            )
        )
        self.fc7 = nn.Sequential(
            OrderedDict(
                [
                    ("fc", nn.Linear(config.fc_width, config.fc_width)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("dropout", nn.Dropout(config.dropout)),
                ]
            )
        )
        self.fc8 = nn.Linear(config.fc_width, config.num_classes)
        self.reset_parameters(config.init_std)

    def reset_parameters(self, std: float | None = 1e-2) -> None:
        """Weights from N(0, std^2) (the paper: 0.01), or N(0, 2/fan_in) with ``std=None``; biases 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if std is None:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                else:
                    nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) [B, classes] for images ``x`` [B, 3, H, W]."""
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.fc6, self.fc7):
            x = stage(x)
        return self.fc8(x)


def zfnet(num_classes: int = 1000) -> ZFNet:
    """The paper's 224x224 ZF model (untrained)."""
    return ZFNet(ZFConfig(num_classes=num_classes))


def zfnet_compact(num_classes: int = 10) -> ZFNet:
    """The compact ZF variant (7x7/2 conv1, 5x5/2 conv2, three 3x3 convs, two 512-wide fc layers)."""
    return ZFNet(
        ZFConfig(
            ZF_COMPACT.channels, ZF_COMPACT.fc_width, ZF_COMPACT.input_size, num_classes, init_std=ZF_COMPACT.init_std
        )
    )


@torch.no_grad()
def filter_rms(conv: nn.Conv2d) -> torch.Tensor:
    """Root-mean-square of each filter of ``conv`` (over its input channels and taps)."""
    return conv.weight.pow(2).mean(dim=(1, 2, 3)).sqrt()


@torch.no_grad()
def clip_feature_scale(model: nn.Module, radius: float = 0.1) -> int:
    """Feature scale clipping: rescale every conv filter whose RMS exceeds ``radius`` to it.

    Applied after each update in the paper's recipe so no first-layer filter comes to dominate.
    Returns how many filters were rescaled.

    Args:
        model: the model whose ``nn.Conv2d`` filters (all of them, every layer) are clipped in place.
        radius: the largest RMS a filter may keep, over its input channels and taps (the paper's 1e-1).
    """
    clipped = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            rms = filter_rms(module)
            over = rms > radius * (1 + 1e-5)  # a filter just rescaled to the radius stays put
            if over.any():
                scale = torch.where(over, radius / rms, torch.ones_like(rms))
                module.weight.mul_(scale[:, None, None, None])
                clipped += int(over.sum())
    return clipped
