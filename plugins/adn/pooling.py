"""3D max pooling with switches, and unpooling: the U_s of an Adaptive Deconvolutional Network.

Zeiler, Taylor & Fergus (ICCV 2011) pool each layer's feature maps z over non-overlapping 3D
regions: a window in space *and* a group of consecutive maps (3x3 in space over 3 maps at layer 1,
3x3 over 2 maps above). In each region the element of largest magnitude wins: its position is the
region's *switch* and its value (sign kept) is the pooled value. Unpooling puts each pooled value
back at its switch and zeros everywhere else, so ``unpool(pool(z))`` keeps exactly the winners.
With the switches held fixed both maps are linear, and :func:`gather` (read z at the switches) is
the adjoint of :func:`unpool`; the ADN's reconstruction operator and its adjoint are built from
them.

When the number of maps or the height or width is not a multiple of the region, the maps are
padded at the end (more maps, rows below, columns to the right) with zeros; the padded elements
never win a region (a real element always exists in each region), so every switch points into the
real, unpadded maps and the pooled output has ``ceil(size / region)`` entries along each axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Switches:
    """Where each pooled value came from.

    ``index`` has the pooled maps' shape ``[N, K', H', W']``: for each pooled value, the flat
    position ``(k * H + h) * W + w`` of its winner in image n's unpooled maps of shape ``shape``
    ``(K, H, W)``. ``region`` is the pooling region ``(maps, height, width)``.
    """

    index: Tensor
    shape: tuple[int, int, int]
    region: tuple[int, int, int]

    @property
    def pooled_shape(self) -> tuple[int, ...]:
        """``[N, K', H', W']``: the shape of the pooled maps these switches belong to."""
        return tuple(self.index.shape)


def pooled_size(shape: tuple[int, int, int], region: tuple[int, int, int]) -> tuple[int, int, int]:
    """The pooled ``(K', H', W')`` of maps ``shape`` ``(K, H, W)`` for pooling region ``region``.

    Args:
        shape: the unpooled maps' (maps, height, width).
        region: the pooling region (maps per group, height, width).
    """
    return (
        math.ceil(shape[0] / region[0]),
        math.ceil(shape[1] / region[1]),
        math.ceil(shape[2] / region[2]),
    )


def pool(z: Tensor, region: tuple[int, int, int]) -> tuple[Tensor, Switches]:
    """3D max-|z| pooling of maps ``z`` ``[N, K, H, W]`` over non-overlapping regions.

    Returns the pooled maps ``[N, K', H', W']`` (the winner's value, sign kept) and the switches.
    Ties go to the first element of the region in (map, row, column) order.

    Args:
        z: the unpooled feature maps, ``[N, K, H, W]``.
        region: (maps per group, height, width) of a pooling region; all at least 1.
    """
    if z.dim() != 4:
        raise ValueError(f"pool expects maps [N, K, H, W], got shape {tuple(z.shape)}")
    if len(region) != 3 or min(region) < 1:
        raise ValueError(f"a pooling region is three sizes of at least 1, got {region}")
    n, k, h, w = z.shape
    g, ph, pw = region
    kp, hp, wp = pooled_size((k, h, w), region)
    # |z| padded with -1: a padded element never beats a real one (|z| >= 0)
    magnitude = F.pad(z.abs(), (0, wp * pw - w, 0, hp * ph - h, 0, kp * g - k), value=-1.0)
    blocks = magnitude.reshape(n, kp, g, hp, ph, wp, pw).permute(0, 1, 3, 5, 2, 4, 6)
    local = blocks.reshape(n, kp, hp, wp, g * ph * pw).argmax(dim=-1)  # position inside the region
    dk, rest = local // (ph * pw), local % (ph * pw)
    dy, dx = rest // pw, rest % pw
    device = z.device
    kk = torch.arange(kp, device=device).view(1, kp, 1, 1) * g + dk
    yy = torch.arange(hp, device=device).view(1, 1, hp, 1) * ph + dy
    xx = torch.arange(wp, device=device).view(1, 1, 1, wp) * pw + dx
    index = (kk * h + yy) * w + xx
    switches = Switches(index=index, shape=(k, h, w), region=(g, ph, pw))
    return gather(z, switches), switches


def gather(z: Tensor, switches: Switches) -> Tensor:
    """The values of maps ``z`` ``[N, K, H, W]`` at the switch positions, ``[N, K', H', W']``.

    Pooling with fixed switches; the adjoint of :func:`unpool`.

    Args:
        z: maps of the unpooled shape ``switches.shape`` (per image).
        switches: from :func:`pool`.
    """
    _check(z.shape, switches)
    index = switches.index
    return z.reshape(z.shape[0], -1).gather(1, index.reshape(index.shape[0], -1)).view(index.shape)


def unpool(p: Tensor, switches: Switches) -> Tensor:
    """Maps ``[N, K, H, W]`` holding each pooled value of ``p`` at its switch, zeros elsewhere.

    Args:
        p: pooled maps of shape ``switches.pooled_shape``.
        switches: from :func:`pool`.
    """
    if tuple(p.shape) != switches.pooled_shape:
        raise ValueError(f"pooled maps {tuple(p.shape)} do not match the switches {switches.pooled_shape}")
    n = p.shape[0]
    flat = p.new_zeros(n, math.prod(switches.shape))
    flat = flat.scatter(1, switches.index.reshape(n, -1), p.reshape(n, -1))  # out of place: autograd
    return flat.view(n, *switches.shape)


def _check(shape: torch.Size, switches: Switches) -> None:
    expected = (switches.index.shape[0], *switches.shape)
    if tuple(shape) != expected:
        raise ValueError(f"maps of shape {tuple(shape)} do not match the switches' {expected}")
