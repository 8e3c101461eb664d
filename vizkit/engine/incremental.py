"""Incremental inference for occlusion: recompute only what an occluder can change.

One forward of the unoccluded image is recorded op by op with every output cached (a replay
tape). For a batch of occluder positions the tape is replayed with, per position, the changed
*window* of each tensor: a convolution or pooling recomputes only the outputs whose receptive
field meets the parent's changed window (from the cached input with the window pasted in),
point-wise ops (ReLU, LRN, BatchNorm in eval, dropout in eval) apply to the window, concatenation
and addition take the union of their inputs' windows, and a global average pool is updated by the
window's change of sum. Anything else falls back to recomputing the whole tensor for every
position, from then on. This is exact: every output is computed from exactly the inputs the full
forward would use (Krypton, Nakandala et al., SIGMOD 2019, without its approximations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vizkit.engine import ops
from vizkit.engine.geometry import conv_window, pool_window
from vizkit.engine.recorder import Recorder
from vizkit.engine.tape import OpRecorder
from vizkit.errors import VizkitError

POINTWISE = frozenset({"relu", "local_response_norm", "batch_norm", "dropout", "identity"})


@dataclass
class _Ref:
    node: int


@dataclass
class _Call:
    func: Callable
    op: str | None
    args: tuple
    kwargs: dict
    parents: list[int]
    value: Tensor  # the output on the unoccluded image (batch 1), cloned
    tuple_output: bool


@dataclass
class _Window:
    """Per position p, values[p] is the tensor's [C, h, w] block at (y0[p], x0[p])."""

    y0: Tensor
    x0: Tensor
    values: Tensor

    @property
    def size(self) -> tuple[int, int]:
        return self.values.shape[-2], self.values.shape[-1]


class ReplayTape(OpRecorder):
    """Records each op of one forward with its arguments and its (cloned) output."""

    def _input_entry(self, x: Tensor) -> _Call:
        return _Call(lambda: None, "input", (), {}, [], x.detach().clone(), False)

    def _template(self, value: Any, parents: list[int]) -> Any:
        index = self.index(value)
        if index is not None:
            parents.append(index)
            return _Ref(index)
        if isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) for v in value):
            return type(value)(self._template(v, parents) for v in value)
        return value

    def _entry(
        self, func: Callable, op: str | None, args: tuple, kwargs: dict, out: Tensor, output: Any, switches: Any
    ) -> _Call:
        parents: list[int] = []
        args_t = tuple(self._template(a, parents) for a in args)
        kwargs_t = {k: self._template(v, parents) for k, v in kwargs.items()}
        return _Call(
            func, op, args_t, kwargs_t, list(dict.fromkeys(parents)), out.detach().clone(), isinstance(output, tuple)
        )


def _fill(value: Any, lookup: Callable[[int], Tensor]) -> Any:
    if isinstance(value, _Ref):
        return lookup(value.node)
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(v, lookup) for v in value)
    return value


class _Padded:
    """A cached [1, C, H, W] tensor, padded once per fill value, for gathering blocks from."""

    def __init__(self, base: Tensor) -> None:
        self.base = base
        self._padded: dict[float, tuple[int, Tensor]] = {}

    def gather(self, y0: Tensor, x0: Tensor, h: int, w: int, pad_value: float = 0.0) -> Tensor:
        """[P, C, h, w] blocks at (y0[p], x0[p]), ``pad_value`` outside the tensor."""
        height, width = self.base.shape[-2:]
        need = max(0, int(-y0.min()), int(-x0.min()), int((y0 + h).max()) - height, int((x0 + w).max()) - width)
        margin, padded = self._padded.get(pad_value, (-1, self.base[0]))
        if need > margin:
            margin = max(need, 8)
            padded = F.pad(self.base[0], (margin,) * 4, value=pad_value)
            self._padded[pad_value] = (margin, padded)
        rows = (y0[:, None] + margin + torch.arange(h, device=padded.device))[:, :, None]
        cols = (x0[:, None] + margin + torch.arange(w, device=padded.device))[:, None, :]
        return padded[:, rows, cols].permute(1, 0, 2, 3)


