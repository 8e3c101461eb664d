"""The op table's machinery: :class:`Op` (what vizkit knows about one kind of torch call),
the explicit path's :class:`Node`, the max-pool's forward record :class:`PoolSwitches`, and the
registry that maps call names to ops. The ops themselves are in :mod:`vizkit.engine.ops.builtin`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from vizkit.engine.geometry import Box, Window
from vizkit.errors import VizkitError

if TYPE_CHECKING:
    from vizkit.engine.deconv import Tape
    from vizkit.engine.incremental import IncrementalOcclusion, _Call, _Window
    from vizkit.engine.rules import ProjectionRule


def parse_signature(text: str) -> inspect.Signature:
    """The signature written as ``"(input, kernel_size, stride=None)"``."""
    namespace: dict[str, Any] = {}
    exec(f"def f{text}: pass", namespace)
    return inspect.signature(namespace["f"])


def first_input(args: tuple, kwargs: dict) -> Any:
    """The first argument of a call (``input``, positional or by name)."""
    return args[0] if args else kwargs["input"]


class UnsupportedOpError(VizkitError):
    """The explicit path met an op it cannot reverse."""


@dataclass(frozen=True)
class PoolSwitches:
    """The switches of one max-pooling call and the parameters needed to unpool with them."""

    indices: Tensor  # [B, C, h, w], flat index into each input plane (H*W)
    input_shape: tuple[int, ...]
    window: Window
    ceil_mode: bool


@dataclass
class Node:
    """One recorded call as the explicit reverse pass sees it: the tape entries it read and
    the signal each of them gets from the signal on its output."""

    op: Op | None  # None: the input, or a call vizkit does not track
    parents: Sequence[int | None]
    backward: Callable[[Tensor], Sequence[Tensor | None]]
    name: str = ""
    window: Window | None = None  # for ops that look at a spatial window

    @classmethod
    def refusal(cls, op: Op | None, parents: Sequence[int | None], what: str) -> Node:
        """A node that names ``what`` when a signal reaches it."""

        def backward(signal: Tensor) -> list:
            raise UnsupportedOpError(f"the explicit deconvnet cannot reverse '{what}'; use method='autograd'")

        return cls(op, parents, backward)


class Op:
    """One kind of torch operation. Class attributes say what it is; methods what vizkit does
    with it. The defaults describe an op that is followed but not understood: recorded as it
    runs, refused by the explicit path, recomputed whole by incremental occlusion."""

    name: ClassVar[str] = ""
    calls: ClassVar[tuple[str, ...]] = ()
    signature: ClassVar[inspect.Signature | None] = None
    layer: ClassVar[bool] = False  # a functional call is a layer of its own (``<module>.<name>``)
    owner: ClassVar[type | tuple[type, ...] | None] = None  # modules whose call is their own
    pointwise: ClassVar[bool] = False  # each output position reads only the same input position
    normalisation: ClassVar[bool] = False  # the rule decides how the signal crosses it
    inference_only: ClassVar[bool] = False  # an owner module in training mode changes every forward
    # its forward record serves only the explicit reverse pass (an in-place op's input): it is
    # asked for only while a tape records, not on every recorded forward
    tape_only_record: ClassVar[bool] = False
    # why incremental occlusion recomputes the op's whole output when its step gives up (the
    # cost report's reason); "": a generic one
    whole_reason: ClassVar[str] = ""
    product: ClassVar[bool] = False  # multiplies its inputs (an SE gate's product, the cost report says)

    def bind(self, args: tuple, kwargs: dict | None) -> dict[str, Any]:
        """The arguments of a call by parameter name, defaults filled in.

        Args:
            args: the call's positional arguments.
            kwargs: its keyword arguments.
        """
        if self.signature is None:
            raise TypeError(f"op '{self.name}' has no signature to bind")
        bound = self.signature.bind(*args, **(kwargs or {}))
        bound.apply_defaults()
        return dict(bound.arguments)

    def owns(self, module: nn.Module) -> bool:
        """Whether ``module`` is one whose call of this op is the module's own."""
        return self.owner is not None and isinstance(module, self.owner)

    def draws_at_random(self, module: nn.Module) -> bool:
        """Whether an owner ``module`` draws new random choices on every forward (eval mode too)."""
        return False

    def window(self, p: dict[str, Any]) -> Window | None:
        """The call's sliding window from its bound arguments ``p``; None: it has none."""
        return None

    def forward(
        self, func: Callable, args: tuple, kwargs: dict, rule: ProjectionRule | None, record: bool
    ) -> tuple[Any, Any]:
        """The call during an instrumented forward: its output and its forward record (None).

        Args:
            func: the torch call intercepted.
            args: its positional arguments.
            kwargs: its keyword arguments.
            rule: the autograd projection's rule while its forward runs, else None.
            record: whether forward records (max-pooling switches) are wanted.
        """
        return func(*args, **kwargs), None

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node | None:
        """The explicit path's node for a call (``record``: its forward record); None: the op
        cannot be reversed (the pass names it if a signal reaches it)."""
        return None

    def reverse_pieces(
        self, tape: Tape, func: Callable, args: tuple, kwargs: dict, output: Any, record: Any
    ) -> list[tuple[Tensor, Node]] | None:
        """For a call returning several tensors (chunk, split): each piece with the explicit
        path's node for it; None: only the first is followed (the rest are refused by name)."""
        return None

    def input_box(self, box: Box, out_shape: torch.Size, in_shape: torch.Size) -> Box | None:
        """The part of an input map that ``box`` of an output map of an op without a window
        depends on (unclipped); None: the whole map."""
        return box if tuple(out_shape[-2:]) == tuple(in_shape[-2:]) else None

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        """Incremental occlusion through a call whose changed inputs are all spatial windows:
        the output's changed window (or whole tensor); None: recompute the whole tensor."""
        return occlusion.pointwise(call, windows) if self.pointwise else None

    def macs(self, args: tuple, kwargs: dict, output: Tensor) -> int:
        """Multiply-adds of a call producing ``output`` (counted for conv and linear only)."""
        return 0

    def replay_args(self, func: Callable, args: tuple) -> tuple:
        """A recorded call's arguments adapted to a replay on a larger batch."""
        return args

    def __repr__(self) -> str:
        return f"<op {self.name!r}>"


