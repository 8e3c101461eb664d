"""Does a unit matter? Its map zeroed (NetDissect / dissect's ablation), the change in per-class
accuracy and in the loss on N held-out labelled images.

Batched: a forward runs G copies of a chunk of images, copy g with unit u_g's map zeroed at the
layer (a forward hook multiplies the layer's output by a per-sample mask). Where the model allows
it (checked on each layer: see :func:`copies_after_the_layer`), the copies are made at the layer,
so the network below it runs once per chunk of images and only the rest runs G times; otherwise
(a skip connection across the layer) they are made at the input. Finished layers are kept for
``--resume``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import vizkit


@dataclass
class AblationSet:
    """The held-out images: their preprocessed tensors' source, and each one's model class."""

    images: vizkit.ImageList
    indices: list[int]  # positions in ``images``
    model_classes: list[int]  # each data class's model output index
    held_out: bool  # False: drawn from the scanned images themselves


def model_class_index(classes: Sequence[str], labels: Sequence[str] | None, outputs: int) -> list[int]:
    """The model output each data class (an ImageFolder sub-folder) stands for: its name or
    WordNet id among the model's labels, or, without labels, the folder's position when there are
    as many folders as outputs. A class the model does not know is a UsageError."""
    if not labels:
        if len(classes) == outputs:
            return list(range(outputs))
        raise vizkit.UsageError(
            f"--ablation needs the model's class names (--labels) to match the data's {len(classes)} class folders "
            f"to its {outputs} outputs"
        )
    index = []
    for name in classes:
        try:
            found = vizkit.data.resolve_target(name, labels, outputs)
        except vizkit.UsageError:
            found = None
        if found is None:
            raise vizkit.UsageError(
                f"--ablation: the data's class '{name}' is not one of the model's labels (by name or WordNet id)"
            )
        index.append(found)
    return index


def choose_images(images: vizkit.ImageList, count: int, held_out: bool) -> list[int]:
    """``count`` positions of ``images``, spread over the classes: round-robin over the classes in
    folder order, each class's images in file order (deterministic, no seed needed)."""
    if not images.classes:
        raise vizkit.UsageError("--ablation needs labelled images: an ImageFolder tree (one sub-folder per class)")
    per_class: list[list[int]] = [[] for _ in images.classes]
    for position, target in enumerate(images.targets):
        per_class[target].append(position)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < count and any(depth < len(members) for members in per_class):
        chosen.extend(members[depth] for members in per_class if depth < len(members))
        depth += 1
    if len(chosen) < count:
        where = "held-out " if held_out else ""
        print(f"atlas: --ablation {count} but only {len(chosen)} {where}images; using them all")
    return sorted(chosen[:count])


def _zeroing_hook(mask: Tensor, copies: int):
    """A forward hook that repeats the layer's output ``copies`` times along the batch and zeroes
    each copy's unit by ``mask`` [copies x batch, units]."""

    def hook(module: torch.nn.Module, args: object, output: Tensor) -> Tensor:
        if copies > 1:
            output = output.repeat(copies, *([1] * (output.dim() - 1)))
        shape = (mask.shape[0], mask.shape[1]) + (1,) * (output.dim() - 2)
        return output * mask.view(shape).to(output.dtype)

    return hook


def _logits(im: vizkit.Instrumented, module: torch.nn.Module, x: Tensor, mask: Tensor, copies: int) -> Tensor:
    handle = module.register_forward_hook(_zeroing_hook(mask, copies))
    try:
        with torch.no_grad(), im.configured(layers=None, switches=False):
            return im(x).float()
    finally:
        handle.remove()


def copies_after_the_layer(im: vizkit.Instrumented, module: torch.nn.Module, x: Tensor, units: int) -> bool:
    """Whether the ablated copies can be made *at* the layer (its output repeated, the network
    below it run once per image) instead of at the input: true when nothing computed before the
    layer is used after it with the batch size it had (a skip connection across the layer, a
    reshape by a batch size read earlier). Checked, not assumed: two unablated copies made at the
    layer must give the plain forward's logits on ``x``, or the copies are made at the input."""
    with torch.no_grad(), im.configured(layers=None, switches=False):
        plain = im(x).float()
    try:
        doubled = _logits(im, module, x, torch.ones(2 * x.shape[0], units, device=x.device), copies=2)
    except RuntimeError:  # shapes that do not match downstream: a tensor from before the layer
        return False
    if doubled.shape != (2 * plain.shape[0], *plain.shape[1:]):
        return False
    scale = float(plain.abs().max()) or 1.0
    return all(torch.allclose(half, plain, rtol=1e-4, atol=1e-5 * scale) for half in doubled.split(plain.shape[0]))


