"""Which units of the previous and next listed layer each unit is most strongly connected to.

Where the two layers are joined by a single convolution or linear layer (the only module with
weights between them, apart from per-channel normalisation), the connection of unit a below to
unit b above is the L2 norm of the weights from a's map to b (a conv's kernel slice
``W[b, a]``; a linear layer's weights from a's flattened map). Anywhere else (a residual block,
several convolutions in between, a layer that is not the next one's input), there is no single
weight to read and it is the Pearson correlation of the two units' per-image maxima over the
scanned images, ranked by its absolute value (a strongly negative correlation is a strong
connection too)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import vizkit

NORMALISATIONS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


@dataclass
class Link:
    """How two consecutive listed layers are connected: ``kind`` ``"weights"`` or ``"correlation"``,
    and ``strength`` [units_below, units_above]."""

    below: str
    above: str
    kind: str
    strength: Tensor

    def describe(self) -> dict[str, str]:
        return {"below": self.below, "above": self.above, "kind": self.kind}


def execution_order(im: vizkit.Instrumented, probe: Tensor) -> list[str]:
    """The names of the modules (and intercepted ops) in the order a forward of ``probe`` saw
    their outputs (the recorder keeps this forward's activations: call it before any other)."""
    with im.configured(layers="all", switches=False), torch.no_grad():
        im(probe)
        return list(im.layers)


def joining_layer(
    model: nn.Module, order: list[str], below: str, above: str, units_below: int, units_above: int
) -> nn.Module | None:
    """The single conv or linear layer joining ``below`` to ``above`` (see the module's
    docstring), or None."""
    if below not in order or above not in order or order.index(below) >= order.index(above):
        return None
    modules = dict(model.named_modules())
    between = order[order.index(below) + 1 : order.index(above) + 1]
    weighted = []
    for name in between:
        module = modules.get(name)
        if module is None or isinstance(module, NORMALISATIONS):
            continue
        if any(True for _ in module.parameters(recurse=False)):
            weighted.append(module)
    if len(weighted) != 1:
        return None
    layer = weighted[0]
    conv = isinstance(layer, nn.Conv2d) and layer.groups == 1
    if conv and layer.in_channels == units_below and layer.out_channels == units_above:
        return layer
    if isinstance(layer, nn.Linear) and layer.out_features == units_above and layer.in_features % units_below == 0:
        return layer
    return None


def weight_strength(layer: nn.Module, units_below: int) -> Tensor:
    """[units_below, units_above] L2 norm of the weights from each map below to each unit above."""
    weight = layer.get_parameter("weight").detach().float().cpu()
    per_map = weight.reshape(weight.shape[0], units_below, -1)  # conv: [out, in, kh*kw]; linear: [out, in, positions]
    return per_map.norm(dim=2).T.contiguous()


def strongest(strength: Tensor, count: int, by_magnitude: bool) -> tuple[Tensor, Tensor]:
    """Per row, the ``count`` columns of largest strength (absolute value when ``by_magnitude``),
    strongest first, ties to the lower index: (indices [rows, n], strengths [rows, n])."""
    key = strength.abs() if by_magnitude else strength
    order = torch.sort(-key, dim=1, stable=True).indices[:, : min(count, strength.shape[1])]
    return order, strength.gather(1, order)
