"""Incremental inference for occlusion: recompute only what an occluder can change.

One forward of the unoccluded image is recorded op by op with every output cached (a replay
tape). For a batch of occluder positions the tape is replayed with, per position, the changed
*window* of each tensor, each op as its entry in the op table (:meth:`vizkit.engine.ops.Op.step`)
says: a convolution or pooling recomputes only the outputs whose receptive field meets the
parent's changed window (:meth:`IncrementalOcclusion.sliding`, from the cached input with the
window pasted in), ops that are point-wise in space (activations, BatchNorm in eval, a LayerNorm
or Linear over channels, a product with a per-channel constant) apply to the window
(:meth:`~IncrementalOcclusion.pointwise`), layout ops (permute, transpose, a reshape or slice of
the channels, chunk) rearrange it (:meth:`~IncrementalOcclusion.relayout`), element-wise ops of
several maps and concatenation take the union of their inputs' windows
(:meth:`~IncrementalOcclusion.union`), and a global average pool is updated by the window's
change of sum (:meth:`~IncrementalOcclusion.global_mean`). A window knows its layout (which axes
are its rows and columns), so a channels-last stretch (ConvNeXt's block) keeps it.

Anything else, and any op reading a tensor that already depends on the whole map (the gate of a
squeeze-excitation block, computed from a global pool), recomputes the whole tensor for every
position, from then on, and so does a window that has grown to cover the whole map at every
position (the same work, without the windows' bookkeeping); :attr:`OcclusionCost.whole_maps`
says where that began and why. This is
exact: every output is computed from exactly the inputs the full forward would use (Krypton,
Nakandala et al., SIGMOD 2019, without its approximations).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vizkit.engine.ops.in_place import always_in_place
from vizkit.engine.recorder import Recorder
from vizkit.engine.tape import OpRecorder
from vizkit.errors import VizkitError

if TYPE_CHECKING:
    from vizkit.engine.ops import Op, SlidingOp

GLOBAL_POOL = "global pool"  # the reason a global pool's output depends on the whole map
SE_GATE = "global pool of an SE block: its gate scales every position"
COVERED = "the changed window grew to cover the whole map"  # receptive fields, at every position

Dims = tuple[int, int]
NCHW: Dims = (2, 3)


@dataclass
class _Ref:
    node: int


@dataclass
class _Call:
    func: Callable
    op: Op | None  # None: the input, or a call vizkit does not track
    args: tuple
    kwargs: dict
    parents: list[int]
    value: Tensor  # the output on the unoccluded image (batch 1), cloned
    piece: int | None  # which tensor of a call returning several (chunk, split); None: the only one
    module: str = ""  # the module whose forward made the call ("" for the model's own)

    @property
    def label(self) -> str:
        """The module that made the call, or the call's name when the model's own forward did."""
        return self.module or getattr(self.op, "name", "") or getattr(self.func, "__name__", "?")


@dataclass
class _Window:
    """Per position p, values[p] is the tensor's block at (y0[p], x0[p]): axes ``dims`` of
    ``values`` are its rows and columns (2 and 3 for NCHW, 1 and 2 for channels-last NHWC), the
    others are the whole tensor's. Blocks of a batch share one size; ``first`` and ``last`` bound,
    per axis and position, the part of the block that differs from the unoccluded tensor
    (outside it the block holds cached values). None: the whole block."""

    y0: Tensor
    x0: Tensor
    values: Tensor
    first: tuple[Tensor, Tensor] | None = None
    last: tuple[Tensor, Tensor] | None = None
    dims: Dims = NCHW

    @property
    def size(self) -> tuple[int, int]:
        return self.values.shape[self.dims[0]], self.values.shape[self.dims[1]]

    def bounds(self, axis: int) -> tuple[Tensor, Tensor]:
        """The changed rows (axis 0) or columns (axis 1), inclusive, per position."""
        if self.first is None or self.last is None:
            origin = self.y0 if axis == 0 else self.x0
            return origin, origin + self.size[axis] - 1
        return self.first[axis], self.last[axis]

    def canonical(self) -> Tensor:
        """The values with rows and columns as the last two axes (the others in their order)."""
        return self.values.movedim(self.dims, (-2, -1))

    def with_values(self, values: Tensor, dims: Dims | None = None) -> _Window:
        """The same place and changed part, other values (a point-wise op's output), whose rows
        and columns are axes ``dims`` (default: the same as this window's)."""
        return _Window(self.y0, self.x0, values, self.first, self.last, self.dims if dims is None else dims)


class ReplayTape(OpRecorder):
    """Records each op of one forward with its arguments, its (cloned) output and the module
    that made it (``where()`` at the time of the call)."""

    def __init__(self, where: Callable[[], str] | None = None) -> None:
        super().__init__()
        self._where = where

    def _input_entry(self, x: Tensor) -> _Call:
        return _Call(lambda: None, None, (), {}, [], x.detach().clone(), None)

    def _template(self, value: Any, parents: list[int]) -> Any:
        index = self.index(value)
        if index is not None:
            parents.append(index)
            return _Ref(index)
        if isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) for v in value):
            return type(value)(self._template(v, parents) for v in value)
        return value

    def _entry(
        self, func: Callable, op: Op | None, args: tuple, kwargs: dict, out: Tensor, output: Any, record: Any
    ) -> _Call:
        parents: list[int] = []
        args_t = tuple(self._template(a, parents) for a in args)
        kwargs_t = {k: self._template(v, parents) for k, v in kwargs.items()}
        piece = next((i for i, t in enumerate(output) if t is out), 0) if isinstance(output, (tuple, list)) else None
        module = self._where() if self._where is not None else ""
        return _Call(func, op, args_t, kwargs_t, list(dict.fromkeys(parents)), out.detach().clone(), piece, module)


