"""Projection rules: what a ReLU and a normalisation layer do to the signal going down.

A rule is one class. The paper's deconvnet rectifies the signal at every ReLU (and smooth
rectifier: SiLU, GELU, Hardswish, ...), passes it through normalisation unchanged and holds gates
(the sigmoid of a squeeze-and-excitation block, a factor of a product) constant; guided back-propagation (Springenberg et al. 2015) also keeps
only units that were active going up; the plain gradient (Simonyan et al. 2014) is ordinary
back-propagation. Every other op (convolution, pooling with switches, concatenation, ...) is
reversed the same way under all rules.

Both projection paths read the same object: the autograd path swaps each ReLU for
:meth:`ProjectionRule.autograd_relu` and each normalisation for
:meth:`ProjectionRule.autograd_normalisation` during the forward, and the explicit path calls
:meth:`ProjectionRule.relu_down` and reads :attr:`ProjectionRule.passes_normalisation` when it
reverses a tape. A plugin adds a rule by registering an instance through the
``register_rules`` hook; it is then a valid ``--rule`` everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from vizkit.engine import ops
from vizkit.errors import UsageError


class _RuleReLU(torch.autograd.Function):
    """ReLU going up; the rule's :meth:`~ProjectionRule.relu_down` going down."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rule: ProjectionRule) -> Tensor:
        ctx.rule = rule
        if rule.uses_forward_input:
            ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None]:
        forward_input = ctx.saved_tensors[0] if ctx.rule.uses_forward_input else None
        return ctx.rule.relu_down(grads[0], forward_input), None


class _RuleReLUInPlace(torch.autograd.Function):
    """An in-place ReLU (``x.relu_()``, ``inplace=True``) with the rule's backward: it rectifies
    ``x`` itself, as the model's own forward does. An out-of-place stand-in would leave ``x``
    unrectified for any code that reads it through another reference (``x.relu_()`` as a
    statement, a skip connection holding the same tensor), so the projection's forward would
    compute other activations than the recorded one, silently."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rule: ProjectionRule) -> Tensor:
        ctx.rule = rule
        ctx.forward_input = x.detach().clone() if rule.uses_forward_input else None  # before the write
        ctx.mark_dirty(x)
        return x.clamp_(min=0)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None]:
        return ctx.rule.relu_down(grads[0], ctx.forward_input), None


class _RuleActivation(torch.autograd.Function):
    """A point-wise activation going up (``fn``, out of place); ``down(grad, forward_input)``
    going down. With ``in_place`` it overwrites ``x``, as the model's own call does."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        fn: Callable[[Tensor], Tensor],
        down: Callable[[Tensor, Tensor | None], Tensor],
        keep: bool,
        in_place: bool,
    ) -> Tensor:
        ctx.down = down
        ctx.forward_input = x.detach().clone() if keep else None  # before an in-place write
        if not in_place:
            return fn(x)
        ctx.mark_dirty(x)
        return x.copy_(fn(x))

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None, None, None, None]:
        return ctx.down(grads[0], ctx.forward_input), None, None, None, None


def _gradient(fn: Callable[[Tensor], Tensor], x: Tensor | None) -> Callable[[Tensor], Tensor]:
    """The signal back-propagated through ``fn`` at ``x`` (its true derivative)."""

    def through(signal: Tensor) -> Tensor:
        assert x is not None
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(probe), probe, signal)
        return grad

    return through


