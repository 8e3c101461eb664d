"""Recording the ops of one forward pass, in order, as a graph over the tensors they produce.

The instrumented model calls ``input(x)`` at the start of a forward and ``record(...)`` after
every torch call. An op is kept only if it reads a tensor already on the tape (the signal coming
from the input), so ops on weights, constants and shape queries are left out. Subclasses say
what each entry holds: the deconvnet's reverse rules (:class:`vizkit.engine.deconv.Tape`) or a call to
replay (:class:`vizkit.engine.incremental.ReplayTape`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from vizkit.engine.ops import Op


class OpRecorder:
    """Entries in forward order, each found by the id of the tensor it produced."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self.outputs: list[Tensor] = []  # the live outputs: keeps every id() unique meanwhile
        self._index_of: dict[int, int] = {}
        # the entry that produced the captured layer's output, noted when the layer ran: a later
        # in-place op (``nn.ReLU(inplace=True)``, ``out += identity``) returns the same tensor,
        # so by the end of the forward its id() names that op's entry instead
        self.captured_index: int | None = None

    def index(self, value: Any) -> int | None:
        """The entry that produced ``value``, or None when it is not a tensor on the tape."""
        return self._index_of.get(id(value)) if isinstance(value, Tensor) else None

    def require_index(self, value: Tensor) -> int:
        """The entry that produced ``value``, which must be on the tape."""
        index = self.index(value)
        if index is None:
            raise ValueError("this tensor was not produced by the recorded forward")
        return index

    def input(self, x: Tensor) -> None:
        """Put the forward's input ``x`` on the tape: the entry every path back ends at."""
        self._add(x, self._input_entry(x))

    def signal_inputs(self, args: tuple, kwargs: dict) -> list[int]:
        """The entries whose outputs a call reads (also inside lists, as for torch.cat)."""
        inputs = [*args, *kwargs.values()]
        inputs += [item for value in inputs if isinstance(value, (list, tuple)) for item in value]
        return [index for index in map(self.index, inputs) if index is not None]

    def record(self, func: Callable, op: Op | None, args: tuple, kwargs: dict, output: Any, record: Any) -> None:
        """Note a call made by the forward: ``op`` is its kind in the op table (None: one vizkit
        does not track), ``record`` what the op recorded going up (a max-pool's switches)."""
        if not self.signal_inputs(args, kwargs):
            return  # an op on weights or constants, not on the signal
        pieces = [t for t in output if _signal(t)] if isinstance(output, (tuple, list)) else []
        if len(pieces) > 1:  # chunk, split, unbind, ... (not a max-pool's values and indices)
            self._record_pieces(func, op, args, kwargs, output, record)
            return
        out = output[0] if isinstance(output, tuple) and output else output
        if not isinstance(out, Tensor):
            return  # size(), dim(), ...: no signal flows on
        self._add(out, self._entry(func, op, args, kwargs, out, output, record))

    def _record_pieces(
        self, func: Callable, op: Op | None, args: tuple, kwargs: dict, output: Any, record: Any
    ) -> None:
        """A call returning several tensors: an entry for each (``_entry`` with ``out`` that
        piece), so that calls reading any of them stay on the tape."""
        for piece in output:
            if _signal(piece):
                self._add(piece, self._entry(func, op, args, kwargs, piece, output, record))

    def _add(self, output: Tensor, entry: Any) -> None:
        self.entries.append(entry)
        self.outputs.append(output)
        self._index_of[id(output)] = len(self.entries) - 1

    def _input_entry(self, x: Tensor) -> Any:
        raise NotImplementedError

    def _entry(
        self, func: Callable, op: Op | None, args: tuple, kwargs: dict, out: Tensor, output: Any, record: Any
    ) -> Any:
        raise NotImplementedError


def _signal(value: Any) -> bool:
    """Whether ``value`` can carry the signal: a floating-point tensor (not indices)."""
    return isinstance(value, Tensor) and (value.is_floating_point() or value.is_complex())
