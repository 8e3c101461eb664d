"""The ops of modern classification convnets (EfficientNet, MobileNetV3, ConvNeXt, RegNet,
ShuffleNet, CSP and Ghost blocks), registered below like the built-in ones.

What each does going down (the README's "The deconvnet projection" has the table):

* smooth rectifiers (SiLU, GELU, Hardswish, Mish, ReLU6 / hardtanh, leaky ReLU, ELU, SELU,
  CELU): the rule's :meth:`~vizkit.engine.rules.ProjectionRule.rectifier_down`, like a ReLU (the
  deconvnet rectifies the signal, guided back-propagation also keeps units whose input was
  positive, the gradient is the activation's own derivative);
* differences and quotients: as back-propagation (``a - b``: ``b`` gets minus the signal);
* products (``x * g``, SE gates, layer scale): each factor gets the signal times the other
  factor's forward value, except a gate (the output of a sigmoid, hardsigmoid or tanh), held
  constant under a rule that :attr:`~vizkit.engine.rules.ProjectionRule.holds_gates` (the
  deconvnet, guided): no signal goes back through the branch that computed it (the gradient
  differentiates it);
* gates reached directly (a sigmoid on the main path): their own derivative;
* layer, group and instance normalisation: as batch normalisation (passed through, or
  differentiated under a rule that does not pass normalisation);
* channel and layout ops (permute, transpose, slicing, chunk / split, channel shuffle, mean,
  narrow, pad, ...): their exact adjoint (the signal put back where its values came from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vizkit.engine.ops.base import Node, Op, first_input, parse_signature, register_op
from vizkit.engine.ops.builtin import Normalisation
from vizkit.engine.ops.in_place import always_in_place

if TYPE_CHECKING:
    from vizkit.engine.deconv import Tape
    from vizkit.engine.incremental import IncrementalOcclusion, _Call, _Window
    from vizkit.engine.rules import ProjectionRule


class Elementwise(Op):
    """An element-wise op of maps and constants (a product, a difference, a quotient):
    incremental occlusion takes the union of its maps' windows, as for an addition, where the
    maps and constants broadcast along the channels only (layer scale ``x * gamma``, ``x *
    sigmoid(x)``); a factor that depends on the whole map (an SE block's gate) makes its output
    the whole map."""

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        return occlusion.union(call, windows)


@dataclass(frozen=True)
class ForwardInput:
    """The forward record of an in-place call: its input before the call overwrote it."""

    value: Tensor


def vjp(fn: Callable[[Tensor], Tensor], x: Tensor, signal: Tensor) -> Tensor:
    """``signal`` back-propagated through ``fn`` at ``x`` (the op's true derivative)."""
    with torch.enable_grad():
        probe = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(probe), probe, signal)
    return grad


def _is_in_place(func: Callable, p: dict[str, Any]) -> bool:
    return always_in_place(func) or bool(p.get("inplace"))


class Activation(Op):
    """A point-wise activation other than the ReLU; ``function`` computes it out of place."""

    tape_only_record = True  # the in-place input copy is for the explicit reverse pass only

    function: ClassVar[Callable[..., Tensor]]
    pointwise = True

    def out_of_place(self, args: tuple, kwargs: dict) -> Callable[[Tensor], Tensor]:
        """The call as a function of its input alone, never in place."""
        p = self.bind(args, kwargs)
        extra = {k: v for k, v in p.items() if k not in ("input", "inplace")}
        return lambda t: type(self).function(t, **extra)

    def replay_args(self, func: Callable, args: tuple) -> tuple:
        """Never in place on a replay (``nn.Hardswish`` passes ``inplace`` by position): the
        replayed input may be a cached tensor others read."""
        assert self.signature is not None
        names = list(self.signature.parameters)
        if "inplace" in names and len(args) > names.index("inplace"):
            at = names.index("inplace")
            return (*args[:at], False, *args[at + 1 :])
        return args

    def in_place(self, func: Callable, args: tuple, kwargs: dict) -> bool:
        """Whether the call overwrites its input (``inplace=True``, ``x.silu_()``)."""
        return _is_in_place(func, self.bind(args, kwargs))

    def forward(
        self, func: Callable, args: tuple, kwargs: dict, rule: ProjectionRule | None, record: bool
    ) -> tuple[Any, Any]:
        if rule is None and not record:  # a plain recorded forward: nothing to keep, no binding
            return func(*args, **kwargs), None
        in_place = self.in_place(func, args, kwargs)
        if rule is not None:
            return self.autograd(rule, self.out_of_place(args, kwargs), first_input(args, kwargs), in_place), None
        kept = ForwardInput(first_input(args, kwargs).detach().clone()) if in_place and record else None
        return func(*args, **kwargs), kept

    def autograd(self, rule: ProjectionRule, fn: Callable[[Tensor], Tensor], x: Tensor, in_place: bool) -> Tensor:
        """The call during the autograd projection's forward (the rule's backward)."""
        return fn(x)


class Rectifier(Activation):
    """A smooth or bounded rectifier: crossed as the rule crosses a ReLU
    (:meth:`~vizkit.engine.rules.ProjectionRule.rectifier_down`)."""

    def autograd(self, rule: ProjectionRule, fn: Callable[[Tensor], Tensor], x: Tensor, in_place: bool) -> Tensor:
        return rule.autograd_rectifier(fn, x, in_place)

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        x, rule, fn = first_input(args, kwargs), tape.rule, self.out_of_place(args, kwargs)
        before = _before(x, out, record) if rule.uses_forward_input else None
        if rule.uses_forward_input and before is None:
            return Node.refusal(self, [tape.index(x)], f"{self.name} in place without its recorded input")

        def down(s: Tensor) -> list[Tensor]:
            return [rule.rectifier_down(s, before, lambda g: vjp(fn, before, g))]  # type: ignore[arg-type]

        return Node(self, [tape.index(x)], down)


class Gate(Activation):
    """A squashing function (sigmoid, hardsigmoid, tanh) whose output gates a product (SE
    blocks): :class:`Mul` holds such a factor constant under a rule that ``holds_gates``.
    Reached by the signal directly, it is crossed by its own derivative."""

    def forward(
        self, func: Callable, args: tuple, kwargs: dict, rule: ProjectionRule | None, record: bool
    ) -> tuple[Any, Any]:
        output, kept = super().forward(func, args, kwargs, None, record and rule is None)
        if rule is not None and isinstance(output, Tensor):
            setattr(output, GATE_MARK, True)  # the autograd path's products hold it constant
        return output, kept

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        x, fn = first_input(args, kwargs), self.out_of_place(args, kwargs)
        before = _before(x, out, record)
        if before is None:
            return Node.refusal(self, [tape.index(x)], f"{self.name} in place without its recorded input")
        return Node(self, [tape.index(x)], lambda s: [vjp(fn, before, s)])


GATE_MARK = "_vizkit_gate"  # set on a gate's output during the autograd projection's forward


def _before(x: Tensor, out: Tensor, record: Any) -> Tensor | None:
    """A call's input going up: recorded by an in-place call, else still ``x``."""
    if isinstance(record, ForwardInput):
        return record.value
    return None if out is x else x.detach().clone()


def _activation(
    kind: type[Activation], name: str, function: Callable[..., Tensor], signature: str, owner: Any, *calls: str
) -> Activation:
    """One ``kind`` (:class:`Rectifier` or :class:`Gate`) op for the torch activation ``name``."""
    cls = type(
        f"{name.title().replace('_', '')}Op",
        (kind,),
        {
            "name": name,
            "calls": calls or (name,),
            "function": staticmethod(function),
            "signature": parse_signature(signature),
            "owner": owner,
        },
    )
    return cls()


class Mul(Elementwise):
    """A product (SE gates, layer scale): each factor gets the signal times the other factor's
    forward value, summed to its shape (a gate factor then stops it: :class:`Gate`)."""

    tape_only_record = True  # the in-place input copy is for the explicit reverse pass only

    name = "mul"
    calls = ("mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply")
    product = True
    signature = parse_signature("(input, other, out=None)")

    def forward(
        self, func: Callable, args: tuple, kwargs: dict, rule: ProjectionRule | None, record: bool
    ) -> tuple[Any, Any]:
        if rule is None and not record:  # a plain recorded forward: nothing to keep, no binding
            return func(*args, **kwargs), None
        p = self.bind(args, kwargs)
        in_place = _is_in_place(func, p) and isinstance(p["input"], Tensor)
        if rule is not None:
            if rule.holds_gates and any(getattr(v, GATE_MARK, False) for v in (p["input"], p["other"])):
                held = [_detach_gate(v, in_place and i == 0) for i, v in enumerate(args)]
                return func(*held, **{k: _detach_gate(v, False) for k, v in kwargs.items()}), None
            return func(*args, **kwargs), None
        kept = ForwardInput(p["input"].detach().clone()) if in_place and record else None
        return func(*args, **kwargs), kept

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        p = self.bind(args, kwargs)
        a, b = p["input"], p["other"]
        if isinstance(a, Tensor) and a is out:  # in place: the factor as it was
            if not isinstance(record, ForwardInput):
                return Node.refusal(self, [tape.index(a)], "mul in place without its recorded input")
            fa: Any = record.value
        else:
            fa = _held(tape, a)
        fb = _held(tape, b)
        gates = [tape.rule.holds_gates and _is_gate(tape, t) for t in (a, b)]

        def split(s: Tensor) -> list[Tensor | None]:
            ga = (s * fb).sum_to_size(a.shape) if isinstance(a, Tensor) and not gates[0] else None
            gb = (s * fa).sum_to_size(b.shape) if isinstance(b, Tensor) and not gates[1] else None
            return [ga, gb]

        return Node(self, [tape.index(a), tape.index(b)], split)


class Sub(Elementwise):
    """A difference ``a - alpha * b``: ``a`` gets the signal, ``b`` minus it (summed to shape)."""

    name = "sub"
    calls = ("sub", "sub_", "__sub__", "__isub__", "subtract")
    signature = parse_signature("(input, other, alpha=1, out=None)")

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        p = self.bind(args, kwargs)
        a, b, alpha = p["input"], p["other"], p["alpha"]

        def split(s: Tensor) -> list[Tensor | None]:
            ga = s.sum_to_size(a.shape) if isinstance(a, Tensor) else None
            gb = -(s.sum_to_size(b.shape) * alpha) if isinstance(b, Tensor) else None
            return [ga, gb]

        return Node(self, [tape.index(a), tape.index(b)], split)


class Div(Elementwise):
    """A quotient ``a / b``: ``a`` gets the signal over ``b``, a signal ``b`` minus the signal
    times ``a / b**2`` (both at their forward values), as back-propagation does."""

    name = "div"
    calls = ("div", "__truediv__", "divide", "true_divide")
    signature = parse_signature("(input, other, rounding_mode=None, out=None)")

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        p = self.bind(args, kwargs)
        a, b = p["input"], p["other"]
        if p["rounding_mode"] is not None:
            return Node.refusal(self, [tape.index(a)], f"div(rounding_mode='{p['rounding_mode']}')")
        fa, fb = _held(tape, a), _held(tape, b)

        def split(s: Tensor) -> list[Tensor | None]:
            ga = (s / fb).sum_to_size(a.shape) if isinstance(a, Tensor) else None
            gb = (-s * fa / fb**2).sum_to_size(b.shape) if isinstance(b, Tensor) else None
            return [ga, gb]

        return Node(self, [tape.index(a), tape.index(b)], split)


def _detach_gate(value: Any, written: bool) -> Any:
    """A gate factor held constant (detached) on the autograd path, unless the call writes to it."""
    return value.detach() if getattr(value, GATE_MARK, False) and not written else value


def _is_gate(tape: Tape, value: Any) -> bool:
    """Whether ``value`` is a gate's output (a sigmoid's, say) on the tape."""
    index = tape.index(value)
    return index is not None and isinstance(tape.entries[index].op, Gate)


def _held(tape: Tape, value: Any) -> Any:
    """A factor's forward value, safe from later in-place ops when it is a signal."""
    if not isinstance(value, Tensor):
        return value
    return value.detach().clone() if tape.index(value) is not None else value.detach()


class LayerNorm(Normalisation):
    """Layer normalisation (ConvNeXt, on channels-last maps): as batch normalisation."""

    name = "layer_norm"
    calls = ("layer_norm",)
    owner = nn.LayerNorm
    pointwise = False  # its statistics may span positions
    whole_reason = "layer normalisation over the map's positions"

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """Point-wise in space when the normalised axes (the last ``len(normalized_shape)``) hold
        no rows or columns: a LayerNorm over the channels of a channels-last map (ConvNeXt)."""
        shape = call.args[1] if len(call.args) > 1 else call.kwargs["normalized_shape"]
        first = call.value.dim() - (1 if isinstance(shape, int) else len(shape))
        if any(d >= first for window in windows.values() for d in window.dims):
            return None
        return occlusion.pointwise(call, windows)


class GroupNorm(Normalisation):
    """Group normalisation: as batch normalisation."""

    name = "group_norm"
    calls = ("group_norm",)
    owner = nn.GroupNorm
    pointwise = False  # statistics over each group's whole maps
    whole_reason = "group normalisation: statistics over whole maps"


class InstanceNorm(Normalisation):
    """Instance normalisation: as batch normalisation."""

    name = "instance_norm"
    calls = ("instance_norm",)
    owner = nn.modules.instancenorm._InstanceNorm
    pointwise = False
    whole_reason = "instance normalisation: statistics over whole maps"


class Permute(Op):
    """A permutation of dimensions (channels-last blocks): the signal permuted back."""

    name = "permute"
    calls = ("permute",)
    whole_reason = "a permute that moves the batch axis"

    @staticmethod
    def order(args: tuple, kwargs: dict, ndim: int) -> list[int]:
        """The permutation, each axis in [0, ndim)."""
        rest = list(args[1:]) or [kwargs["dims"]]
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size)) else rest
        return [int(d) % ndim for d in dims]

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        x = first_input(args, kwargs)
        order = self.order(args, kwargs, x.dim())
        inverse = sorted(range(len(order)), key=order.__getitem__)
        return Node(self, [tape.index(x)], lambda s: [s.permute(inverse)])

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """The window permuted with the map (NCHW to channels-last and back): its rows and
        columns go where the permutation takes them; the batch must stay first."""
        order = self.order(call.args, call.kwargs, call.value.dim())
        (window,) = windows.values()
        if order[0] != 0:
            return None
        return occlusion.relayout(index, call, windows, (order.index(window.dims[0]), order.index(window.dims[1])))

    def input_box(self, box: Any, out_shape: torch.Size, in_shape: torch.Size) -> None:
        return None