class ProjectionRule:
    """How the signal crosses ReLUs and normalisation on its way down to pixel space.

    Subclass it, give it a ``name`` (the ``--rule`` value), a ``title`` (how figures name its
    pictures) and a ``description``, and implement :meth:`relu_down`. Set
    ``uses_forward_input = False`` when :meth:`relu_down` ignores the forward input (so it is
    not kept in memory), and ``passes_normalisation = False`` to differentiate through
    normalisation layers instead of passing the signal through them.

    The ops of later convnets: a smooth rectifier (SiLU, GELU, Hardswish, ReLU6, ...) is crossed
    by :meth:`rectifier_down` (by default as a ReLU: :meth:`relu_down`). A product passes each
    factor the signal times the other factor; while ``holds_gates``, a factor that is a gate (the
    output of a sigmoid, hardsigmoid or tanh: squeeze-and-excitation) is held constant at its
    forward value and gets none, so the branch that computed it is no path back to pixels. A
    gate met directly (not as a factor) is crossed by its own derivative under every rule.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = "Projections"
    description: ClassVar[str] = ""
    uses_forward_input: ClassVar[bool] = True
    passes_normalisation: ClassVar[bool] = True
    holds_gates: ClassVar[bool] = True
    plugin: str = ""  # set when registered: the plugin that contributed the rule

    def relu_down(self, signal: Tensor, forward_input: Tensor | None) -> Tensor:
        """The signal below a ReLU, given the signal above it and the ReLU's forward input."""
        raise NotImplementedError

    def rectifier_down(
        self, signal: Tensor, forward_input: Tensor | None, gradient: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """The signal below a smooth rectifier (SiLU, GELU, Hardswish, ...), given the signal
        above it, its forward input and ``gradient`` (back-propagation through it): as below a
        ReLU unless a rule says otherwise."""
        return self.relu_down(signal, forward_input)

    def autograd_rectifier(self, fn: Callable[[Tensor], Tensor], x: Tensor, in_place: bool) -> Tensor:
        """A smooth rectifier ``fn`` (out of place) on ``x`` during the autograd projection's
        forward, with :meth:`rectifier_down` as its backward; ``in_place``: it overwrites ``x``."""
        keep = self.uses_forward_input

        def down(grad: Tensor, forward_input: Tensor | None) -> Tensor:
            return self.rectifier_down(grad, forward_input, _gradient(fn, forward_input))

        return _RuleActivation.apply(x, fn, down, keep, in_place and not (x.is_leaf and x.requires_grad))

    def autograd_relu(self, func: Callable[..., Tensor], args: tuple, kwargs: dict) -> Tensor:
        """The ReLU call during a forward whose backward is this rule's projection; an in-place
        call stays in place (the model may read the rectified tensor through another name)."""
        x = ops.first_input(args, kwargs)
        in_place = ops.RELU.in_place(func, args, kwargs)
        if in_place and not (x.is_leaf and x.requires_grad):  # autograd refuses to write to such a leaf
            return _RuleReLUInPlace.apply(x, self)
        return _RuleReLU.apply(x, self)

    def autograd_normalisation(self, func: Callable[..., Tensor], args: tuple, kwargs: dict) -> Tensor:
        """A normalisation call during such a forward: its output going up and, when the rule
        passes normalisation, the identity going down."""
        if not self.passes_normalisation:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        with torch.no_grad():
            normalised = func(*args, **kwargs)
        return x + (normalised - x).detach()

    def __repr__(self) -> str:
        return f"<projection rule {self.name!r}>"


class DeconvnetRule(ProjectionRule):
    """The paper's deconvnet: rectify the signal; the forward input plays no part."""

    name = "deconvnet"
    title = "Deconvnet projections"
    description = "the paper's rule: rectify the signal at each ReLU, pass normalisation"
    uses_forward_input = False

    def relu_down(self, signal: Tensor, forward_input: Tensor | None) -> Tensor:
        return signal.clamp(min=0)


class GuidedRule(ProjectionRule):
    """Guided back-propagation: rectify the signal and keep units that were active going up."""

    name = "guided"
    title = "Guided-backprop projections"
    description = "guided back-propagation: rectified signal at units active going up"

    def relu_down(self, signal: Tensor, forward_input: Tensor | None) -> Tensor:
        assert forward_input is not None
        return signal.clamp(min=0) * (forward_input > 0)


class GradientRule(ProjectionRule):
    """Plain back-propagation: the gradient of the activation with respect to the input."""

    name = "gradient"
    title = "Gradients"
    description = "plain gradient of the activation (saliency), through normalisation too"
    passes_normalisation = False
    holds_gates = False

    def rectifier_down(
        self, signal: Tensor, forward_input: Tensor | None, gradient: Callable[[Tensor], Tensor]
    ) -> Tensor:
        return gradient(signal)

    def relu_down(self, signal: Tensor, forward_input: Tensor | None) -> Tensor:
        assert forward_input is not None
        return signal * (forward_input > 0)

    def autograd_relu(self, func: Callable[..., Tensor], args: tuple, kwargs: dict) -> Tensor:
        return func(*args, **kwargs)  # autograd's own ReLU backward is this rule


BUILTIN_RULES: tuple[type[ProjectionRule], ...] = (DeconvnetRule, GuidedRule, GradientRule)


def resolve_rule(rule: str | ProjectionRule, known: Mapping[str, ProjectionRule] | None = None) -> ProjectionRule:
    """A rule object from a rule or a name; names are looked up in ``known`` (a registry,
    e.g. ``vizkit.framework.get_app().rules``), or among the built-in rules when it is None."""
    if isinstance(rule, ProjectionRule):
        return rule
    table = dict(known) if known is not None else {cls.name: cls() for cls in BUILTIN_RULES}
    if rule not in table:
        raise UsageError(f"unknown projection rule '{rule}'; use one of {', '.join(table)}")
    return table[rule]