def pass_node(tape: Tape, op: Op, args: tuple, kwargs: dict) -> Node:
    """A node that hands the signal to the call's first input unchanged."""
    return Node(op, [tape.index(first_input(args, kwargs))], lambda s: [s])


class SlidingOp(Op):
    """An op computing each output from a window of its input (convolution, pooling):
    incremental occlusion recomputes the outputs whose windows meet the changed inputs."""

    pad_value: ClassVar[float] = 0.0  # what padding holds

    def slide(self, slab: Tensor, p: dict[str, Any], window: Window) -> Tensor:
        """The op on ``slab`` (a padded block of its input), without padding."""
        raise NotImplementedError

    def macs_per_position(self, p: dict[str, Any]) -> int:
        """Multiply-adds per output position (all channels)."""
        return 0

    def step(
        self, occlusion: IncrementalOcclusion, index: int, call: _Call, windows: dict[int, _Window]
    ) -> _Window | Tensor | None:
        return occlusion.sliding(index, call, self, windows)


# ---------------------------------------------------------------------------- the registry
OPS: dict[str, Op] = {}
_BY_CALL: dict[str, Op] = {}
OpT = TypeVar("OpT", bound=Op)


def register_op(op: OpT) -> OpT:
    """Add ``op`` to the table (a ValueError if its name or a call name is taken); returns it.

    Args:
        op: an instance of an :class:`Op` subclass.
    """
    taken = [name for name in op.calls if name in _BY_CALL]
    if op.name in OPS or taken or not op.name:
        raise ValueError(f"op name '{op.name}' or call names {taken} are empty or already registered")
    OPS[op.name] = op
    _BY_CALL.update(dict.fromkeys(op.calls, op))
    return op


def unregister_op(op: Op) -> None:
    """Take ``op`` out of the table again.

    Args:
        op: an op registered with :func:`register_op`.
    """
    if OPS.get(op.name) is op:
        del OPS[op.name]
    for name in op.calls:
        if _BY_CALL.get(name) is op:
            del _BY_CALL[name]


def op_of(func: Callable) -> Op | None:
    """The op a torch call performs, or None for calls vizkit does not track.

    Args:
        func: the callable a ``TorchFunctionMode`` intercepted.
    """
    return _BY_CALL.get(getattr(func, "__name__", ""))


def op_of_module(module: nn.Module) -> Op | None:
    """The op whose owner ``module`` is, or None.

    Args:
        module: any module.
    """
    return next((op for op in OPS.values() if op.owns(module)), None)
