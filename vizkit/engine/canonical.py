"""A canonical copy of a model: private, hook-free, one ``nn.ReLU`` module per ReLU call.

Libraries that attribute through module hooks (captum's GuidedBackprop, Deconvolution,
GuidedGradCam) see a ReLU only when an ``nn.ReLU`` module makes it, and see a reused module once
per forward: functional ReLUs (``F.relu`` in GoogLeNet and Inception, ``x.relu_()``) are treated
as plain ones and in-place ones confuse their hooks, and the maps come out wrong without a word.
:class:`CanonicalModel` (zennit's canonizer idea) is a copy of the model sharing its parameters
(:func:`hook_free_copy`: nothing of the caller's model is hooked or changed) whose every ReLU
call, whatever makes it, goes to a fresh, non-in-place ``nn.ReLU`` of its own, in call order.
ReLU calls are recognised through the op table (:mod:`vizkit.engine.ops`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from vizkit.engine import ops
from vizkit.errors import UsageError, VizkitError


class _PlainReLU(nn.Module):
    """Stands in for the copy's nn.ReLU modules (not an nn.ReLU, so hook-based attribution
    leaves it alone); its ReLU call is routed like every other one."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)


class _ReluRouter(TorchFunctionMode):
    """During one forward of a :class:`CanonicalModel`: the k-th ReLU call, whatever makes it,
    runs as the model's k-th fresh ``nn.ReLU`` module (not in place)."""

    def __init__(self, owner: CanonicalModel) -> None:
        super().__init__()
        self.owner = owner
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not isinstance(ops.op_of(func), ops.ReLU):
            return func(*args, **kwargs)
        x = ops.first_input(args, kwargs)
        index, self.calls = self.calls, self.calls + 1
        relus = self.owner.relus
        if self.owner.counting:
            relus.append(nn.ReLU())
        elif index >= len(relus):
            raise VizkitError(
                f"the model made more ReLU calls in one forward than the {len(relus)} of its first forward; "
                "captum's ReLU rules need a fixed graph"
            )
        return relus[index](x)  # this mode is off inside its handler: the module's own relu runs plainly


class CanonicalModel(nn.Module):
    """A hook-free copy of ``model`` (sharing its parameters) whose ReLU calls are each a
    distinct, non-in-place ``nn.ReLU`` module, outputting the logits or, with ``probability``,
    their softmax. Build it with :meth:`build`."""

    def __init__(self, model: nn.Module, probability: bool) -> None:
        super().__init__()
        self.model = model
        self.relus = nn.ModuleList()
        self.probability = probability
        self.counting = False
        self.layer_calls = 0  # how often the layer given to build() ran in its probe forward
        self.probe_output: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """The copy's logits (or their softmax) for ``x``, every ReLU call routed.

        Args:
            x: the input batch.
        """
        with _ReluRouter(self):
            logits = self.model(x)
        return logits.softmax(1) if self.probability else logits

    @classmethod
    def build(cls, model: nn.Module, x: Tensor, probability: bool = False, layer: str | None = None) -> CanonicalModel:
        """The copy for ``model``. One probe forward of ``x[:1]`` counts its ReLU calls and the
        calls of module ``layer`` (a UsageError when the copy has no such module).

        Args:
            model: the model to copy (left untouched; its parameters are shared).
            x: an input batch; its first image runs the probe forward.
            probability: output the softmax of the logits instead of the logits.
            layer: a module whose calls in the probe forward are counted (``layer_calls``).
        """
        duplicate = hook_free_copy(model).eval()
        for name, module in list(duplicate.named_modules(remove_duplicate=False)):
            if ops.RELU.owns(module):  # every occurrence of a reused one, too
                parent, _, child = name.rpartition(".")
                setattr(duplicate.get_submodule(parent), child, _PlainReLU())
        canonical = cls(duplicate, probability)
        handle = None
        if layer is not None:

            def count(*_: Any) -> None:
                canonical.layer_calls += 1

            handle = canonical.layer(layer).register_forward_hook(count)
        canonical.counting = True
        try:
            with torch.no_grad():
                output = canonical(x[:1])
        finally:
            canonical.counting = False
            if handle is not None:
                handle.remove()
        canonical.probe_output = output
        return canonical.to(x.device)

    def layer(self, name: str) -> nn.Module:
        """The copy's module ``name`` (a UsageError when it has none).

        Args:
            name: the module's name in the original model.
        """
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            raise UsageError(
                f"--layer '{name}' is not a module of the model (a functional call or a repeated one); captum's "
                "layer methods and the deconvnet column hook a module: pick one from `vizkit layers MODEL`"
            ) from None


_HOOK_KINDS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_FLAGS = ("_forward_hooks_always_called", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


def _is_vizkit_hook(hook: Any) -> bool:
    return str(getattr(hook, "__module__", "") or "").startswith("vizkit.")


def hook_free_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` sharing its parameters and buffers, without the hooks vizkit's
    instrumentation put on it (the user's own hooks are copied); the model is not touched.

    Args:
        model: the model to copy.
    """
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    for module in model.modules():
        kept: set[int] = set()
        for kind in _HOOK_KINDS:
            hooks = getattr(module, kind, None)
            if hooks:
                memo[id(hooks)] = OrderedDict((k, v) for k, v in hooks.items() if not _is_vizkit_hook(v))
                kept.update(memo[id(hooks)])
        for kind in _HOOK_FLAGS:  # per-hook flags, keyed like the hooks
            flags = getattr(module, kind, None)
            if flags:
                memo[id(flags)] = OrderedDict((k, v) for k, v in flags.items() if k in kept)
    try:
        return copy.deepcopy(model, memo)
    except Exception as error:  # an attribute deepcopy cannot handle
        raise VizkitError(f"cannot copy the model for captum ({type(error).__name__}: {error})") from None