def _fill(value: Any, lookup: Callable[[int], Tensor]) -> Any:
    if isinstance(value, _Ref):
        return lookup(value.node)
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(v, lookup) for v in value)
    return value


def _tensors(value: Any) -> list[Tensor]:
    """The tensors among a call's (filled) arguments, also inside lists."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class _Padded:
    """A cached [1, C, H, W] tensor, padded once per fill value, for gathering blocks from.

    Blocks come out channels-last: on CPU, convolutions run 2-2.5x and max pooling ~15x faster
    on channels-last batches than on NCHW ones of the same shape (measured on SqueezeNet's)."""

    def __init__(self, base: Tensor) -> None:
        self.base = base
        self._padded: dict[float, tuple[int, Tensor]] = {}  # fill -> (margin, [H + 2m, W + 2m, C])

    def gather(
        self, y0: Tensor, x0: Tensor, h: int, w: int, pad_value: float = 0.0, channel: int | None = None
    ) -> Tensor:
        """[P, C, h, w] blocks at (y0[p], x0[p]), ``pad_value`` outside the tensor; only
        channel ``channel`` ([P, 1, h, w]) when given."""
        height, width = self.base.shape[-2:]
        need = max(0, int(-y0.min()), int(-x0.min()), int((y0 + h).max()) - height, int((x0 + w).max()) - width)
        margin, padded = self._padded.get(pad_value, (-1, self.base))
        if need > margin:
            margin = max(need, 8)
            padded = F.pad(self.base[0], (margin,) * 4, value=pad_value).permute(1, 2, 0).contiguous()
            self._padded[pad_value] = (margin, padded)
        if channel is not None:
            padded = padded[:, :, channel : channel + 1]
        # one slice per position, stacked: several times faster than advanced indexing on CPU
        blocks = [padded[a : a + h, b : b + w] for a, b in zip((y0 + margin).tolist(), (x0 + margin).tolist())]
        return torch.stack(blocks).permute(0, 3, 1, 2)


def paste(canvas: Tensor, cy0: Tensor, cx0: Tensor, window: _Window) -> Tensor:
    """``canvas`` [P, ..., Hc, Wc] (rows and columns last, top-left at (cy0, cx0)) with ``window``
    written over it, clipped. Writes into ``canvas`` (callers pass a fresh tensor) and returns it."""
    hc, wc = canvas.shape[-2:]
    h, w = window.size
    values = window.canonical()
    rows = (window.y0 - cy0).tolist()
    cols = (window.x0 - cx0).tolist()
    for p, (top, left) in enumerate(zip(rows, cols)):
        r0, r1, c0, c1 = max(top, 0), min(top + h, hc), max(left, 0), min(left + w, wc)
        if r0 < r1 and c0 < c1:
            canvas[p, ..., r0:r1, c0:c1] = values[p, ..., r0 - top : r1 - top, c0 - left : c1 - left]
    return canvas


def _same_place(y0: Tensor, x0: Tensor, window: _Window) -> bool:
    """Whether ``window`` starts at (y0[p], x0[p]) for every position p."""
    return bool(torch.equal(window.y0, y0) and torch.equal(window.x0, x0))


def _span(lo: Tensor, hi: Tensor, limit: int) -> tuple[Tensor, int]:
    """A fixed-size span covering [lo, hi] for every position, shifted to lie within [0, limit)."""
    lo, hi = lo.clamp(min=0), hi.clamp(max=limit - 1)
    size = max(1, min(limit, int((hi - lo + 1).max())))
    return lo.clamp(max=limit - size), size


def _crop(lo: Tensor, hi: Tensor, limit: int, tau: float) -> tuple[Tensor, Tensor]:
    """Clip [lo, hi] to [0, limit) and, for tau < 1, centre-crop it to at most ceil(tau * limit)
    (Krypton's projective field thresholding)."""
    lo, hi = lo.clamp(min=0), hi.clamp(max=limit - 1)
    if tau < 1:
        excess = (hi - lo + 1 - max(1, math.ceil(tau * limit))).clamp(min=0)
        lo, hi = lo + excess // 2, hi - (excess - excess // 2)
    return lo, hi


@dataclass
class WholeMap:
    """Where incremental occlusion stopped stepping a window and began recomputing whole maps for
    every position: the op whose output first depended on the whole map (``layer``, the module
    that called ``op``), why, the first map recomputed whole because of it, and the multiply-adds
    those recomputations need (summed over the positions so far). From there on the changed
    window is the whole map, whatever the occluder's size: such a map costs a full forward's
    share per position, and the bound says so."""

    layer: str
    op: str
    reason: str
    first_map: str
    macs: int = 0

    def describe(self, needed: int) -> str:
        """One sentence, with the share of ``needed`` (all needed multiply-adds) it accounts for."""
        share = f"; {100 * self.macs / max(1, needed):.0f}% of the needed multiply-adds"
        first = "" if self.first_map == self.layer else f" (first whole map: {self.first_map})"
        return f"from {self.layer} ({self.reason}) on, every position recomputes the whole map{first}{share}"


@dataclass
class OcclusionCost:
    """Multiply-adds of convolutions and linear layers (the ops that dominate a convnet) for one
    image's occlusion: what a full forward costs, what each position's changed windows need,
    and what was actually computed (windows padded to their batch's common size, fallbacks).
    :attr:`whole_maps` says where, layer by layer, the changed window became the whole map."""

    full: int
    needed: int = 0
    executed: int = 0
    positions: int = 0
    whole_maps: list[WholeMap] = field(default_factory=list)

    @property
    def bound(self) -> float:
        """Speed-up over full forwards if only the needed multiply-adds were done."""
        return self.full * self.positions / max(1, self.needed)

    @property
    def whole(self) -> int:
        """Needed multiply-adds spent recomputing whole maps (all positions so far)."""
        return sum(entry.macs for entry in self.whole_maps)

    def as_dict(self) -> dict[str, Any]:
        """The costs as summary entries: per-position averages, the bound, the padding overhead
        and, per place where the window became the whole map, the layer, op and reason."""
        per = max(1, self.positions)
        return {
            "macs_full_forward": self.full,
            "macs_needed_per_position": round(self.needed / per),
            "macs_executed_per_position": round(self.executed / per),
            "bound": round(self.bound, 3),
            "padding_overhead": round(self.executed / max(1, self.needed), 3),
            "macs_whole_map_per_position": round(self.whole / per),
            "whole_map": [
                {
                    "layer": entry.layer,
                    "op": entry.op,
                    "reason": entry.reason,
                    "first_map": entry.first_map,
                    "share_of_needed": round(entry.macs / max(1, self.needed), 4),
                }
                for entry in self.whole_maps
            ],
        }


def _macs(call: _Call, output: Tensor) -> int:
    """Multiply-adds of a call producing ``output`` (the op table counts convolutions and
    linear layers, the ops that dominate a convnet; 0 for the others)."""
    return call.op.macs(call.args, call.kwargs, output) if call.op is not None else 0


class IncrementalOcclusion:
    """Occlusion of one image evaluated incrementally against its cached forward.

    ``tau`` < 1 caps each convolution's and pooling's changed window at ``tau`` times the
    layer's width and height, centred (Krypton's projective field thresholding): faster and
    approximate. ``tau`` = 1 is exact. :attr:`cost` counts the multiply-adds as positions run.
    """

    def __init__(self, im: Recorder, x: Tensor, layer: str, tau: float = 1.0) -> None:
        if not 0 < tau <= 1:
            raise VizkitError(f"tau must be in (0, 1], not {tau}")
        self.tau = tau
        self.im, self.x = im, x
        self.tape = ReplayTape(im.current_module)
        with torch.no_grad():
            output, _captured = im.trace(x, self.tape, layer)
        # the layer's own entry, not tape.index(captured): an in-place op after the layer (the
        # ReLU(inplace=True) after AlexNet's convs, ResNet's `out += identity` after bn2)
        # returns the same tensor, whose id() then names that op's entry
        output_node, layer_node = self.tape.index(output), self.tape.captured_index
        if output_node is None or layer_node is None:
            raise VizkitError("incremental occlusion needs a model whose output and layer depend on its input")
        self.output_node, self.layer_node = output_node, layer_node
        self.base = [
            call.value.contiguous(memory_format=torch.channels_last) if call.value.dim() == 4 else call.value
            for call in self.tape.entries
        ]
        self._padded: dict[tuple[int, Dims], _Padded] = {}
        # ops whose output only one later op reads (and that are not returned): their windows,
        # always computed afresh per batch, may be overwritten in place
        readers = Counter(parent for call in self.tape.entries for parent in call.parents)
        self._private = {index for index, n in readers.items() if n == 1 and index not in (0, output_node, layer_node)}
        self.cost = OcclusionCost(
            full=sum(_macs(call, call.value) for call in self.tape.entries[: max(output_node, layer_node) + 1])
        )
        self._whole: dict[int, WholeMap] = {}  # origin entry -> its report (also once in cost.whole_maps)
        # per evaluate: the states, the windows that are views of another's values (never
        # written in place), and the entry each whole tensor's dependence on the whole map began at
        self._states: dict[int, _Window | Tensor] = {}
        self._views: set[int] = set()
        self._origin: dict[int, int] = {}

    def padded(self, index: int, dims: Dims = NCHW) -> _Padded:
        """The cached output of op ``index`` to gather spatial blocks from, rows and columns its
        axes ``dims`` (the others flattened into one, as channels)."""
        padded = self._padded.get((index, dims))
        if padded is None:
            canonical = self.base[index].movedim(dims, (-2, -1))
            padded = self._padded[(index, dims)] = _Padded(canonical.reshape(1, -1, *canonical.shape[-2:]))
        return padded

    def block(self, index: int, dims: Dims, y0: Tensor, x0: Tensor, h: int, w: int, canonical: bool = False) -> Tensor:
        """[P, ...] blocks of op ``index``'s cached output at (y0[p], x0[p]), h x w along its axes
        ``dims`` (zero outside the tensor); rows and columns last when ``canonical``."""
        base = self.base[index].movedim(dims, (-2, -1))
        flat = self.padded(index, dims).gather(y0, x0, h, w)
        blocks = flat.reshape(len(y0), *base.shape[1:-2], h, w)
        return blocks if canonical else blocks.movedim((-2, -1), dims)

    def evaluate(
        self, corners: list[tuple[int, int]], size: int, fill: Tensor, channel: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Logits [P, classes] and the layer's output [P, ...] for each occluder position; with
        ``channel``, the sum of that channel of the layer [P] instead of the whole output."""
        base0 = self.base[0]
        device, count = base0.device, len(corners)
        y0 = torch.tensor([c[0] for c in corners], device=device)
        x0 = torch.tensor([c[1] for c in corners], device=device)
        colour = fill.to(device, base0.dtype).reshape(1, 3, 1, 1).expand(count, 3, size, size)
        states: dict[int, _Window | Tensor] = {0: _Window(y0, x0, colour.contiguous(memory_format=torch.channels_last))}
        self._states, self._views, self._origin = states, set(), {}
        last = max(self.output_node, self.layer_node)
        try:
            for index in range(1, last + 1):
                call = self.tape.entries[index]
                changed = [p for p in call.parents if p in states]
                if not changed:
                    continue
                states[index] = self._step(index, call, states, count)
            self.cost.positions += count
            logits = self._full(self.output_node, states, count)
            if self.im.settings.check_finite and not bool(torch.isfinite(logits).all()):
                self._non_finite(logits, corners, size, fill)
            if channel is None:
                return logits, self._full(self.layer_node, states, count)
            return logits, self._channel_sum(self.layer_node, states, count, channel)
        finally:
            self._states = {}

    def _non_finite(self, logits: Tensor, corners: list[tuple[int, int]], size: int, fill: Tensor) -> None:
        """Raise NonFiniteActivation for the first position whose logits are not finite, naming
        the layer (found by an ordinary forward of that occluded image)."""
        position = int((~torch.isfinite(logits)).flatten(1).any(1).nonzero()[0, 0])
        y0, x0 = corners[position]
        occluded = self.x[:1].clone()
        occluded[:, :, y0 : y0 + size, x0 : x0 + size] = fill.to(occluded.device, occluded.dtype).reshape(1, 3, 1, 1)
        raise self.im.non_finite_error(occluded, what=f"occluded at ({y0}, {x0})", name_from=self.x[:1])

    def _channel_sum(self, index: int, states: dict, count: int, channel: int) -> Tensor:
        """Sum of one channel of op ``index``'s output per position: the cached total plus the
        window's change, without building the whole output."""
        state, base = states.get(index), self.base[index]
        total = base[0, channel].sum()
        if state is None:
            return total.expand(count)
        if isinstance(state, Tensor) or state.dims != NCHW or base.dim() != 4:
            return self._full(index, states, count)[:, channel].flatten(1).sum(1)
        h, w = state.size
        old = self.padded(index).gather(state.y0, state.x0, h, w, channel=channel)
        return total + (state.values[:, channel : channel + 1] - old).sum(dim=(1, 2, 3))

    # ----------------------------------------------------------------------------- one op
    def _full(self, index: int, states: dict, count: int) -> Tensor:
        state = states.get(index)
        base = self.base[index]
        if state is None:
            return base.expand(count, *base.shape[1:])
        if isinstance(state, Tensor):
            return state
        canonical = base.movedim(state.dims, (-2, -1))
        canvas = canonical.expand(count, *canonical.shape[1:]).clone()
        zero = torch.zeros(count, dtype=torch.long, device=base.device)
        return paste(canvas, zero, zero, state).movedim((-2, -1), state.dims)

    def _step(self, index: int, call: _Call, states: dict, count: int) -> _Window | Tensor:
        windows = {p: states[p] for p in call.parents if p in states}
        if all(isinstance(s, _Window) for s in windows.values()) and call.op is not None:
            stepped = call.op.step(self, index, call, windows)
            if isinstance(stepped, Tensor):  # e.g. a global pool: depends on the whole map
                self._note_whole(index, call, windows, GLOBAL_POOL)
                return stepped
            if stepped is not None:
                if self.tau < 1 or not self._covers(call, stepped):  # (tau < 1: later layers cap theirs)
                    return stepped
                # every position changed the whole map: from here on whole tensors, stepped by
                # plain calls (the same multiply-adds, without the windows' bookkeeping)
                self._note_whole(index, call, windows, COVERED, stepped.values)
                return stepped.values
        # unbounded or unknown: recompute the whole tensor for every position
        value = self._call(call, lambda n: self._full(n, states, count))
        macs = _macs(call, value)
        self.cost.needed += macs
        self.cost.executed += macs
        self._note_whole(index, call, windows, self._reason(call), value, macs)
        return value

    @staticmethod
    def _covers(call: _Call, window: _Window) -> bool:
        """Whether ``window`` is the whole map and changed all of it at every position."""
        shape = call.value.shape
        for axis, dim in enumerate(window.dims):
            first, last = window.bounds(axis)
            if window.size[axis] != shape[dim] or bool(first.gt(0).any() or last.lt(shape[dim] - 1).any()):
                return False
        return True

    def _reason(self, call: _Call) -> str:
        """Why an op recomputes its whole output (when none of its inputs already depends on
        the whole map)."""
        if call.op is None:
            return f"'{getattr(call.func, '__name__', call.func)}' is not in vizkit's op table"
        return call.op.whole_reason or f"{call.op.name} is not stepped window by window here"

    def _note_whole(
        self, index: int, call: _Call, inputs: dict, reason: str, value: Tensor | None = None, macs: int = 0
    ) -> None:
        """Op ``index`` computed a whole tensor: it inherits the origin of the first input that
        already depends on the whole map, or is an origin itself (``reason`` says why); a map
        (more than one position) computed whole from a window is reported in
        :attr:`cost`'s ``whole_maps``; ``macs`` are charged to the origin."""
        inherited = [self._origin[p] for p in call.parents if p in self._origin]
        origin = inherited[0] if inherited else index
        self._origin[index] = origin
        entry = self._whole.get(origin)
        if entry is None:
            source = self.tape.entries[origin]
            name = source.op.name if source.op is not None else getattr(source.func, "__name__", "?")
            entry = self._whole[origin] = WholeMap(source.label, name, reason, "")
        entry.macs += macs
        from_window = [(p, w) for p, w in inputs.items() if isinstance(w, _Window)]
        if value is None or not from_window or entry.first_map:
            return
        parent, window = from_window[0]
        same_rank = value.dim() == self.base[parent].dim()
        if same_rank and math.prod(value.shape[d] for d in window.dims) > 1:
            entry.first_map = call.label
            if entry.reason == GLOBAL_POOL and call.op is not None and call.op.product:
                entry.reason = SE_GATE
            self.cost.whole_maps.append(entry)

    def _owned(self, node: int) -> bool:
        """Whether op ``node``'s values this batch may be overwritten: read by no other op, not
        a view of another op's values, not the cached tensor."""
        return node in self._private and node not in self._views and node in self._states

    def _call(self, call: _Call, lookup: Callable[[int], Tensor]) -> Tensor:
        kwargs = dict(_fill(call.kwargs, lookup))
        if "inplace" in kwargs:
            kwargs["inplace"] = False
        args = _fill(call.args, lookup)
        if (
            always_in_place(call.func)
            and args
            and isinstance(call.args[0], _Ref)
            and not self._owned(call.args[0].node)
        ):
            # x.relu_(), out += identity: the replay must not write into a block others read
            # (the layer's own, which the result reads afterwards), or into the cached tensor
            args = (args[0].clone(), *args[1:])
        if call.op is not None:  # e.g. a literal batch size (x.view(1, -1))
            args = call.op.replay_args(call.func, args)
        out = call.func(*args, **kwargs)
        return out[call.piece] if call.piece is not None else out

    def _count(self, call: _Call, window: _Window) -> None:
        """Charge a call stepped on ``window`` with the multiply-adds the op table counts for it
        (a Linear over channels): the full call's per position, times the changed positions
        (needed) and the block's positions (executed)."""
        if call.op is None:
            return
        macs = _macs(call, call.value)
        if not macs:
            return
        per_position = macs / max(1, math.prod(call.value.shape[d] for d in window.dims))
        extents = [(hi - lo + 1).clamp(min=0) for lo, hi in (window.bounds(0), window.bounds(1))]
        h, w = window.size
        self.cost.needed += round(float((extents[0] * extents[1]).sum()) * per_position)
        self.cost.executed += round(len(window.y0) * h * w * per_position)

    # ------------------------------------------------------- how an op steps (Op.step picks)
    def pointwise(
        self, call: _Call, windows: dict[int, _Window], in_place: Callable[[Tensor], Tensor] | None = None
    ) -> _Window | None:
        """An op that is point-wise in space (each output position reads only the same input
        position: activations, a LayerNorm or Linear over channels) on its one parent's changed
        window; ``in_place`` (e.g. ``torch.relu_``) is applied to the window itself when no one
        else reads it (3-5x faster). None when the op changes the map's size or layout."""
        if len(call.parents) != 1:
            return None
        parent = call.parents[0]
        window = windows[parent]
        before, after = self.base[parent].shape, call.value.shape
        if len(before) != len(after) or any(before[d] != after[d] for d in window.dims):
            return None
        if in_place is not None and self._owned(parent):
            return window.with_values(in_place(window.values))
        out = window.with_values(self._call(call, lambda n: windows[n].values))
        self._count(call, out)
        return out

    def passed_on(self, index: int, call: _Call, windows: dict[int, _Window]) -> _Window | None:
        """An op that is the identity here (an adaptive pool to its input's size): its one
        parent's window, unchanged (its values shared, never written in place)."""
        if len(call.parents) != 1 or self.base[call.parents[0]].shape != call.value.shape:
            return None
        self._views.add(index)
        window = windows[call.parents[0]]
        return window.with_values(window.values)

    def relayout(self, index: int, call: _Call, windows: dict[int, _Window], dims: Dims) -> _Window | None:
        """A layout op (permute, transpose, chunk, a slice of the channels) on its one parent's
        window, replayed on the window's values, whose rows and columns end up at axes ``dims``;
        its values may be a view of the parent's, never written in place."""
        if len(call.parents) != 1:
            return None
        window = windows[call.parents[0]]
        values = self._call(call, lambda n: window.values)
        if values.dim() != call.value.dim() or values.shape[dims[0]] != window.size[0]:
            return None
        self._views.add(index)
        return window.with_values(values, dims)

    def reshaped(self, index: int, call: _Call, windows: dict[int, _Window]) -> _Window | None:
        """A reshape (view, flatten, unflatten, ...) that keeps rows and columns as the last two
        axes, of the same sizes, and the batch first: it only regroups the channels (ShuffleNet's
        channel shuffle written out), so each position keeps its own values."""
        if len(call.parents) != 1:
            return None
        window = windows[call.parents[0]]
        before, after = self.base[call.parents[0]].shape, call.value.shape
        n = len(before)
        if (
            window.dims != (n - 2, n - 1)
            or len(after) < 3
            or tuple(after[-2:]) != tuple(before[-2:])
            or before[0] != 1
            or after[0] != 1
        ):
            return None
        self._views.add(index)
        m = len(after)
        return window.with_values(window.values.reshape(len(window.y0), *after[1:-2], *window.size), (m - 2, m - 1))

    def shifted(self, index: int, window: _Window, top: int, left: int) -> _Window:
        """``window``, op ``index``'s, moved ``top`` rows down and ``left`` columns right (a
        padding before it); its values may be its parent's, never written in place."""
        self._views.add(index)
        first = last = None
        if window.first is not None and window.last is not None:
            first = (window.first[0] + top, window.first[1] + left)
            last = (window.last[0] + top, window.last[1] + left)
        return _Window(window.y0 + top, window.x0 + left, window.values, first, last, window.dims)

    def sliding(self, index: int, call: _Call, op: SlidingOp, windows: dict[int, _Window]) -> _Window | None:
        """The outputs whose windows meet the one parent's changed window, recomputed from the
        cached parent with that window pasted in; None when no window describes the call."""
        if len(call.parents) != 1:
            return None
        (parent,) = call.parents
        window = windows[parent]
        if window.dims != NCHW or call.value.dim() != 4:
            return None
        p = op.bind(call.args, call.kwargs)
        geometry = op.window(p)
        if geometry is None:  # asymmetric 'same' padding
            return None
        starts, sizes, extents, firsts, lasts = [], [], [], [], []
        for axis, limit in enumerate(call.value.shape[-2:]):
            lo, hi = _crop(*geometry.output_range(axis, *window.bounds(axis)), limit, self.tau)
            extents.append((hi - lo + 1).clamp(min=0))
            firsts.append(lo)
            lasts.append(hi)
            start, size = _span(lo, hi, limit)
            starts.append(start)
            sizes.append(size)
        in_y = geometry.input_range(0, starts[0], starts[0])[0]
        in_x = geometry.input_range(1, starts[1], starts[1])[0]
        extent = (geometry.input_extent(0, sizes[0]), geometry.input_extent(1, sizes[1]))
        height, width = self.base[parent].shape[-2:]
        if extent == window.size and _same_place(in_y, in_x, window):  # e.g. a 1x1 conv: the window is the input
            slab = window.values
        elif window.size == (height, width) and not bool(in_y.ne(in_y[0]).any() or in_x.ne(in_x[0]).any()):
            # the window is the whole map (x0 = y0 = 0) and every slab starts at the same place:
            # pad (or crop) the batch at once instead of pasting it position by position
            top, left = -int(in_y[0]), -int(in_x[0])
            edges = (left, extent[1] - width - left, top, extent[0] - height - top)
            slab = F.pad(window.values, edges, value=op.pad_value)
        else:
            slab = paste(self.padded(parent).gather(in_y, in_x, *extent, op.pad_value), in_y, in_x, window)
        values = op.slide(slab, p, geometry)
        per_position = op.macs_per_position(p)
        self.cost.needed += int((extents[0] * extents[1]).sum()) * per_position
        self.cost.executed += values.shape[0] * values.shape[-2] * values.shape[-1] * per_position
        values = values[:, :, : sizes[0], : sizes[1]]
        if self.tau < 1:
            self._keep_outside_cap(index, values, starts, sizes, extents, firsts)
        return _Window(starts[0], starts[1], values, (firsts[0], firsts[1]), (lasts[0], lasts[1]))

    def _keep_outside_cap(
        self,
        index: int,
        values: Tensor,
        starts: list[Tensor],
        sizes: list[int],
        extents: list[Tensor],
        firsts: list[Tensor],
    ) -> None:
        """Outputs outside a position's capped window (``tau`` < 1) keep their unoccluded
        values, so that a position's result does not depend on the other positions of its
        batch (only the positions whose capped window is smaller than the batch's block need
        it). Writes into ``values``."""
        short = ((extents[0] < sizes[0]) | (extents[1] < sizes[1])).nonzero().flatten()
        if not short.numel():
            return
        inside = [
            (torch.arange(size, device=values.device) >= (first[short] - start[short])[:, None])
            & (torch.arange(size, device=values.device) < (first[short] - start[short] + extent[short])[:, None])
            for first, start, extent, size in zip(firsts, starts, extents, sizes)
        ]
        mask = inside[0][:, None, :, None] & inside[1][:, None, None, :]
        base = self.padded(index).gather(starts[0][short], starts[1][short], *sizes)
        values[short] = torch.where(mask, values[short], base)

    def union(self, call: _Call, windows: dict[int, _Window]) -> _Window | None:
        """An element-wise op of several maps of one size and layout (addition, a product, a
        difference; concatenation along a channel axis) on the union of its parents' changed
        windows. None when a map differs in size or layout along the rows and columns
        (broadcasting a gate), or a tensor that is not on the tape varies along them."""
        changed = list(windows.values())
        dims = changed[0].dims
        out = call.value.shape
        if any(w.dims != dims for w in changed) or len(out) <= max(dims):
            return None
        for parent in call.parents:
            shape = self.base[parent].shape
            if len(shape) != len(out) or any(shape[d] != out[d] for d in dims):
                return None
        constants = _tensors(_fill(call.args, lambda n: self.base[n])) + _tensors(
            _fill(call.kwargs, lambda n: self.base[n])
        )
        tracked = {id(self.base[p]) for p in call.parents}
        for constant in constants:
            if id(constant) in tracked:
                continue
            offset = len(out) - constant.dim()  # broadcasting aligns the trailing axes
            if any(d - offset >= 0 and constant.shape[d - offset] != 1 for d in dims):
                return None
        out_h, out_w = out[dims[0]], out[dims[1]]
        firsts, lasts = [], []
        for axis in range(2):
            firsts.append(torch.stack([window.bounds(axis)[0] for window in changed]).min(0).values)
            lasts.append(torch.stack([window.bounds(axis)[1] for window in changed]).max(0).values)
        y0, h = _span(firsts[0], lasts[0], out_h)
        x0, w = _span(firsts[1], lasts[1], out_w)
        blocks = {}
        for parent in call.parents:
            window = windows.get(parent)
            if window is not None and window.size == (h, w) and _same_place(y0, x0, window):
                blocks[parent] = window.values  # this parent's window is the union
                continue
            block = self.block(parent, dims, y0, x0, h, w, canonical=True)
            if window is not None:
                block = paste(block, y0, x0, window)
            blocks[parent] = block.movedim((-2, -1), dims)
        values = self._call(call, lambda n: blocks[n])
        return _Window(y0, x0, values, (firsts[0], firsts[1]), (lasts[0], lasts[1]), dims)

    def global_mean(
        self,
        call: _Call,
        windows: dict[int, _Window],
        over: tuple[int, ...] | None = None,
        keepdim: bool = True,
        divide: bool = True,
    ) -> Tensor | None:
        """A global pool (a mean over the rows and columns, ``over`` the window's axes, kept as
        axes of size 1 with ``keepdim``; a sum unless ``divide``): the cached output plus the
        window's change of sum (over the area, for a mean). None when ``over`` is not exactly
        the rows and columns."""
        (parent,) = call.parents
        window = windows[parent]
        if over is not None and sorted(over) != sorted(window.dims):
            return None
        h, w = window.size
        old = self.block(parent, window.dims, window.y0, window.x0, h, w)
        change = (window.values - old).sum(dim=window.dims, keepdim=keepdim)
        if divide:
            base = self.base[parent]
            change = change / (base.shape[window.dims[0]] * base.shape[window.dims[1]])
        return call.value + change.to(call.value.dtype)
