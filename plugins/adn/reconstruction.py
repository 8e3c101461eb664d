"""The ADN's top-down reconstruction operator R_l and its adjoint R_l^T, and ||R_l||^2.

Layer l (1-based) of an Adaptive Deconvolutional Network has pooled maps p_l, switches s_l and
filters F_l. Unpooling gives the maps z_l = U_{s_l} p_l; convolving them with the filters
reconstructs the layer's input, the pooled maps of the layer below (the image for l = 1):
``p_{l-1}[c] = sum_k f_{l,k,c} * z_l[k]``. Repeating down to the image,

    y_hat = R_l p_l,    R_l = F_1 U_{s_1} F_2 U_{s_2} ... F_l U_{s_l}.

Everything is linear once the switches are fixed, so R_l has an adjoint R_l^T: correlate with the
filters (``conv2d``, the adjoint of ``conv_transpose2d``) and pool with the *fixed* switches
(:func:`~.pooling.gather`), layer by layer upwards. It carries an image-space error to layer l:
the gradient of the reconstruction cost is ``lambda_l * R_l^T (R_l p - y)``.

Conventions: ``filters[i]`` is layer i+1's filter bank ``[K_{i+1}, C_i, kh, kw]`` (the
``conv_transpose2d`` weight layout: K maps in, C channels out, C_0 the image's channels) with odd
kh, kw; the convolution is padded by ``(kh // 2, kw // 2)`` so its output has the size of its input
("same"), as the paper's layers keep the size of the maps. ``switches[i]`` are layer i+1's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .pooling import Switches, gather, unpool


def _padding(weight: Tensor) -> tuple[int, int]:
    kh, kw = weight.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"filters must have odd sizes to keep the maps' size, got {kh}x{kw}")
    return kh // 2, kw // 2


def synthesise(z: Tensor, weight: Tensor) -> Tensor:
    """One layer's filters applied to its maps: ``out[c] = sum_k f[k, c] * z[k]`` (full convolution,
    cropped to the maps' size).

    Args:
        z: the layer's (unpooled) maps, ``[N, K, H, W]``.
        weight: the layer's filters, ``[K, C, kh, kw]``, odd kh and kw.
    """
    return F.conv_transpose2d(z, weight, padding=_padding(weight))


def analyse(x: Tensor, weight: Tensor) -> Tensor:
    """The adjoint of :func:`synthesise`: correlate ``x`` ``[N, C, H, W]`` with each map's filters.

    Args:
        x: the layer's input-space signal, ``[N, C, H, W]``.
        weight: the layer's filters, ``[K, C, kh, kw]``, odd kh and kw.
    """
    return F.conv2d(x, weight, padding=_padding(weight))


def _check(filters: Sequence[Tensor], switches: Sequence[Switches], below: bool) -> None:
    expected = len(filters) - 1 if below else len(filters)
    if len(filters) < 1 or len(switches) != expected:
        what = "the layers below the top one" if below else "every layer"
        raise ValueError(f"{len(filters)} filter banks need switches for {what}, got {len(switches)}")


def reconstruct_unpooled(z: Tensor, filters: Sequence[Tensor], switches: Sequence[Switches]) -> Tensor:
    """``F_1 U_1 ... U_{l-1} F_l z``: the image reconstructed from layer l's *unpooled* maps ``z``.

    Args:
        z: layer l's unpooled maps, ``[N, K_l, H, W]``.
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l-1 (the layers below l).
    """
    _check(filters, switches, below=True)
    x = synthesise(z, filters[-1])
    for weight, below in zip(reversed(filters[:-1]), reversed(switches)):
        x = synthesise(unpool(x, below), weight)
    return x


def reconstruct(p: Tensor, filters: Sequence[Tensor], switches: Sequence[Switches]) -> Tensor:
    """``R_l p``: the image reconstructed top-down from layer l's pooled maps ``p``.

    Args:
        p: layer l's pooled maps, of shape ``switches[-1].pooled_shape``.
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l.
    """
    _check(filters, switches, below=False)
    return reconstruct_unpooled(unpool(p, switches[-1]), filters, switches[:-1])


def adjoint_unpooled(y: Tensor, filters: Sequence[Tensor], switches: Sequence[Switches]) -> Tensor:
    """The adjoint of :func:`reconstruct_unpooled`: image-space ``y`` carried up to layer l's
    unpooled maps.

    Args:
        y: an image-space tensor, ``[N, C_0, H, W]``.
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l-1.
    """
    _check(filters, switches, below=True)
    x = y
    for weight, below in zip(filters[:-1], switches):
        x = gather(analyse(x, weight), below)
    return analyse(x, filters[-1])


def adjoint(y: Tensor, filters: Sequence[Tensor], switches: Sequence[Switches]) -> Tensor:
    """``R_l^T y``: image-space ``y`` carried up to layer l's pooled maps (fixed switches).

    Args:
        y: an image-space tensor, ``[N, C_0, H, W]``.
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l.
    """
    _check(filters, switches, below=False)
    return gather(adjoint_unpooled(y, filters, switches[:-1]), switches[-1])


def operator_norm_squared(
    filters: Sequence[Tensor], switches: Sequence[Switches], iterations: int = 100, seed: int = 0
) -> float:
    """``||R_l||^2`` (the largest eigenvalue of ``R_l^T R_l``) by power iteration.

    The estimate approaches the true value from below, so a step size derived from it should keep
    a margin (e.g. 0.9 / L).

    Args:
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l; their pooled shape sets the batch.
        iterations: power-iteration steps.
        seed: seeds the random start vector (a private generator; the global one is left alone).
    """
    top = filters[-1]
    generator = torch.Generator(device=top.device).manual_seed(seed)
    v = torch.randn(switches[-1].pooled_shape, generator=generator, device=top.device, dtype=top.dtype)
    v = v / v.norm()
    estimate = 0.0
    with torch.no_grad():
        for _ in range(iterations):
            w = adjoint(reconstruct(v, filters, switches), filters, switches)
            estimate = float((v * w).sum())  # Rayleigh quotient, v has unit norm
            norm = w.norm()
            if norm == 0:
                return 0.0
            v = w / norm
    return estimate


def lipschitz(
    filters: Sequence[Tensor], switches: Sequence[Switches], lam: float, iterations: int = 100, seed: int = 0
) -> float:
    """``L = lam * ||R_l||^2``: the Lipschitz constant of the gradient of ``(lam/2)||R_l p - y||^2``.

    ISTA with a step ``beta < 1 / L`` lowers the cost at every step.

    Args:
        filters: the filter banks of layers 1..l.
        switches: the switches of layers 1..l.
        lam: the layer's weight lambda_l on the reconstruction term.
        iterations: power-iteration steps (see :func:`operator_norm_squared`).
        seed: seeds the power iteration's start vector.
    """
    return lam * operator_norm_squared(filters, switches, iterations=iterations, seed=seed)