def paste(canvas: Tensor, cy0: Tensor, cx0: Tensor, window: _Window) -> Tensor:
    """``canvas`` [P, C, Hc, Wc] (top-left at (cy0, cx0)) with ``window`` written over it, clipped."""
    p, c, hc, wc = canvas.shape
    h, w = window.size
    rows = window.y0[:, None] - cy0[:, None] + torch.arange(h, device=canvas.device)
    cols = window.x0[:, None] - cx0[:, None] + torch.arange(w, device=canvas.device)
    valid = ((rows >= 0) & (rows < hc))[:, :, None] & ((cols >= 0) & (cols < wc))[:, None, :]
    flat = torch.where(valid, rows[:, :, None] * wc + cols[:, None, :], hc * wc)  # hc*wc: a spare slot
    buffer = torch.cat([canvas.reshape(p, c, -1), canvas.new_zeros(p, c, 1)], dim=2)
    buffer.scatter_(2, flat.reshape(p, 1, -1).expand(p, c, -1), window.values.reshape(p, c, -1))
    return buffer[:, :, :-1].reshape(p, c, hc, wc)


def _span(lo: Tensor, hi: Tensor, limit: int) -> tuple[Tensor, int]:
    """A fixed-size span covering [lo, hi] for every position, shifted to lie within [0, limit)."""
    lo, hi = lo.clamp(min=0), hi.clamp(max=limit - 1)
    size = max(1, min(limit, int((hi - lo + 1).max())))
    return lo.clamp(max=limit - size), size


