"""Filter learning for one layer: least squares by conjugate gradients, then unit-norm filters.

With layer l's maps p and every switch fixed, and the lower layers' filters fixed, the
reconstruction ``R_l p = B (F_l * z_l)`` (``B = F_1 U_1 ... F_{l-1} U_{l-1}``, ``z_l = U_{s_l} p``)
is linear in layer l's filters F_l. Minimising ``sum over images (lambda/2) ||R_l p - y||^2``
over F_l is therefore a linear least-squares problem ``min ||A F_l - y||``; lambda only scales it
and does not change the minimiser. :func:`cg_filters` solves its normal equations
``A^T A F = A^T y`` by conjugate gradients (CGLS form): ``A`` is the reconstruction with the
filters as the variable, and ``A^T`` its vector-Jacobian product from autograd. The paper then
normalises the filters; here each feature map's filter (all its input channels together, a colour
filter at layer 1) is scaled to unit L2 norm, so colour balance within a filter is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .pooling import Switches, unpool
from .reconstruction import reconstruct_unpooled


def normalise_filters(weight: Tensor, eps: float = 1e-12) -> Tensor:
    """``weight`` ``[K, C, kh, kw]`` with each map's filter ``weight[k]`` scaled to unit L2 norm.

    Args:
        weight: a filter bank; all-zero filters are left at zero.
        eps: the smallest norm divided by.
    """
    norms = weight.flatten(1).norm(dim=1).clamp(min=eps)
    return weight / norms.view(-1, 1, 1, 1)


def cg_filters(
    p: Tensor,
    y: Tensor,
    filters: Sequence[Tensor],
    switches: Sequence[Switches],
    iterations: int = 50,
    tol: float = 1e-10,
    normalise: bool = True,
) -> tuple[Tensor, list[float]]:
    """Layer l's filters minimising ``||R_l p - y||^2`` (summed over images), by CG.

    Starts from ``filters[-1]``; the lower banks ``filters[:-1]`` and all switches stay fixed.
    Stops after ``iterations`` steps or when the normal-equation residual
    ``||A^T (y - A F)||`` falls to ``tol`` times its starting value. Returns the filters (each
    map's filter at unit norm when ``normalise``) and the residual norms, the starting one first.

    Args:
        p: layer l's pooled maps, ``[N, K_l, H', W']``.
        y: the images, ``[N, C_0, H, W]``.
        filters: the filter banks of layers 1..l; the last is the starting point.
        switches: the switches of layers 1..l.
        iterations: the most CG steps (at most the number of filter weights are ever needed).
        tol: the relative residual at which to stop.
        normalise: scale each map's filter to unit L2 norm at the end (the paper's constraint);
            False returns the least-squares solution itself.
    """
    if len(switches) != len(filters):
        raise ValueError(f"{len(filters)} filter banks need switches for every layer, got {len(switches)}")
    z = unpool(p, switches[-1]).detach()
    batch = (z, y.detach(), list(switches[:-1]))
    return cg_filters_batched(lambda: [batch], filters, iterations=iterations, tol=tol, normalise=normalise)


Batch = tuple[Tensor, Tensor, list[Switches]]  # (layer l's unpooled maps z, images y, switches below)


def cg_filters_batched(
    batches: Callable[[], Iterable[Batch]],
    filters: Sequence[Tensor],
    iterations: int = 10,
    tol: float = 1e-10,
    normalise: bool = True,
) -> tuple[Tensor, list[float]]:
    """:func:`cg_filters` over a dataset too large for one batch: ``batches()`` yields
    ``(z, y, below)`` per batch (layer l's unpooled maps, the images, the switches of layers
    1..l-1) and is called once per CG step; each step is one pass over the data, the
    forward and the transposed products of a batch summed as they come.

    Args:
        batches: a callable returning an iterable over the dataset's batches (the same each time).
        filters: the filter banks of layers 1..l; the last is the starting point.
        iterations: the most CG steps.
        tol: the relative normal-equation residual at which to stop.
        normalise: scale each map's filter to unit norm at the end.
    """
    lower = [w.detach() for w in filters[:-1]]
    start = filters[-1].detach()

    def forward(weight: Tensor, z: Tensor, below: list[Switches]) -> Tensor:
        """A F for one batch: the images reconstructed with layer l's filters ``weight``."""
        return reconstruct_unpooled(z, [*lower, weight], below)

    def transpose(image: Tensor, z: Tensor, below: list[Switches]) -> Tensor:
        """A^T r for one batch: the vector-Jacobian product of the (linear) reconstruction."""
        weight = torch.zeros_like(start, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(forward(weight, z, below), weight, grad_outputs=image)
        return grad

    with torch.no_grad():
        x = start.clone()
        r = torch.zeros_like(x)
        for z, y, below in batches():
            r += transpose(y - forward(x, z, below), z, below)
        d = r.clone()
        rr = float(r.pow(2).sum())
        history = [rr**0.5]
        stop = tol * history[0]
        for _ in range(iterations):
            if history[-1] <= stop or rr == 0.0:
                break
            qq, atq = 0.0, torch.zeros_like(x)
            for z, _, below in batches():
                q = forward(d, z, below)
                qq += float(q.pow(2).sum())
                atq += transpose(q, z, below)
            if qq == 0.0:
                break
            alpha = rr / qq
            x = x + alpha * d
            r = r - alpha * atq
            rr_new = float(r.pow(2).sum())
            d = r + (rr_new / rr) * d
            rr = rr_new
            history.append(rr**0.5)
    return (normalise_filters(x) if normalise else x), history
