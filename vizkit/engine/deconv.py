"""The deconvnet projection engine (PAPER.md §2).

To look at one activation, every other activation of its layer is set to zero and the result is
run down to pixel space: unpool with the recorded switches (overlapping pools add), rectify, and
filter with the transposed weights (no bias); normalisation passes the signal through.

Two paths compute it and must agree:

* ``method="autograd"`` (default): back-propagation from the seeded layer with every ReLU's
  backward replaced by ``relu(grad_out)`` and normalisation bypassed. Works through any graph
  (residual adds, concatenations, functional calls).
* ``method="explicit"``: a reverse pass written out op by op over a tape recorded during the
  forward, using the recorded switches. It is the paper's procedure verbatim and an independent
  check of the first path; it supports conv, linear, ReLU and smooth rectifiers, gates and
  products, max/avg pooling, means, normalisation, dropout, reshapes, permutes, slicing,
  chunk / split, concatenation and addition (the op table, :mod:`vizkit.engine.ops`), and names
  any other op it meets.

``rule`` picks what a ReLU and a normalisation layer do to the signal going down (a
:class:`~vizkit.engine.rules.ProjectionRule`, or the name of a built-in one): ``"deconvnet"``
(the paper's), ``"guided"`` or ``"gradient"``. Every analysis defaults to the paper's rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor, nn

from vizkit.engine import ops
from vizkit.engine.geometry import Box
from vizkit.engine.ops import Node
from vizkit.engine.recorder import Recorder
from vizkit.engine.rules import ProjectionRule, resolve_rule
from vizkit.engine.tape import OpRecorder
from vizkit.errors import UsageError, VizkitError

Target = Literal["max", "map"]
Method = Literal["autograd", "explicit"]


@dataclass
class Projection:
    """Projections of ``k`` feature maps of one layer for each of ``B`` images."""

    layer: str
    channels: list[int]
    images: Tensor  # [B, k, 3, H, W], pixel space (same space as the model input)
    values: Tensor  # [B, k] the projected activation (its value; the map's max for "map")
    positions: Tensor  # [B, k, 2] (row, col) in the layer map; (-1, -1) for "map" or fc layers


def project(
    im: Recorder,
    x: Tensor,
    layer: str,
    channels: Sequence[int] | Tensor,
    position: tuple[int, int] | Sequence[tuple[int, int]] | Tensor | None = None,
    target: Target = "max",
    method: Method = "autograd",
    rule: str | ProjectionRule = "deconvnet",
    chunk: int = 32,
) -> Projection:
    """Deconvnet projections of ``channels`` of ``layer`` for every image in ``x``.

    Each chunk of ``chunk`` images is run forward once; each map is then one pass down.

    Args:
        im: the instrumented model (:func:`vizkit.instrument`).
        x: the [B,3,H,W] preprocessed input batch.
        layer: the layer (or alias) whose feature maps are projected.
        channels: the k feature maps to project, the same for every image, or a [B,k] tensor:
            different maps for each image.
        position: None: each map's strongest unit (``target="max"``) or the whole map
            (``target="map"``); ``(row, col)``: that unit of every map; a list / [k,2] tensor: one
            unit per channel; a [B,k,2] tensor: one unit per image and channel.
        target: ``"max"`` (the paper's default: the strongest activation) or ``"map"`` (the
            whole map); ignored when ``position`` is given.
        method: ``"autograd"`` (works through any graph) or ``"explicit"`` (the paper's op-by-op
            reverse pass, an independent check; it names any op it cannot reverse).
        rule: a :class:`~vizkit.engine.rules.ProjectionRule` or a built-in one's name:
            ``"deconvnet"`` (the paper's), ``"guided"`` or ``"gradient"``.
        chunk: how many images each forward pass holds (bounds memory).
    """
    if method not in ("autograd", "explicit"):
        raise UsageError(f"unknown projection method '{method}'; use 'autograd' or 'explicit'")
    rule = resolve_rule(rule)
    if target not in ("max", "map"):
        raise UsageError(f"unknown projection target '{target}'; use 'max' or 'map'")
    _require_inference_mode(im.model)
    layer = im.resolve_alias(layer)
    batch = x.shape[0]
    table = torch.as_tensor(channels, dtype=torch.long, device=x.device)
    if table.dim() == 1:
        table = table.expand(batch, -1)
    if table.dim() != 2 or table.shape[0] != batch or table.shape[1] == 0:
        raise UsageError(f"channels must be a non-empty list or a [{batch}, k] table")
    k = table.shape[1]
    where = None
    if position is not None:
        where = torch.as_tensor(position, dtype=torch.long, device=x.device)
        where = where.reshape(-1, 2).expand(k, 2) if where.numel() == 2 else where
        where = where.expand(batch, k, 2) if where.dim() == 2 else where
        if where.shape != (batch, k, 2):
            raise UsageError(f"position must be (row, col), one per channel, or a [{batch}, {k}, 2] table")
    images = torch.empty((batch, k, *x.shape[1:]), dtype=x.dtype, device=x.device)
    values = torch.empty((batch, k), dtype=x.dtype, device=x.device)
    positions = torch.full((batch, k, 2), -1, dtype=torch.long, device=x.device)
    for start in range(0, batch, max(1, chunk)):
        part = slice(start, min(start + max(1, chunk), batch))
        run = (
            _AutogradPass(im, x[part], layer, rule) if method == "autograd" else _ExplicitPass(im, x[part], layer, rule)
        )
        for j in range(k):
            seed, val, pos = make_seed(
                run.act, table[part, j], None if where is None else where[part, j], target, layer
            )
            images[part, j] = _down_in_range(run, seed, last=j == k - 1)
            values[part, j], positions[part, j] = val, pos
    return Projection(
        layer, table[0].tolist() if bool((table == table[0]).all()) else table.tolist(), images, values, positions
    )


# float16's largest finite value is 65504 and its smallest normal one 6.1e-5: a projection's
# signal, run down in float16, starts at the seed's scale and shrinks by the network's gain
_HALF_SEED_EXPONENT = 12  # the seed's peak scaled to [2^12, 2^13): room above, range below
_HALF_BACKOFF = 4  # on overflow, a 16x smaller scale, at most three times


def project_class(
    im: Recorder,
    x: Tensor,
    targets: Sequence[int] | Tensor,
    rule: str | ProjectionRule = "deconvnet",
    chunk: int = 32,
) -> Tensor:
    """The rule's projection of each image's class score down to its pixels: output unit
    ``targets[i]`` of image ``i`` seeded with 1 and everything else 0, passed down the whole
    network. Under ``"gradient"`` this is the gradient of the score (captum's Saliency without its
    absolute value); under ``"deconvnet"`` and ``"guided"`` it is what captum's Deconvolution and
    GuidedBackprop compute. A unit seed, not the score's value: a negative score would flip the
    signal's sign, and the deconvnet's ReLUs would then pass the other half of it.

    Args:
        im: the instrumented model (:func:`vizkit.instrument`); its output must be [B, classes].
        x: the [B, 3, H, W] preprocessed images.
        targets: B class indices (one per image).
        rule: the projection rule or a built-in one's name.
        chunk: how many images each forward holds.

    Returns:
        [B, 3, H, W] projections, in ``x``'s dtype.
    """
    rule = resolve_rule(rule)
    _require_inference_mode(im.model)
    table = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if table.numel() != x.shape[0]:
        raise UsageError(f"give one target class per image ({x.shape[0]}), not {table.numel()}")
    pieces = []
    for start in range(0, x.shape[0], max(1, chunk)):
        part = x[start : start + chunk].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            output = im.run_with_rule(part.clone(), rule)  # a non-leaf copy: see _AutogradPass
            if not isinstance(output, Tensor) or output.dim() != 2:
                raise UsageError("a class projection needs a classifier: the model must output [N, classes] scores")
            wanted = table[start : start + chunk].to(output.device)
            if bool(((wanted < 0) | (wanted >= output.shape[1])).any()):
                raise UsageError(f"a target class is out of range: the model has {output.shape[1]} classes")
            seed = torch.zeros_like(output)
            seed[torch.arange(len(wanted), device=output.device), wanted] = 1
            (grad,) = torch.autograd.grad(output, part, seed, allow_unused=True)
        if grad is None:
            raise VizkitError(
                "the class projection cannot reach the input: the model's forward cuts the graph on the way "
                "(.detach(), .data, a round trip through numpy)"
            )
        pieces.append(grad.detach())
    return torch.cat(pieces)


def _down_in_range(run: _AutogradPass | _ExplicitPass, seed: Tensor, last: bool) -> Tensor:
    """``run.down(seed)``, kept within float16's range for a float16 model: the seed is scaled
    by a power of two (exact) to a peak of 2^12 and the projection divided by it in float32.
    Every built-in rule is positively homogeneous in the signal (a ReLU of a scaled signal is
    the scaled ReLU), so the result is the unscaled projection; without it a deep float16
    model's projections underflow to zero (EfficientNet-B0 at random weights: a gain of about
    1e-12 from its last layers to the pixels, below float16's smallest number, 6e-8)."""
    peak = float(seed.abs().amax())
    if seed.dtype != torch.float16 or peak == 0 or not math.isfinite(peak):
        return run.down(seed, last)
    exponent = _HALF_SEED_EXPONENT - math.floor(math.log2(peak))
    for _attempt in range(3):
        scale = 2.0**exponent
        projection = run.down((seed.float() * scale).half(), last=False)  # the graph is kept for a retry
        if bool(torch.isfinite(projection).all()):
            return projection.float() / scale  # stored in the caller's dtype (float32 images: in range)
        exponent -= _HALF_BACKOFF
    return run.down(seed, last)  # overflows at every scale tried: the model's own range


def _require_inference_mode(model: nn.Module) -> None:
    """Refuse a model whose forward is not repeatable: fractional max-pooling with random windows,
    or dropout or batch-norm layers in training mode (the op table's ``draws_at_random`` and
    ``inference_only``). A projection runs the model forward again (per chunk of images):
    dropout would draw new masks and batch norm would use (and update) other batch statistics,
    so the projection would silently be of other activations than those recorded, and the two
    paths would disagree."""
    training: list[str] = []
    random_pools: list[str] = []
    for name, module in model.named_modules():
        op = ops.op_of_module(module)
        if op is None:
            continue
        if module.training and op.inference_only:
            training.append(f"'{name}' ({type(module).__name__})")
        elif op.draws_at_random(module):
            random_pools.append(f"'{name}'")
    if random_pools:  # new random windows on every forward, in eval mode too
        raise UsageError(
            f"the model's fractional max-pooling {', '.join(random_pools[:3])} draws new pooling windows on every "
            "forward, so a projection (which runs the model again) would not be of the activations recorded; "
            "fix its windows (its _random_samples) to project through it"
        )
    if training:
        more = f" and {len(training) - 2} more" if len(training) > 2 else ""
        raise UsageError(
            f"the model is in training mode: {', '.join(training[:2])}{more} give every forward other "
            "activations (new dropout masks, batch statistics), so a projection would not be of the ones "
            "recorded; call model.eval() first (vizkit.run and vizkit.load_model do)"
        )


class _AutogradPass:
    """One forward to the layer with the rule's ReLUs; each ``down`` is one backward from it."""

    def __init__(self, im: Recorder, x: Tensor, layer: str, rule: ProjectionRule) -> None:
        self.layer = layer
        self.x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            # the model gets a non-leaf copy: a leaf that requires grad refuses the in-place ops
            # (``x.relu_()``) a model may apply to its input, and the caller's x stays as it was
            self.output = im.run_capturing(self.x.clone(), layer, rule=rule)
        self.act = self.output.detach()

    def down(self, seed: Tensor, last: bool) -> Tensor:
        grad = None
        if self.output.grad_fn is not None:
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self.output, self.x, seed, retain_graph=not last, allow_unused=True)
        if grad is None:  # not an all-zero projection: the graph is cut, not the signal
            raise VizkitError(
                f"the autograd projection cannot reach the input from layer '{self.layer}': the model's "
                "forward cuts the graph on the way (.detach(), .data, a round trip through numpy); "
                "method='explicit' reverses the forward op by op and names the op it cannot reverse"
            )
        return grad


