"""Does a unit matter? Its map zeroed (NetDissect / dissect's ablation), the change in per-class
accuracy and in the loss on N held-out labelled images.

Batched: a forward runs G copies of a chunk of images, copy g with unit u_g's map zeroed at the
layer (a forward hook multiplies the layer's output by a per-sample mask), so G units cost one
forward of G x chunk images. The rest of the network is re-run for every unit: the price of
working on any model, not only sequential ones. Finished layers are kept for ``--resume``.
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
    classes: list[int]  # the data class of each (index into ``images.classes``)
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


def _zeroing_hook(mask: Tensor):
    def hook(module: torch.nn.Module, args: object, output: Tensor) -> Tensor:
        shape = (mask.shape[0], mask.shape[1]) + (1,) * (output.dim() - 2)
        return output * mask.view(shape).to(output.dtype)

    return hook


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
    classes ``targets``, data classes ``classes``) with each unit's map of ``layer`` zeroed."""
    module = layer_module(im.model, layer)
    n = x.shape[0]
    group = max(1, samples_per_forward // max(n, 1))
    chunk = min(n, samples_per_forward)
    correct = torch.zeros(units, num_classes, dtype=torch.float64)
    loss = torch.zeros(units, dtype=torch.float64)
    counts = torch.bincount(classes, minlength=num_classes).double()
    bar = vizkit.toolkit.progress_bar(total=units, desc=f"atlas ablation {layer}", unit="units", enabled=progress)
    try:
        for first in range(0, units, group):
            members = list(range(first, min(units, first + group)))
            for start in range(0, n, chunk):
                images = x[start : start + chunk]
                b = images.shape[0]
                batch = images.repeat(len(members), *([1] * (images.dim() - 1)))
                mask = torch.ones(len(members) * b, units, device=x.device)
                for g, unit in enumerate(members):
                    mask[g * b : (g + 1) * b, unit] = 0
                handle = module.register_forward_hook(_zeroing_hook(mask))
                try:
                    with torch.no_grad(), im.configured(layers=None, switches=False):
                        logits = im(batch).float()
                finally:
                    handle.remove()
                wanted = targets[start : start + chunk].repeat(len(members))
                hit = (logits.argmax(1) == wanted).double().view(len(members), b).cpu()
                lost = F.cross_entropy(logits, wanted, reduction="none").double().view(len(members), b).cpu()
                data_class = classes[start : start + chunk].cpu()
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