class Transpose(Op):
    """Two dimensions swapped (channel shuffle written out): swapped back."""

    name = "transpose"
    calls = ("transpose", "swapaxes", "swapdims")
    signature = parse_signature("(input, dim0, dim1)")

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        p = self.bind(args, kwargs)
        x, d0, d1 = p["input"], p["dim0"], p["dim1"]
        return Node(self, [tape.index(x)], lambda s: [s.transpose(d0, d1)])

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """The window transposed with the map (the batch axis must stay put)."""
        p, ndim = self.bind(call.args, call.kwargs), call.value.dim()
        d0, d1 = int(p["dim0"]) % ndim, int(p["dim1"]) % ndim
        (window,) = windows.values()
        if 0 in (d0, d1):
            return None
        swap = {d0: d1, d1: d0}
        return occlusion.relayout(
            index, call, windows, (swap.get(window.dims[0], window.dims[0]), swap.get(window.dims[1], window.dims[1]))
        )

    def input_box(self, box: Any, out_shape: torch.Size, in_shape: torch.Size) -> None:
        return None


class ChannelShuffle(Op):
    """``F.channel_shuffle`` in g groups: undone by a shuffle in C / g groups."""

    name = "channel_shuffle"
    calls = ("channel_shuffle", "native_channel_shuffle")
    signature = parse_signature("(input, groups)")
    owner = nn.ChannelShuffle

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        p = self.bind(args, kwargs)
        x, groups = p["input"], int(p["groups"])
        return Node(self, [tape.index(x)], lambda s: [F.channel_shuffle(s, x.shape[1] // groups)])

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """A shuffle of axis 1 (the channels of an NCHW map) moves no position."""
        return occlusion.pointwise(call, windows) if all(1 not in w.dims for w in windows.values()) else None


class Slice(Op):
    """Indexing (``x[:, :c]``, Ghost blocks): the signal put back where it was taken from."""

    name = "getitem"
    calls = ("__getitem__",)

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        x, index = args[0], args[1]
        shape = x.shape
        parts = index if isinstance(index, tuple) else (index,)
        basic = all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in parts)

        def put_back(s: Tensor) -> list[Tensor]:
            if not basic:  # advanced indexing: repeated indices add up
                return [vjp(lambda t: t[index], s.new_zeros(shape), s)]
            grad = s.new_zeros(shape)
            grad[index] = s
            return [grad]

        return Node(self, [tape.index(x)], put_back)

    def input_box(self, box: Any, out_shape: torch.Size, in_shape: torch.Size) -> None:
        return None

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """Basic indexing that takes every batch entry, row and column (``x[:, :c]``, Ghost
        blocks) keeps the window; an integer index drops its axis, shifting those after it."""
        (window,) = windows.values()
        if len(call.args) != 2 or len(call.parents) != 1:
            return None
        parts = list(call.args[1]) if isinstance(call.args[1], tuple) else [call.args[1]]
        ndim = occlusion.base[call.parents[0]].dim()
        if parts.count(Ellipsis) == 1:
            at = parts.index(Ellipsis)
            parts[at : at + 1] = [slice(None)] * (ndim - len(parts) + 1)
        if len(parts) > ndim or not all(isinstance(part, (int, slice)) for part in parts):
            return None
        parts += [slice(None)] * (ndim - len(parts))
        whole = slice(None)
        if any(parts[d] != whole for d in (0, *window.dims)):
            return None
        dropped = [axis for axis, part in enumerate(parts) if isinstance(part, int)]
        dims = tuple(d - sum(axis < d for axis in dropped) for d in window.dims)
        return occlusion.relayout(index, call, windows, (dims[0], dims[1]))


class Adjoint(Op):
    """Other linear rearrangements (narrow, select, expand, repeat, roll, flip, pad, movedim):
    the signal through their exact adjoint (autograd's, on a zero input)."""

    function: ClassVar[Callable[..., Tensor]]

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        x, rest, function = args[0], args[1:], type(self).function
        shape = x.shape
        return Node(
            self, [tape.index(x)], lambda s: [vjp(lambda t: function(t, *rest, **kwargs), s.new_zeros(shape), s)]
        )

    def input_box(self, box: Any, out_shape: torch.Size, in_shape: torch.Size) -> None:
        return None


class Pad(Adjoint):
    """``F.pad`` (timm's TF-style 'same' padding before a convolution): the adjoint crops the
    signal back; incremental occlusion shifts the window by the padding before it."""

    name = "pad"
    calls = ("pad",)
    function = staticmethod(F.pad)
    signature = parse_signature("(input, pad, mode='constant', value=None)")
    whole_reason = "padding other than a constant one of the rows and columns"

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """A constant padding of the last two axes, when they are the window's rows and columns,
        moves the window down and right by the top and left padding (the padding itself never
        changes); padding of the axes before them (the channels) is applied to the window."""
        p = self.bind(call.args, call.kwargs)
        pad, ndim = [int(v) for v in p["pad"]], call.value.dim()
        (window,) = windows.values()
        if p["mode"] != "constant" or len(call.parents) != 1 or window.dims != (ndim - 2, ndim - 1):
            return None
        if any(v < 0 for v in pad) or len(pad) % 2 or len(pad) > 2 * (ndim - 1):
            return None
        pad += [0] * (4 - len(pad))
        (left, _right, top, _bottom), rest = pad[:4], pad[4:]
        values = window.values
        if any(rest):
            values = F.pad(values, [0, 0, 0, 0, *rest], value=0.0 if p["value"] is None else p["value"])
        return occlusion.shifted(index, window.with_values(values), top, left)


def _adjoint(name: str, function: Callable[..., Tensor]) -> Adjoint:
    return type(f"{name.title()}Op", (Adjoint,), {"name": name, "calls": (name,), "function": staticmethod(function)})()


class Split(Op):
    """chunk / split / unbind (CSP, ShuffleNet): each piece's signal put back in its place."""

    name = "split"
    calls = ("chunk", "split", "split_with_sizes", "tensor_split", "unbind")

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node | None:
        x = first_input(args, kwargs)  # one piece (x.chunk(1)): the whole input; else see reverse_pieces
        return Node(self, [tape.index(x)], lambda s: [s]) if out.shape == x.shape else None

    def reverse_pieces(
        self, tape: Tape, func: Callable, args: tuple, kwargs: dict, output: Any, record: Any
    ) -> list[tuple[Tensor, Node]] | None:
        x = first_input(args, kwargs)
        unbind = getattr(func, "__name__", "") == "unbind"
        dim = kwargs.get("dim", args[1 if unbind else 2] if len(args) > (1 if unbind else 2) else 0)
        dim = int(dim) % x.dim()
        shape, parent, offset, nodes = x.shape, tape.index(x), 0, []
        for piece in output:
            size = 1 if unbind else piece.shape[dim]

            def put_back(s: Tensor, start: int = offset, size: int = size) -> list[Tensor]:
                grad = s.new_zeros(shape)
                grad.narrow(dim, start, size).copy_(s.unsqueeze(dim) if unbind else s)
                return [grad]

            nodes.append((piece, Node(self, [parent], put_back)))
            offset += size
        return nodes

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """A piece along the channels (CSP, ShuffleNet) keeps the window (unbind, which drops
        its axis, recomputes the whole piece)."""
        if getattr(call.func, "__name__", "") == "unbind":
            return None
        (window,) = windows.values()
        dim = call.kwargs.get("dim", call.args[2] if len(call.args) > 2 else 0)
        if not isinstance(dim, int):
            return None
        dim %= call.value.dim()
        if dim == 0 or dim in window.dims:
            return None
        return occlusion.relayout(index, call, windows, window.dims)


class Mean(Op):
    """A mean over dimensions (ShuffleNet's global pool, ``x.mean((2, 3), keepdim=True)`` in SE
    blocks): the signal spread evenly over what was averaged."""

    name = "mean"
    calls = ("mean",)
    signature = parse_signature("(input, dim=None, keepdim=False, dtype=None, out=None)")
    divide: ClassVar[bool] = True
    whole_reason = "a mean over some, not all, of the map's positions"

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """Over exactly the rows and columns: a global pool (the window's change of sum); over
        axes that hold neither (the channels): point-wise in space; else the whole map."""
        p = self.bind(call.args, call.kwargs)
        (window,) = windows.values()
        ndim = occlusion.base[call.parents[0]].dim() if len(call.parents) == 1 else 0
        if p["dim"] is None or not ndim or p["dtype"] is not None:
            return None
        over = sorted({int(d) % ndim for d in _as_list(p["dim"])})
        if 0 in over:
            return None
        if over == sorted(window.dims):
            return occlusion.global_mean(call, windows, tuple(over), bool(p["keepdim"]), self.divide)
        if any(d in window.dims for d in over):
            return None
        dims = window.dims if p["keepdim"] else tuple(d - sum(o < d for o in over) for d in window.dims)
        return occlusion.relayout(index, call, windows, (dims[0], dims[1]))

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        p = self.bind(args, kwargs)
        x, dim, keepdim = p["input"], p["dim"], p["keepdim"]
        shape = x.shape
        dims = sorted(range(x.dim())) if dim is None else sorted(int(d) % x.dim() for d in _as_list(dim))
        count = 1
        for d in dims:
            count *= shape[d]

        def spread(s: Tensor) -> list[Tensor]:
            if not keepdim:
                for d in dims:
                    s = s.unsqueeze(d)
            s = s.expand(shape)
            return [s / count if self.divide else s.clone()]

        return Node(self, [tape.index(x)], spread)

    # input_box: the default's. A map whose rows and columns survive the mean (a mean over the
    # channels: a grey image from RGB) keeps each position's box; a mean over rows or columns
    # changes the map's size, and the default then gives the whole map.


class Sum(Mean):
    """A sum over dimensions: the signal copied to every summand."""

    name = "sum"
    calls = ("sum",)
    signature = parse_signature("(input, dim=None, keepdim=False, dtype=None, out=None)")
    divide = False


def _as_list(dim: Any) -> list[int]:
    return list(dim) if isinstance(dim, (list, tuple, torch.Size)) else [dim]


# ---------------------------------------------------------------------------- the table
for _op in (
    _activation(Rectifier, "silu", F.silu, "(input, inplace=False)", nn.SiLU),
    _activation(Rectifier, "gelu", F.gelu, "(input, approximate='none')", nn.GELU),
    _activation(Rectifier, "hardswish", F.hardswish, "(input, inplace=False)", nn.Hardswish),
    _activation(Rectifier, "mish", F.mish, "(input, inplace=False)", nn.Mish),
    _activation(Rectifier, "relu6", F.relu6, "(input, inplace=False)", None),
    _activation(Rectifier, "hardtanh", F.hardtanh, "(input, min_val=-1.0, max_val=1.0, inplace=False)", nn.Hardtanh),
    _activation(Rectifier, "leaky_relu", F.leaky_relu, "(input, negative_slope=0.01, inplace=False)", nn.LeakyReLU),
    _activation(Rectifier, "elu", F.elu, "(input, alpha=1.0, inplace=False)", nn.ELU),
    _activation(Rectifier, "selu", F.selu, "(input, inplace=False)", nn.SELU),
    _activation(Rectifier, "celu", F.celu, "(input, alpha=1.0, inplace=False)", nn.CELU),
    _activation(Gate, "sigmoid", torch.sigmoid, "(input, out=None)", nn.Sigmoid),
    _activation(Gate, "hardsigmoid", F.hardsigmoid, "(input, inplace=False)", nn.Hardsigmoid),
    _activation(Gate, "tanh", torch.tanh, "(input, out=None)", nn.Tanh),
    Mul(),
    Sub(),
    Div(),
    LayerNorm(),
    GroupNorm(),
    InstanceNorm(),
    Permute(),
    Transpose(),
    ChannelShuffle(),
    Slice(),
    Split(),
    Mean(),
    Sum(),
    Pad(),
    *(
        _adjoint(name, function)
        for name, function in (
            ("narrow", torch.narrow),
            ("select", torch.select),
            ("expand", Tensor.expand),
            ("expand_as", Tensor.expand_as),
            ("repeat", Tensor.repeat),
            ("roll", torch.roll),
            ("flip", torch.flip),
            ("movedim", torch.movedim),
            ("moveaxis", torch.moveaxis),
        )
    ),
):
    register_op(_op)
del _op
