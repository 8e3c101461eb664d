"""Inference of a layer's maps: the cost, ISTA with fixed switches, and the switch update.

Layer l's cost for images y (summed over the batch) is

    C_l(p) = (lambda_l / 2) ||R_l p - y||^2 + |p|_1

(Zeiler, Taylor & Fergus, ICCV 2011). With all switches fixed the reconstruction term is a
quadratic in p, and ISTA (a gradient step on it, then soft shrinkage, the proximal map of the
L1 term) lowers C_l at every step when the step ``beta < 1 / L``, ``L = lambda_l ||R_l||^2``
(:func:`~.reconstruction.lipschitz`). :func:`update_switches` is the paper's other half of an
iteration: a step on the *unpooled* maps z_l, then 3D pooling again, which lets winners move;
it has no such guarantee (pooling drops the losers), so it is kept apart from :func:`ista`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .pooling import Switches, pool, unpool
from .reconstruction import adjoint, adjoint_unpooled, reconstruct, reconstruct_unpooled


def shrink(x: Tensor, threshold: float | Tensor) -> Tensor:
    """Soft shrinkage ``sign(x) * max(|x| - threshold, 0)``: the proximal map of ``threshold * |x|_1``.

    Args:
        x: any tensor.
        threshold: the amount taken off each magnitude (non-negative).
    """
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0)


def cost(p: Tensor, y: Tensor, filters: Sequence[Tensor], switches: Sequence[Switches], lam: float) -> Tensor:
    """``(lam / 2) ||R_l p - y||^2 + |p|_1``, summed over the batch (a 0-dim tensor).

    Args:
        p: layer l's pooled maps.
        y: the images, ``[N, C_0, H, W]``.
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l.
        lam: lambda_l, the weight of the reconstruction term.
    """
    residual = reconstruct(p, filters, switches) - y
    return 0.5 * lam * residual.pow(2).sum() + p.abs().sum()


def ista(
    p: Tensor,
    y: Tensor,
    filters: Sequence[Tensor],
    switches: Sequence[Switches],
    lam: float,
    beta: float,
    steps: int,
) -> tuple[Tensor, list[float]]:
    """ISTA on layer l's pooled maps with every layer's switches fixed.

    Each step: ``r = R_l p - y``, ``g = lam * R_l^T r``, ``p = shrink(p - beta * g, beta)``.
    Returns the final maps and the cost before the first step and after each step
    (``steps + 1`` values); with ``beta < 1 / lipschitz(...)`` the costs never rise.

    Args:
        p: the starting maps (e.g. zeros of ``switches[-1].pooled_shape``); not modified.
        y: the images, ``[N, C_0, H, W]``.
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l.
        lam: lambda_l.
        beta: the step size.
        steps: how many steps.
    """
    history = [float(cost(p, y, filters, switches, lam))]
    with torch.no_grad():
        for _ in range(steps):
            gradient = lam * adjoint(reconstruct(p, filters, switches) - y, filters, switches)
            p = shrink(p - beta * gradient, beta)
            history.append(float(cost(p, y, filters, switches, lam)))
    return p, history


def update_switches(
    p: Tensor,
    y: Tensor,
    filters: Sequence[Tensor],
    switches: Sequence[Switches],
    lam: float,
    beta: float,
) -> tuple[Tensor, Switches]:
    """One step on layer l's unpooled maps, then 3D pooling again: new maps and new switches.

    ``z = U_{s_l} p``; ``z = shrink(z - beta * lam * G^T (G z - y), beta)`` with
    ``G = F_1 U_1 ... U_{l-1} F_l`` (the lower layers' switches fixed); ``p, s_l = pool(z)``.
    Elements that lost their region can win it now. Unlike :func:`ista` the cost may rise (the
    losers of the new pooling are dropped). With ``beta = 0`` it re-pools ``U_{s_l} p``, which
    keeps p and moves only the switches of all-zero regions (to the region's first element).

    Args:
        p: layer l's pooled maps.
        y: the images, ``[N, C_0, H, W]``.
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l; layer l's region is reused.
        lam: lambda_l.
        beta: the step size on the unpooled maps (0: re-pool only).
    """
    top = switches[-1]
    below = switches[:-1]
    with torch.no_grad():
        z = unpool(p, top)
        if not beta:
            return pool(z, top.region)
        residual = reconstruct_unpooled(z, filters, below) - y
        return descend(z, residual, filters, below, lam, beta, top.region)


def descend(
    z: Tensor,
    residual: Tensor,
    filters: Sequence[Tensor],
    below: Sequence[Switches],
    lam: float,
    beta: float | Tensor,
    region: tuple[int, int, int],
) -> tuple[Tensor, Switches]:
    """The ADN's iteration from unpooled maps ``z`` whose reconstruction error is ``residual``
    (``G z - y``): a gradient step, shrinkage, 3D pooling; the new pooled maps and switches.

    Args:
        z: layer l's unpooled maps.
        residual: ``G z - y`` for them (callers that have it need not recompute it).
        filters: the filter banks of layers 1..l.
        below: the switches of layers 1..l-1.
        lam: lambda_l.
        beta: the step size: one number, or one per image (``[N, 1, 1, 1]``).
        region: layer l's pooling region.
    """
    step = z - beta * lam * adjoint_unpooled(residual, filters, below)
    return pool(shrink(step, beta), region)