class IncrementalOcclusion:
    """Occlusion of one image evaluated incrementally against its cached forward."""

    def __init__(self, im: Recorder, x: Tensor, layer: str) -> None:
        self.tape = ReplayTape()
        with torch.no_grad():
            output, captured = im.trace(x, self.tape, layer)
        output_node, layer_node = self.tape.index(output), self.tape.index(captured)
        if output_node is None or layer_node is None:
            raise VizkitError("incremental occlusion needs a model whose output and layer depend on its input")
        self.output_node, self.layer_node = output_node, layer_node
        self.base = [call.value for call in self.tape.entries]
        self._padded = [_Padded(value) if value.dim() == 4 else None for value in self.base]

    def padded(self, index: int) -> _Padded:
        """The cached output of op ``index`` to gather spatial blocks from."""
        padded = self._padded[index]
        assert padded is not None, "only image-shaped tensors are gathered from"
        return padded

    def evaluate(self, corners: list[tuple[int, int]], size: int, fill: Tensor) -> tuple[Tensor, Tensor]:
        """Logits [P, classes] and the layer's output [P, ...] for each occluder position."""
        base0 = self.base[0]
        device, count = base0.device, len(corners)
        y0 = torch.tensor([c[0] for c in corners], device=device)
        x0 = torch.tensor([c[1] for c in corners], device=device)
        colour = fill.to(device, base0.dtype).reshape(1, 3, 1, 1).expand(count, 3, size, size).clone()
        states: dict[int, _Window | Tensor] = {0: _Window(y0, x0, colour)}
        last = max(self.output_node, self.layer_node)
        for index in range(1, last + 1):
            call = self.tape.entries[index]
            changed = [p for p in call.parents if p in states]
            if not changed:
                continue
            states[index] = self._step(index, call, states, count)
        return self._full(self.output_node, states, count), self._full(self.layer_node, states, count)

    # ----------------------------------------------------------------------------- one op
    def _full(self, index: int, states: dict, count: int) -> Tensor:
        state = states.get(index)
        base = self.base[index]
        if state is None:
            return base.expand(count, *base.shape[1:])
        if isinstance(state, Tensor):
            return state
        canvas = base.expand(count, *base.shape[1:]).clone()
        zero = torch.zeros(count, dtype=torch.long, device=base.device)
        return paste(canvas, zero, zero, state)

    def _step(self, index: int, call: _Call, states: dict, count: int) -> _Window | Tensor:
        windows = {p: states[p] for p in call.parents if p in states}
        spatial = all(isinstance(s, _Window) for s in windows.values()) and call.value.dim() == 4
        if spatial and call.op in ("conv2d", "max_pool2d"):
            (parent,) = call.parents if len(call.parents) == 1 else (None,)
            sliding = self._sliding(call, parent, windows[parent]) if parent is not None else None
            if sliding is not None:
                return sliding
        if spatial and call.op in POINTWISE and len(call.parents) == 1:
            parent = call.parents[0]
            if self.base[parent].shape[-2:] == call.value.shape[-2:]:
                return _Window(windows[parent].y0, windows[parent].x0, self._call(call, lambda n: windows[n].values))
        if spatial and (
            call.op == "add" or (call.op == "cat" and ops.bind("cat", call.args, call.kwargs)["dim"] in (1, -3))
        ):
            shapes = {tuple(self.base[p].shape[-2:]) for p in call.parents}
            if shapes == {tuple(call.value.shape[-2:])}:
                return self._union(call, windows, count)
        if spatial and call.op == "adaptive_avg_pool2d" and tuple(call.value.shape[-2:]) == (1, 1):
            (parent,) = call.parents
            window = windows[parent]
            h, w = window.size
            old = self.padded(parent).gather(window.y0, window.x0, h, w)
            area = self.base[parent].shape[-1] * self.base[parent].shape[-2]
            change = (window.values - old).sum(dim=(2, 3), keepdim=True) / area
            return call.value + change
        # unbounded or unknown: recompute the whole tensor for every position
        value = self._call(call, lambda n: self._full(n, states, count))
        return value

    def _call(self, call: _Call, lookup: Callable[[int], Tensor]) -> Tensor:
        kwargs = dict(_fill(call.kwargs, lookup))
        if "inplace" in kwargs:
            kwargs["inplace"] = False
        args = _fill(call.args, lookup)
        if getattr(call.func, "__name__", "") in ("view", "reshape"):  # a literal batch size (x.view(1, -1))
            args = self._rebatch(args, lookup)
        out = call.func(*args, **kwargs)
        return out[0] if call.tuple_output else out

    def _rebatch(self, args: tuple, lookup: Callable[[int], Tensor]) -> tuple:
        tensor = args[0]
        rest = list(args[1:])
        shape = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size)) else rest
        if shape and isinstance(shape[0], int) and shape[0] == 1 and tensor.shape[0] != 1:
            shape = [tensor.shape[0], *shape[1:]]
            return (
                (tensor, shape)
                if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size))
                else (tensor, *shape)
            )
        return args

    def _sliding(self, call: _Call, parent: int, window: _Window) -> _Window | None:
        """The outputs whose windows meet the parent's changed window, recomputed from the
        cached parent with that window pasted in; None when no window describes the call."""
        out_h, out_w = call.value.shape[-2:]
        if call.op == "conv2d":
            p = ops.bind("conv2d", call.args, call.kwargs)
            geometry = conv_window(
                (p["weight"].shape[-2], p["weight"].shape[-1]), p["stride"], p["padding"], p["dilation"]
            )
            pad_value = 0.0
        else:
            p = ops.bind("max_pool2d", call.args, call.kwargs)
            geometry = pool_window(p["kernel_size"], p["stride"], p["padding"], p["dilation"])
            pad_value = float("-inf")
        if geometry is None:  # asymmetric 'same' padding
            return None
        h, w = window.size
        starts, sizes = [], []
        for axis, (origin, length, limit) in enumerate([(window.y0, h, out_h), (window.x0, w, out_w)]):
            lo, hi = geometry.output_range(axis, origin, origin + length - 1)
            start, size = _span(lo, hi, limit)
            starts.append(start)
            sizes.append(size)
        in_y = geometry.input_range(0, starts[0], starts[0])[0]
        in_x = geometry.input_range(1, starts[1], starts[1])[0]
        slab = self.padded(parent).gather(
            in_y, in_x, geometry.input_extent(0, sizes[0]), geometry.input_extent(1, sizes[1]), pad_value
        )
        slab = paste(slab, in_y, in_x, window)
        if call.op == "conv2d":
            values = F.conv2d(slab, p["weight"], p["bias"], geometry.stride, 0, geometry.dilation, p["groups"])
        else:
            values = F.max_pool2d(slab, geometry.kernel, geometry.stride, 0, geometry.dilation)
        return _Window(starts[0], starts[1], values[:, :, : sizes[0], : sizes[1]])

    def _union(self, call: _Call, windows: dict, count: int) -> _Window:
        out_h, out_w = call.value.shape[-2:]
        changed = list(windows.values())
        lo_y = torch.stack([s.y0 for s in changed]).min(0).values
        hi_y = torch.stack([s.y0 + s.size[0] - 1 for s in changed]).max(0).values
        lo_x = torch.stack([s.x0 for s in changed]).min(0).values
        hi_x = torch.stack([s.x0 + s.size[1] - 1 for s in changed]).max(0).values
        y0, h = _span(lo_y, hi_y, out_h)
        x0, w = _span(lo_x, hi_x, out_w)
        blocks = {}
        for parent in call.parents:
            block = self.padded(parent).gather(y0, x0, h, w)
            blocks[parent] = paste(block, y0, x0, windows[parent]) if parent in windows else block
        return _Window(y0, x0, self._call(call, lambda n: blocks[n]))