class _ExplicitPass:
    """One forward to the layer recording a tape; each ``down`` is one explicit reverse pass."""

    def __init__(self, im: Recorder, x: Tensor, layer: str, rule: ProjectionRule) -> None:
        self.tape = Tape(rule=rule)
        with torch.no_grad():  # a copy: in-place ops of the model on its input leave the caller's x alone
            self.output = im.run_capturing(x.detach().clone(), layer, tape=self.tape)
        self.act = self.output
        if self.tape.index(self.output) is None:
            raise ops.UnsupportedOpError(
                f"the explicit deconvnet lost the signal on its way to layer '{layer}': a call the tape does "
                "not follow (one returning no tensor, or run outside torch) produced an input of it; "
                "use method='autograd'"
            )

    def down(self, seed: Tensor, last: bool) -> Tensor:
        with torch.no_grad():
            return self.tape.reverse(self.output, seed)


def make_seed(
    act: Tensor,
    channels: Tensor,
    position: Tensor | tuple[int, int] | None,
    target: Target,
    layer: str = "",
) -> tuple[Tensor, Tensor, Tensor]:
    """The layer's activations with everything but the chosen one(s) set to zero.

    Row ``r`` keeps channel ``channels[r]``: its strongest activation, the unit at ``position``
    ((row, col) for every row, or an [n, 2] tensor), or the whole map. Returns the seed, the kept
    value per row (the map's max for "map") and the kept (row, col) per row.
    """
    n = act.shape[0]
    if act.dim() < 2:
        raise VizkitError(f"layer '{layer}' has no channel dimension (shape {tuple(act.shape)})")
    n_channels = act.shape[1]
    bad = [int(c) for c in channels if not 0 <= int(c) < n_channels]
    if bad:
        raise UsageError(f"channel {bad[0]} is out of range for layer '{layer}' (it has {n_channels} channels)")
    rows = torch.arange(n, device=act.device)
    maps = act[rows, channels].reshape(n, -1)  # [n, h*w] (h*w = 1 for fc layers)
    seed_maps = torch.zeros_like(maps)
    positions = torch.full((n, 2), -1, dtype=torch.long, device=act.device)
    spatial = act.dim() == 4
    width = act.shape[-1] if spatial else 1
    if target == "map" and position is None:
        seed_maps.copy_(maps)
        values = maps.max(dim=1).values
    else:
        if position is not None and spatial:
            where = torch.as_tensor(position, dtype=torch.long, device=act.device).reshape(-1, 2).expand(n, 2)
            outside = (
                (where[:, 0] < 0) | (where[:, 0] >= act.shape[2]) | (where[:, 1] < 0) | (where[:, 1] >= act.shape[3])
            )
            if bool(outside.any()):
                row, col = where[int(outside.nonzero()[0, 0])].tolist()
                raise UsageError(f"position ({row}, {col}) is outside layer '{layer}' ({act.shape[2]}x{act.shape[3]})")
            flat = where[:, 0] * width + where[:, 1]
        else:
            flat = maps.argmax(dim=1)  # first maximum: deterministic
        values = maps.gather(1, flat[:, None])[:, 0]
        seed_maps.scatter_(1, flat[:, None], values[:, None])
        if spatial:
            positions = torch.stack([flat // width, flat % width], dim=1)
    seed = torch.zeros_like(act)
    seed[rows, channels] = seed_maps.reshape(act[rows, channels].shape)
    return seed, values, positions


# ---------------------------------------------------------------------- explicit reverse pass
class Tape(OpRecorder):
    """The ops of one forward pass, in order, with what reversing each one needs."""

    def __init__(self, rule: str | ProjectionRule = "deconvnet") -> None:
        super().__init__()
        self.rule = resolve_rule(rule)

    def _input_entry(self, x: Tensor) -> Node:
        return Node(None, [], lambda s: [])

    def _entry(
        self, func: Callable, op: ops.Op | None, args: tuple, kwargs: dict, out: Tensor, output: Any, record: Any
    ) -> Node:
        name = getattr(func, "__name__", str(func))
        node = op.reverse(self, args, kwargs, out, record) if op is not None else None
        if node is None:  # an op the explicit path does not know: fine unless a signal reaches it
            node = Node.refusal(op, self.signal_inputs(args, kwargs)[:1], name)
        node.name = name
        return node

    def _record_pieces(
        self, func: Callable, op: ops.Op | None, args: tuple, kwargs: dict, output: Any, record: Any
    ) -> None:
        """A call returning several tensors (chunk, split): each piece reversed as its op says,
        else refused by name when a signal reaches it (not dropped, which would cut the signal
        off without a word)."""
        name = getattr(func, "__name__", str(func))
        nodes = op.reverse_pieces(self, func, args, kwargs, output, record) if op is not None else None
        if nodes is None:
            parents = self.signal_inputs(args, kwargs)[:1]
            nodes = [(t, Node.refusal(op, parents, name)) for t in output if isinstance(t, Tensor)]
        for piece, node in nodes:
            node.name = name
            self._add(piece, node)

    def reverse(self, output: Tensor, seed: Tensor) -> Tensor:
        """Run ``seed`` (a signal on ``output``) down to the tape's input."""
        start = self.require_index(output)
        signals: dict[int, Tensor] = {start: seed}
        for index in range(start, 0, -1):
            signal = signals.pop(index, None)
            if signal is None:
                continue
            node = self.entries[index]
            for parent, contribution in zip(node.parents, node.backward(signal)):
                if parent is None or contribution is None:
                    continue
                signals[parent] = contribution if parent not in signals else signals[parent] + contribution
        result = signals.get(0)
        return result if result is not None else torch.zeros_like(self.outputs[0])

    def receptive_box(self, output: Tensor, row: int, col: int) -> tuple[int, int, int, int]:
        """The input pixels unit (row, col) of ``output``'s maps depends on, as a box
        (x0, y0, x1, y1) with exclusive ends, clipped to the input. Exact for convolution and
        pooling (stride, padding, dilation) and unions over branches; an op that reshapes the
        signal (flatten, linear) depends on its whole input."""
        start = self.require_index(output)
        boxes: dict[int, Box | None] = {start: (row, row, col, col) if output.dim() == 4 else None}
        for index in range(start, 0, -1):
            if index not in boxes:
                continue
            box = boxes.pop(index)
            node = self.entries[index]
            for parent in node.parents:
                if parent is None:
                    continue
                parent_box = _box_down(node, box, self.outputs[index].shape, self.outputs[parent].shape)
                boxes[parent] = _union(boxes[parent], parent_box) if parent in boxes else parent_box
        final = boxes.get(0) or _full(self.outputs[0].shape)
        if final is None:
            raise VizkitError("the model input is not an image batch")
        y0, y1, x0, x1 = final
        return (x0, y0, x1 + 1, y1 + 1)


def _full(shape: torch.Size) -> Box | None:
    return (0, shape[-2] - 1, 0, shape[-1] - 1) if len(shape) == 4 else None


def _box_down(node: Node, box: Box | None, out_shape: torch.Size, in_shape: torch.Size) -> Box | None:
    """The part of a parent's map that ``box`` of the node's output depends on: through the
    node's window, else as its op says (point-wise and channel-wise ops keep it)."""
    if len(in_shape) != 4:
        return None
    if box is None or len(out_shape) != 4:
        return _full(in_shape)
    y0, y1, x0, x1 = box
    if node.window is not None:
        y0, y1 = node.window.input_range(0, y0, y1)
        x0, x1 = node.window.input_range(1, x0, x1)
    else:
        parent_box = (node.op or _UNTRACKED).input_box(box, out_shape, in_shape)
        if parent_box is None:
            return _full(in_shape)  # broadcast or reshaped: the whole parent map
        y0, y1, x0, x1 = parent_box
    height, width = in_shape[-2], in_shape[-1]
    return (max(0, y0), min(height - 1, y1), max(0, x0), min(width - 1, x1))


_UNTRACKED = ops.Op()  # what the box arithmetic assumes of a call vizkit does not track


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None or b is None:
        return a if b is None else b
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


# ---------------------------------------------------------------------- display
@overload
def to_image(projection: Tensor, quantile: float = ..., channels_last: Literal[True] = ...) -> np.ndarray: ...
@overload
def to_image(projection: Tensor, quantile: float = ..., *, channels_last: Literal[False]) -> Tensor: ...
def to_image(projection: Tensor, quantile: float = 0.99, channels_last: bool = True) -> np.ndarray | Tensor:
    """A projection as a displayable image in [0, 1], zero at mid-grey, in the layout
    ``plt.imshow`` takes: ``plt.imshow(vizkit.to_image(im.project(layer, channel=c)))``.

    The paper's contrast scaling: the signal is signed and centred on zero, so it is scaled
    symmetrically about grey, with the ``quantile`` of its non-zero magnitudes at full contrast
    (a few extreme pixels do not wash the rest out), and clipped.

    Shapes, with ``channels_last`` (the default; a float32 numpy array, what matplotlib and PIL
    take):

    * one image, [3, H, W] or [1, 3, H, W] (a projection of a batch of one) -> [H, W, 3];
    * a batch [N, 3, H, W] with N > 1 -> [N, H, W, 3]: ``plt.imshow(shown[i])`` shows image i,
      ``vizkit.toolkit.figures.tile_mosaic(shown, rows=1)`` all of them side by side; more leading axes
      are kept the same way ([A, B, 3, H, W] -> [A, B, H, W, 3]).

    ``channels_last=False`` returns a tensor in the input's layout, shape and device
    ([.., 3, H, W]), for code that slices images channels-first (it never squeezes a batch of one).

    Args:
        projection: one or more projections, [.., 3, H, W] in input space (e.g.
            ``Projection.images``); each [3, H, W] image is scaled on its own.
        quantile: the quantile of non-zero magnitudes shown at full contrast (1.0: the maximum).
        channels_last: return [.., H, W, 3] (imshow's layout) rather than [.., 3, H, W].
    """
    shape = projection.shape
    if projection.dim() < 3 or shape[-3] != 3:
        raise UsageError(f"to_image expects projections shaped [.., 3, H, W], not {list(shape)}")
    flat = projection.detach().float().reshape(-1, shape[-3] * shape[-2] * shape[-1])
    magnitude = flat.abs()
    scales = []
    for row in magnitude:
        nonzero = row[row > 0]
        scales.append(torch.quantile(nonzero, quantile).item() if nonzero.numel() else 1.0)
    scale = torch.tensor(scales, dtype=flat.dtype, device=flat.device).clamp(min=1e-12)
    shown = (0.5 + flat / (2 * scale[:, None])).clamp(0, 1).reshape(shape)
    if not channels_last:
        return shown
    if shown.dim() == 4 and shown.shape[0] == 1:  # a batch of one is one image
        shown = shown[0]
    return shown.movedim(-3, -1).cpu().numpy().astype(np.float32, copy=False)


def receptive_boxes(im: Recorder, x: Tensor, layer: str) -> Tensor:
    """For every unit (row, col) of ``layer``'s maps on inputs shaped like ``x``, the box of
    input pixels it can see: an int64 [h, w, 4] tensor of (x0, y0, x1, y1), exclusive ends,
    clipped to the image. Computed from the graph of one forward, so it is right for strided,
    padded and dilated convolutions and pools, branches and concatenations.

    Args:
        im: the instrumented model (:func:`vizkit.instrument`).
        x: an input batch [N,3,H,W] of the size to analyse; only its first image is run, and only
            its shape matters.
        layer: the layer (or alias) whose units' boxes are wanted; a layer without spatial maps
            (e.g. fully connected) gives one [1, 1, 4] box covering the whole image.
    """
    tape = Tape()
    with torch.no_grad():
        output = im.run_capturing(x[:1].detach(), im.resolve_alias(layer), tape=tape)
    if output.dim() != 4:
        height, width = x.shape[-2:]
        return torch.tensor([[[0, 0, width, height]]], dtype=torch.long)
    h, w = output.shape[-2:]
    boxes = [[tape.receptive_box(output, r, c) for c in range(w)] for r in range(h)]
    return torch.tensor(boxes, dtype=torch.long)


def support_box(projection: Tensor, threshold: float = 0.0) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), exclusive ends, of where a [3,H,W] projection is non-zero.

    With ``threshold`` only pixels whose magnitude exceeds that fraction of the maximum count.
    For the deconvnet this lies within the activation's receptive field; an all-zero projection
    gives the whole image.

    Args:
        projection: one [3,H,W] projection (its magnitude is summed over the colour channels).
        threshold: the fraction of the peak magnitude a pixel must exceed to count (0.0: any
            non-zero pixel).
    """
    magnitude = projection.detach().abs().sum(dim=0)
    peak = float(magnitude.max()) if magnitude.numel() else 0.0
    if peak == 0.0:
        return (0, 0, projection.shape[-1], projection.shape[-2])
    rows, cols = torch.where(magnitude > threshold * peak)
    return (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
