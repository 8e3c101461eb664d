"""Model-parameter randomization (Adebayo et al. 2018): which parts of a model are re-drawn, in
which order, and the randomized copies themselves.

A *step* is one part of the model re-drawn at once: a layer with weights (a convolution, a linear
or a normalisation layer), or on deep models a block of them. Steps run from the logits down,
in the reverse of the order the forward first calls them. *Cascading* randomization re-draws the
first k steps (the top k); *independent* randomization re-draws step k alone.

A step's weights are re-drawn with the layer's own initialiser (``reset_parameters()``, what
torch itself calls when the layer is built: Kaiming-uniform for convolutions and linear layers,
ones and zeros with fresh running statistics for batch norm) from a generator seeded by the run's
seed and the layer's name, so a layer gets the same weights in both modes and in every run with
that seed. A layer without ``reset_parameters`` gets Gaussian weights of its trained weights'
mean and standard deviation. The caller's model is never touched: the copy shares every tensor of
the layers it keeps and holds new tensors for those it re-draws.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import vizkit
from vizkit.engine import hook_free_copy

MODES = ("cascading", "independent")
MAX_LEAF_STEPS = 16  # models with at most this many layers with weights get a step per layer
MIN_BLOCK_STEPS = 8  # deeper ones: the shallowest module depth giving at least this many blocks
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


@dataclass(frozen=True)
class Step:
    """One part of the model re-drawn at once: its name in figures and ``result.json``, and the
    modules (by name) whose own weights it re-draws."""

    name: str
    modules: tuple[str, ...]


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """``cascading,independent`` as a list of randomization modes, in that order."""
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    names = {str(p).strip().lower() for p in parts if str(p).strip()}
    unknown = sorted(names - set(MODES))
    if unknown:
        raise vizkit.UsageError(f"unknown randomization '{unknown[0]}' in --randomize; use {', '.join(MODES)}")
    if not names:
        raise vizkit.UsageError("--randomize needs cascading, independent or both")
    return [mode for mode in MODES if mode in names]


def _call_order(model: nn.Module, x: Tensor) -> list[str]:
    """Module names in the order one forward of ``x`` first calls them."""
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(lambda m, a, n=name: order.append(n)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


def _weighted(model: nn.Module, called: list[str]) -> list[str]:
    """The called modules that own weights themselves (not through children), in call order."""
    return [name for name in called if any(True for _ in model.get_submodule(name).parameters(recurse=False))]


def steps_for(model: nn.Module, x: Tensor, layers: str | Sequence[str] = "auto") -> list[Step]:
    """The steps of a randomization of ``model``, top (logits) first.

    ``layers`` "auto": a step per layer with weights when the model has at most
    ``MAX_LEAF_STEPS`` of them, else a step per block: the modules at the shallowest depth of the
    module tree that gives ``MIN_BLOCK_STEPS`` or more (ResNet-50: its 16 bottlenecks, the stem
    and the classifier); a normalisation layer alone joins the step before it (ResNet's ``bn1``
    joins ``conv1``). Otherwise module names (a block re-draws every layer inside it), ordered
    top first whatever order they are given in."""
    called = _call_order(hook_free_copy(model).eval(), x[:1])
    weighted = _weighted(model, called)
    if not weighted:
        raise vizkit.UsageError("the model has no layer with weights to randomize")
    if layers != "auto":
        return _named_steps(model, called, [layers] if isinstance(layers, str) else list(layers))
    if len(weighted) <= MAX_LEAF_STEPS:
        groups = [[name] for name in weighted]
    else:
        groups = _blocks(weighted)
    merged: list[list[str]] = []
    for group in groups:
        alone_norm = all(isinstance(model.get_submodule(n), NORMS) for n in group)
        if merged and alone_norm:
            merged[-1].extend(group)
        else:
            merged.append(list(group))
    steps = [Step("+".join(_block_names(group)), tuple(group)) for group in merged]
    return steps[::-1]


def _blocks(weighted: list[str]) -> list[list[str]]:
    """The weighted layers grouped by their ancestor at the shallowest depth giving at least
    ``MIN_BLOCK_STEPS`` groups (a layer shallower than that depth is a group of its own)."""
    deepest = max(name.count(".") + 1 for name in weighted)
    for depth in range(1, deepest + 1):
        groups: dict[str, list[str]] = {}
        for name in weighted:
            groups.setdefault(".".join(name.split(".")[:depth]), []).append(name)
        if len(groups) >= MIN_BLOCK_STEPS or depth == deepest:
            return list(groups.values())
    raise AssertionError("unreachable")


def _block_names(group: list[str]) -> list[str]:
    """How a step is named: its layers' longest common module prefix when they share one (a
    block), else the layers themselves."""
    if len(group) == 1:
        return group
    parts = [name.split(".") for name in group]
    common: list[str] = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    return [".".join(common)] if common else group


def _named_steps(model: nn.Module, called: list[str], names: list[str]) -> list[Step]:
    """``--layers``: each name a step (its module and every layer with weights inside it)."""
    known = dict(model.named_modules())
    steps: list[tuple[int, Step]] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name not in known or not name:
            close = [n for n in known if n and n.endswith(name)][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise vizkit.UsageError(
                f"--layers: '{name}' is not a module of the model{hint}; `vizkit layers` lists them"
            )
        inside = [n for n in called if n == name or n.startswith(name + ".")]
        own = [n for n in inside if any(True for _ in model.get_submodule(n).parameters(recurse=False))]
        if not own:
            raise vizkit.UsageError(
                f"--layers: module '{name}' has no weights that a forward uses: there is nothing to randomize"
            )
        steps.append((called.index(inside[0]), Step(name, tuple(own))))
    if not steps:
        raise vizkit.UsageError("--layers needs at least one module name, or auto")
    modules = [m for _, step in steps for m in step.modules]
    if len(set(modules)) != len(modules):
        raise vizkit.UsageError("--layers: two of the modules given overlap (one is inside the other)")
    return [step for _, step in sorted(steps, key=lambda item: item[0], reverse=True)]


def layer_seed(seed: int, name: str) -> int:
    """The seed a layer's new weights are drawn from: the run's seed and the layer's name."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _redraw(module: nn.Module, seed: int) -> None:
    """``module``'s own parameters and buffers replaced by new tensors holding re-drawn weights
    (the tensors it held, shared with the caller's model, are not written)."""
    parameters = dict(module.named_parameters(recurse=False))
    for name, value in parameters.items():
        setattr(module, name, nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad))
    for name, buffer in list(module.named_buffers(recurse=False)):
        module._buffers[name] = buffer.clone()
    devices = [p.device for p in module.parameters(recurse=False) if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=list(dict.fromkeys(devices))):
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        with torch.no_grad():
            for name, old in parameters.items():
                new = getattr(module, name)
                spread = float(old.float().std()) if old.numel() > 1 else 0.0
                new.normal_(float(old.float().mean()), spread or 1.0)


def randomized(model: nn.Module, steps: Sequence[Step], seed: int) -> nn.Module:
    """A copy of ``model`` (eval mode) with every module of ``steps`` re-drawn; the caller's
    model, its weights, mode and hooks are left as they were."""
    copy = hook_free_copy(model).eval()
    for step in steps:
        for name in step.modules:
            _redraw(copy.get_submodule(name), layer_seed(seed, name))
    return copy


def variants(steps: Sequence[Step], mode: str) -> list[list[Step]]:
    """What each randomized model re-draws, one list per step: the top k steps (cascading) or
    step k alone (independent)."""
    if mode == "cascading":
        return [list(steps[: k + 1]) for k in range(len(steps))]
    return [[step] for step in steps]
