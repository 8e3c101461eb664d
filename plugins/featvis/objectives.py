"""What the optimisation maximises, and the regularisers that keep the image readable.

Objectives score a batch: ``objective(activation, units)`` returns [B], element b scoring how
strongly image b drives ``units[b]`` (several units optimised in one batch):

* :func:`channel`: the mean of channel ``units[b]`` over the map (Lucid's ``channel``);
* :func:`neuron`: channel ``units[b]`` at the map's centre (Lucid's ``neuron``; DVT's unit);
* :func:`logit`: the model output ``units[b]`` (class visualisation; a [B,K] output);
* :func:`direction`: the mean over the map of the projection of the activation vector on the unit
  vector ``units[b]`` (a direction in the layer's channel space, [B,C]).

:func:`diversity` is Lucid's term: the cosine similarity of the Gram matrices of the images of one
group (subtracted, weighted, from the objective, it pushes K images of a unit apart).

Regularisers: penalties on the [0, 1] image, per element ([B]: :class:`L2`, :class:`TotalVariation`)
and DVT's operations every few steps on the image itself (:class:`Blur`, :class:`ClipSmallNorm`),
which act through ``ImageParam.from_image``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import vizkit

Objective = Callable[[Tensor, Tensor], Tensor]


def _rows(activation: Tensor) -> Tensor:
    return torch.arange(activation.shape[0], device=activation.device)


def channel(activation: Tensor, units: Tensor) -> Tensor:
    selected = activation[_rows(activation), units.to(activation.device)]
    return selected.reshape(activation.shape[0], -1).mean(dim=1)


def neuron(activation: Tensor, units: Tensor) -> Tensor:
    selected = activation[_rows(activation), units.to(activation.device)]
    if selected.dim() == 1:  # a [B,C] layer: the unit itself
        return selected
    height, width = selected.shape[-2:]
    return selected[..., height // 2, width // 2].reshape(activation.shape[0])


def logit(output: Tensor, units: Tensor) -> Tensor:
    if output.dim() != 2:
        raise vizkit.UsageError(f"the logit objective needs a [B,classes] output, not {tuple(output.shape)}")
    return output[_rows(output), units.to(output.device)]


def direction(activation: Tensor, directions: Tensor) -> Tensor:
    """``directions`` [B,C]: the unit vectors (normalised here) image b's activation should point along."""
    vectors = F.normalize(directions.to(activation), dim=1)
    shape = (*vectors.shape, *([1] * (activation.dim() - 2)))
    projection = (activation * vectors.view(shape)).sum(dim=1)
    return projection.reshape(activation.shape[0], -1).mean(dim=1)


OBJECTIVES: dict[str, Objective] = {"channel": channel, "neuron": neuron, "logit": logit, "direction": direction}