def layer_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The module ``name`` (already resolved from an alias); a layer that is an op inside another
    module's forward (F.relu) has no module to zero the output of: a UsageError."""
    modules = dict(model.named_modules())
    if name not in modules:
        raise vizkit.UsageError(f"--ablation cannot zero layer '{name}': it is not a module (an op inside a forward)")
    return modules[name]


def ablate_layer(
    im: vizkit.Instrumented,
    layer: str,
    units: int,
    x: Tensor,
    targets: Tensor,
    classes: Tensor,
    num_classes: int,
    samples_per_forward: int,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy [units, classes] and mean loss [units] on images ``x`` (their model
    classes ``targets``, data classes ``classes``) with each unit's map of ``layer`` zeroed.

    Where :func:`copies_after_the_layer` allows it, the copies are made at the layer: up to
    8 x ``samples_per_forward`` samples after it per forward, as many units as fit, so the network
    below the layer runs on n x units / group images in all; else each copy runs from the input."""
    module = layer_module(im.model, layer)
    n = x.shape[0]
    at_layer = copies_after_the_layer(im, module, x[: min(n, 4)], units)
    if at_layer:
        # the network below the layer runs n x units / group images in all: as many units per
        # forward as the budget of samples after the layer allows, with few images each
        budget = 8 * samples_per_forward
        group = min(units, budget)
        chunk = max(1, min(n, budget // group))
    else:
        chunk = min(n, samples_per_forward)
        group = max(1, samples_per_forward // chunk)
    correct = torch.zeros(units, num_classes, dtype=torch.float64)
    loss = torch.zeros(units, dtype=torch.float64)
    counts = torch.bincount(classes, minlength=num_classes).double()
    chunks = math.ceil(n / chunk)
    bar = vizkit.toolkit.progress_bar(
        total=units * chunks, desc=f"atlas ablation {layer}", unit="units", enabled=progress
    )
    try:
        for start in range(0, n, chunk):
            images = x[start : start + chunk]
            b = images.shape[0]
            wanted_once = targets[start : start + chunk]
            data_class = classes[start : start + chunk].cpu()
            for first in range(0, units, group):
                members = list(range(first, min(units, first + group)))
                mask = torch.ones(len(members) * b, units, device=x.device)
                for g, unit in enumerate(members):
                    mask[g * b : (g + 1) * b, unit] = 0
                if at_layer:
                    logits = _logits(im, module, images, mask, copies=len(members))
                else:
                    batch = images.repeat(len(members), *([1] * (images.dim() - 1)))
                    logits = _logits(im, module, batch, mask, copies=1)
                wanted = wanted_once.repeat(len(members))
                hit = (logits.argmax(1) == wanted).double().view(len(members), b).cpu()
                lost = F.cross_entropy(logits, wanted, reduction="none").double().view(len(members), b).cpu()
                for g, unit in enumerate(members):
                    correct[unit].index_add_(0, data_class, hit[g])
                    loss[unit] += lost[g].sum()
                bar.update(len(members))
    finally:
        bar.close()
    accuracy = torch.where(counts > 0, correct / counts.clamp_min(1), math.nan)
    return accuracy.float().numpy(), (loss / max(n, 1)).float().numpy()


def baseline(
    im: vizkit.Instrumented, x: Tensor, targets: Tensor, classes: Tensor, num_classes: int, samples_per_forward: int
) -> tuple[np.ndarray, float]:
    """Per-class accuracy and mean loss with nothing zeroed."""
    hits, losses = [], []
    with torch.no_grad(), im.configured(layers=None, switches=False):
        for start in range(0, x.shape[0], samples_per_forward):
            logits = im(x[start : start + samples_per_forward]).float()
            wanted = targets[start : start + samples_per_forward]
            hits.append((logits.argmax(1) == wanted).double().cpu())
            losses.append(F.cross_entropy(logits, wanted, reduction="none").double().cpu())
    hit, lost = torch.cat(hits), torch.cat(losses)
    counts = torch.bincount(classes.cpu(), minlength=num_classes).double()
    correct = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, classes.cpu(), hit)
    accuracy = torch.where(counts > 0, correct / counts.clamp_min(1), math.nan)
    return accuracy.float().numpy(), float(lost.mean())