def get(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise vizkit.UsageError(f"unknown objective '{name}': use {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def every_unit(objective: str, activation: Tensor, directions: Tensor | None = None) -> Tensor:
    """The objective for every unit of the layer at once, [B, units]: what ``objective`` would
    score for each choice of unit (channel means, centre neurons, logits, or the projections on
    each of ``directions`` [U, C]). The trust numbers rank a unit among all of them, and the scan
    of natural images ranks images by it."""
    if objective == "logit":
        if activation.dim() != 2:
            raise vizkit.UsageError(f"the logit objective needs a [B,classes] output, not {tuple(activation.shape)}")
        return activation
    if activation.dim() < 2:
        raise vizkit.UsageError(f"the layer's output {tuple(activation.shape)} has no units")
    if objective == "channel":
        return activation.reshape(*activation.shape[:2], -1).mean(dim=2)
    if objective == "neuron":
        if activation.dim() == 2:
            return activation
        height, width = activation.shape[-2:]
        return activation[..., height // 2, width // 2].reshape(*activation.shape[:2])
    if objective == "direction":
        if directions is None:
            raise vizkit.UsageError("the direction objective needs directions")
        vectors = F.normalize(directions.to(activation), dim=1)  # [U, C]
        flat = activation.reshape(*activation.shape[:2], -1)  # [B, C, P]
        return torch.einsum("bcp,uc->bup", flat, vectors).mean(dim=2)
    raise vizkit.UsageError(f"unknown objective '{objective}': use {', '.join(OBJECTIVES)}")


def gram_similarity(activation: Tensor, group: int) -> Tensor:
    """Lucid's diversity measure, per image [B]: the summed cosine similarity of its Gram matrix
    (channels x channels over the map) to those of the other images of its group (consecutive
    runs of ``group`` images); 0 where ``group`` is 1."""
    batch = activation.shape[0]
    if group <= 1:
        return activation.new_zeros(batch)
    if batch % group:
        raise ValueError(f"a batch of {batch} is no whole number of groups of {group}")
    flat = activation.reshape(batch, activation.shape[1], -1)
    grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(batch, -1), dim=1)
    grams = grams.view(batch // group, group, -1)
    cosines = grams @ grams.transpose(1, 2)  # [groups, group, group]
    others = cosines.sum(dim=2) - cosines.diagonal(dim1=1, dim2=2)
    return others.reshape(batch)


def diversity(activation: Tensor, group: int) -> Tensor:
    """Lucid's diversity objective per image [B]: minus :func:`gram_similarity` (to be added,
    weighted, to the objective)."""
    return -gram_similarity(activation, group)


class L2:
    """L2 decay as a penalty: ``weight`` x the mean squared distance of the image from mid-grey, [B]."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def penalty(self, image: Tensor) -> Tensor:
        return self.weight * ((image - 0.5) ** 2).reshape(image.shape[0], -1).mean(dim=1)


class TotalVariation:
    """Total variation: ``weight`` x the mean absolute difference of neighbouring pixels, [B]."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def penalty(self, image: Tensor) -> Tensor:
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs().reshape(image.shape[0], -1).mean(dim=1)
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs().reshape(image.shape[0], -1).mean(dim=1)
        return self.weight * (dx + dy)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """``image`` [B,C,H,W] blurred by a Gaussian of ``sigma`` px (separable, reflected borders)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    pad = min(radius, image.shape[-1] - 1, image.shape[-2] - 1)
    mode = "reflect" if pad == radius else "replicate"
    out = F.pad(image, (radius, radius, 0, 0), mode=mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode=mode)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class Step:
    """An operation on the image every ``every`` steps (DVT's regularisers act so): ``due(step)``
    says whether it runs after optimiser step ``step`` (0-based), ``apply(image)`` does it."""

    every: int = 1

    def due(self, step: int) -> bool:
        return (step + 1) % self.every == 0

    def apply(self, image: Tensor) -> Tensor:
        raise NotImplementedError


class Blur(Step):
    """DVT's Gaussian blur of the image every ``every`` steps (sigma ``sigma`` px)."""

    def __init__(self, sigma: float = 0.5, every: int = 4) -> None:
        if sigma <= 0 or every < 1:
            raise vizkit.UsageError(f"blur needs sigma > 0 and every >= 1, not {sigma} and {every}")
        self.sigma, self.every = sigma, every

    def apply(self, image: Tensor) -> Tensor:
        return gaussian_blur(image, self.sigma)


class ClipSmallNorm(Step):
    """DVT's clipping of small-norm pixels: pixels whose colour distance from mid-grey is below
    the ``percentile`` of the image's are set to mid-grey, every ``every`` steps."""

    def __init__(self, percentile: float = 20.0, every: int = 4) -> None:
        if not 0 <= percentile < 100 or every < 1:
            raise vizkit.UsageError(
                f"clipping needs 0 <= percentile < 100 and every >= 1, not {percentile} and {every}"
            )
        self.percentile, self.every = percentile, every

    def apply(self, image: Tensor) -> Tensor:
        norms = (image - 0.5).norm(dim=1, keepdim=True)  # [B,1,H,W]
        cut = torch.quantile(norms.reshape(image.shape[0], -1), self.percentile / 100, dim=1).view(-1, 1, 1, 1)
        return torch.where(norms < cut, torch.full_like(image, 0.5), image)


Regularizer = L2 | TotalVariation | Blur | ClipSmallNorm

REGULARIZERS: dict[str, Callable[[], Regularizer]] = {
    "l2": lambda: L2(1.0),
    "tv": lambda: TotalVariation(1.0),
    "blur": lambda: Blur(0.5, 4),
    "clip": lambda: ClipSmallNorm(20.0, 4),
}


def build(names: str | Sequence[str | Regularizer] | None) -> list[Regularizer]:
    """Regularisers by name (``l2``, ``tv``, ``blur``, ``clip``; a comma list or sequence, default
    weights) or as objects; None / "" / "none": none."""
    if names is None or names in ("", "none"):
        return []
    items: Sequence[str | Regularizer] = names.split(",") if isinstance(names, str) else names
    found: list[Regularizer] = []
    for item in items:
        if isinstance(item, str):
            key = item.strip()
            if key not in REGULARIZERS:
                raise vizkit.UsageError(f"unknown regulariser '{key}': use {', '.join(REGULARIZERS)}")
            found.append(REGULARIZERS[key]())
        else:
            found.append(item)
    return found
