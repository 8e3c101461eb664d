"""Many unit-exemplar projections at once (issue 28, item 3).

:func:`vizkit.project` runs a forward per chunk of images and then one backward pass per map, at
full image size. Projecting the strongest unit of every map on its k best images (top9, an atlas
of units) asks for many (image, channel, row, col) projections instead, several per image, each
at its own position. :func:`project_units` computes them in bounded batches:

* **Each unit only inside its receptive field.** A unit's projection is zero outside its
  receptive box, and everything its backward pass reads (pooling switches, ReLU inputs) lies at
  positions whose own receptive boxes are inside that box. So the forward and the backward run
  on the input cut to the box, widened on the top / left to a multiple of the layer's stride (so
  that every convolution and pooling grid of the cut falls on the full image's grid): the cut's
  projection equals the full image's inside the box, and the work shrinks with the box (a
  zfnet-compact ``conv3`` unit sees 75 of 144 pixels a side). Values in the cut's border
  positions that *do* differ from the full image's (zero padding where the image goes on) are
  never on the unit's path. The alignment is checked, not assumed: each cut shape's receptive
  boxes, shifted back, must be the full image's box of the same unit, else that unit is projected
  on the whole image.
* **One forward per distinct cut, every unit that shares it in one backward.** Units whose cuts
  are the same (same image and window) share the forward; their seeds go down together in one
  vectorised backward (``torch.autograd.grad(..., is_grads_batched=True)``). A batch holds cuts
  of one shape that carry the same number of units, so no seed is padding (``vizkit.project``
  pads every image of a chunk to the chunk's most-requested image).
* **The backward without oneDNN on CPU.** ATen's im2col + GEMM path computes convolution
  input-gradients about twice as fast here (the first convolution's, back to 3 channels, most of
  all). The forward, whose switches and ReLU masks the projection reads, runs on the default
  backend as in ``vizkit.project``: other rounding there can flip a near-tied pooling switch.
* **Bounded memory.** A batch holds at most ``chunk`` (cut, seed) slots of forward and backward
  state; a cut with more units than that is split.

The result holds each projection cut to the unit's receptive box (what top9 shows), with the box.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from vizkit.engine.deconv import _require_inference_mode, project, receptive_boxes
from vizkit.engine.recorder import Recorder
from vizkit.engine.rules import ProjectionRule, resolve_rule
from vizkit.errors import UsageError, VizkitError

_Window = tuple[int, int, int, int]  # (y0, x0, height, width) of a cut, in input pixels
_HALF_SEED_EXPONENT = 12  # as vizkit.engine.deconv: a float16 seed's peak scaled to [2^12, 2^13)


@dataclass
class UnitProjections:
    """Projections of R units, each cut to its receptive box.

    ``crops[r]`` is request r's projection inside ``boxes[r]``: a [3, y1 - y0, x1 - x0] tensor
    (the projection is zero outside the box); :meth:`image` puts it back on the whole input.
    """

    layer: str
    size: tuple[int, int]  # (H, W) of the input images
    requests: Tensor  # [R, 4] int64: (image, channel, row, col) as asked
    boxes: Tensor  # [R, 4] int64: the unit's receptive box (x0, y0, x1, y1), exclusive ends, clipped
    crops: list[Tensor]  # R tensors [3, y1 - y0, x1 - x0] in input space
    values: Tensor  # [R] the projected activation (recomputed by the projection's forward)

    def __len__(self) -> int:
        return len(self.crops)

    def image(self, r: int) -> Tensor:
        """Request ``r``'s projection on the whole input: [3, H, W], zero outside its box."""
        x0, y0, x1, y1 = self.boxes[r].tolist()
        crop = self.crops[r]
        full = crop.new_zeros((crop.shape[0], *self.size))
        full[:, y0:y1, x0:x1] = crop
        return full

    def images(self, indices: Sequence[int] | None = None) -> Tensor:
        """Projections on the whole input, [n, 3, H, W] (all R by default: mind the memory)."""
        chosen = range(len(self.crops)) if indices is None else indices
        return torch.stack([self.image(r) for r in chosen])


def project_units(
    im: Recorder,
    x: Tensor,
    layer: str,
    requests: Sequence[tuple[int, int, int, int]] | Tensor,
    rule: str | ProjectionRule = "deconvnet",
    chunk: int = 64,
    crop: bool = True,
    channels_last: bool = False,
    geometry: dict | None = None,
) -> UnitProjections:
    """Projections of many single units (unit-exemplars), each equal to
    ``vizkit.project(im, x[i:i+1], layer, [c], position=(row, col), rule=rule)`` (to float
    rounding) inside the unit's receptive box and zero outside it, computed in batches: one
    forward per distinct receptive-field cut shared by all units that use it, their backward
    passes vectorised, and the work done on the cut rather than the whole image (see the module
    docstring). Many times faster than one backward per map at full size when many units are
    projected (top9's winners), with memory bounded by ``chunk``.

    Args:
        im: the instrumented model (:func:`vizkit.instrument`).
        x: the [N, 3, H, W] preprocessed images the requests index.
        layer: the layer (or alias) whose units are projected.
        requests: R unit-exemplars (image index, channel, row, col), an [R, 4] table; any
            number per image, in any order. A layer without spatial maps (fully connected)
            ignores row and col.
        rule: a :class:`~vizkit.engine.rules.ProjectionRule` or a built-in one's name:
            ``"deconvnet"`` (the paper's), ``"guided"`` or ``"gradient"``.
        chunk: how many (cut, unit) slots one forward-and-backward pass holds (bounds memory).
        crop: run each unit on its receptive-field cut (False: on the whole image, e.g. as a
            check; forwards are still shared per image).
        channels_last: run the cuts in channels-last layout: faster convolutions on CPU, but
            other float rounding than ``vizkit.project``'s, which can flip a near-tied pooling
            switch (zfnet-compact ``conv3``: up to 4e-3 of a map's peak), so off by default.
        geometry: a dict to keep across calls on the same model, layer and image size (e.g. one
            per chunk of a dataset's exemplars): the layer's shape and the receptive boxes of the
            image and of each cut size are then computed once, not on every call. None: none kept.

    Returns:
        a :class:`UnitProjections` in request order: each projection cut to its unit's
        receptive box, the boxes and the activations projected. Under float16 the crops are
        float32 (the seeds are scaled into float16's range and the projections scaled back).
    """
    rule = resolve_rule(rule)
    _require_inference_mode(im.model)
    layer = im.resolve_alias(layer)
    if x.dim() != 4:
        raise UsageError(f"x must be an [N, 3, H, W] image batch, not {list(x.shape)}")
    table = torch.as_tensor(requests, dtype=torch.long).reshape(-1, 4).cpu()
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if table.shape[0] == 0:
        empty = torch.zeros((0, 4), dtype=torch.long)
        return UnitProjections(layer, (height, width), empty, empty.clone(), [], torch.zeros(0, dtype=x.dtype))
    cache = geometry if geometry is not None else {}
    key = ("layer", layer, height, width)
    if key not in cache:
        with torch.no_grad():
            probe = im.run_capturing(x[:1].detach().clone(), layer)
        # [h, w, 4] (x0, y0, x1, y1); [1, 1, 4] if not spatial
        cache[key] = (probe.new_zeros((1, *probe.shape[1:])), receptive_boxes(im, x, layer))
    probe, full_boxes = cache[key]
    spatial = probe.dim() == 4
    _check_requests(table, x.shape[0], probe, layer)
    rows, cols = (table[:, 2], table[:, 3]) if spatial else (torch.zeros_like(table[:, 2]),) * 2
    boxes = full_boxes[rows, cols]  # [R, 4]
    windows, units = _cuts(im, x, table, rows, cols, boxes, full_boxes, (height, width), crop and spatial, layer, cache)

    crops: list[Tensor | None] = [None] * table.shape[0]
    values = torch.zeros(table.shape[0], dtype=torch.float32)
    for batch in _batches(table, windows, chunk):
        _run_batch(im, x, layer, rule, table, batch, windows, units, boxes, spatial, channels_last, crops, values)
    missing = [r for r, c in enumerate(crops) if c is None]
    for r in missing:  # float16 overflow: project's own retries at smaller scales
        image, channel, row, col = table[r].tolist()
        one = project(im, x[image : image + 1], layer, [channel], position=(row, col) if spatial else None, rule=rule)
        x0, y0, x1, y1 = boxes[r].tolist()
        crops[r] = one.images[0, 0, :, y0:y1, x0:x1].float().clone()
        values[r] = float(one.values[0, 0])
    return UnitProjections(
        layer, (height, width), table, boxes.clone(), [c for c in crops if c is not None], values.to(x.dtype)
    )


def _check_requests(table: Tensor, images: int, probe: Tensor, layer: str) -> None:
    if bool(((table[:, 0] < 0) | (table[:, 0] >= images)).any()):
        raise UsageError(f"an image index of the requests is out of range (x holds {images} images)")
    channels = probe.shape[1] if probe.dim() >= 2 else 0
    bad = table[(table[:, 1] < 0) | (table[:, 1] >= channels)]
    if bad.shape[0]:
        raise UsageError(f"channel {int(bad[0, 1])} is out of range for layer '{layer}' (it has {channels} channels)")
    if probe.dim() == 4:
        h, w = probe.shape[-2:]
        outside = (table[:, 2] < 0) | (table[:, 2] >= h) | (table[:, 3] < 0) | (table[:, 3] >= w)
        if bool(outside.any()):
            row, col = table[outside][0, 2:].tolist()
            raise UsageError(f"position ({row}, {col}) is outside layer '{layer}' ({h}x{w})")


def _stride(starts: Tensor, ends: Tensor, extent: int) -> int | None:
    """The layer's stride in input pixels along one axis: the most common step between the
    box starts of neighbouring units whose boxes the image border does not clip."""
    steps = [
        int(starts[i + 1] - starts[i])
        for i in range(len(starts) - 1)
        if starts[i] > 0 and ends[i + 1] < extent and starts[i + 1] > starts[i]
    ]
    return Counter(steps).most_common(1)[0][0] if steps else None


def _cuts(
    im: Recorder,
    x: Tensor,
    table: Tensor,
    rows: Tensor,
    cols: Tensor,
    boxes: Tensor,
    full_boxes: Tensor,
    size: tuple[int, int],
    crop: bool,
    layer: str,
    cache: dict,
) -> tuple[list[_Window], list[tuple[int, int]]]:
    """Each request's cut of its image (y0, x0, height, width) and its unit's (row, col) in the
    cut's map: the receptive box widened up / left to the stride's grid, or the whole image
    where the layer has no usable stride or the cut's geometry does not check out."""
    height, width = size
    whole: _Window = (0, 0, height, width)
    count = table.shape[0]
    if not crop:
        return [whole] * count, list(zip(rows.tolist(), cols.tolist()))
    h, w = full_boxes.shape[:2]
    stride_y = _stride(full_boxes[:, w // 2, 1], full_boxes[:, w // 2, 3], height) if h > 1 else None
    stride_x = _stride(full_boxes[h // 2, :, 0], full_boxes[h // 2, :, 2], width) if w > 1 else None
    windows: list[_Window] = []
    units: list[tuple[int, int]] = []
    for (x0, y0, x1, y1), row, col in zip(boxes.tolist(), rows.tolist(), cols.tolist()):
        top = (y0 // stride_y) * stride_y if stride_y else 0
        left = (x0 // stride_x) * stride_x if stride_x else 0
        y_end, x_end = (y1 if stride_y else height), (x1 if stride_x else width)
        windows.append((top, left, y_end - top, x_end - left))
        units.append((row - top // stride_y if stride_y else row, col - left // stride_x if stride_x else col))
    # the check: the cut's own receptive box of the unit, shifted back, is the full image's
    for r, ((x0, y0, x1, y1), window) in enumerate(zip(boxes.tolist(), windows)):
        top, left, cut_h, cut_w = window
        if window == whole:
            continue
        key = ("cut", layer, cut_h, cut_w)
        if key not in cache:
            probe = x.new_zeros((1, x.shape[1], cut_h, cut_w))
            cache[key] = _boxes_or_none(im, probe, layer).tolist()
        found = cache[key]
        row, col = units[r]
        fits = 0 <= row < len(found) and 0 <= col < len(found[row])
        if not (fits and found[row][col] == [x0 - left, y0 - top, x1 - left, y1 - top]):
            windows[r], units[r] = whole, (int(rows[r]), int(cols[r]))
    return windows, units


def _boxes_or_none(im: Recorder, probe: Tensor, layer: str) -> Tensor:
    """The receptive boxes of ``layer`` on an input of ``probe``'s size; empty when the model
    cannot run on it (too small for a layer)."""
    try:
        return receptive_boxes(im, probe, layer)
    except (RuntimeError, VizkitError):
        return torch.zeros(0, dtype=torch.long)


def _batches(table: Tensor, windows: list[_Window], chunk: int) -> list[list[tuple[int, list[int]]]]:
    """Batches of (image, requests) cuts of one shape and one number of requests, at most
    ``chunk`` (cut, seed) slots each: requests sharing an image and window share a cut, and a
    batch's cuts all carry the same number of seeds, so no seed is padding."""
    chunk = max(1, chunk)
    shared: dict[tuple[int, _Window], list[int]] = defaultdict(list)
    for r, window in enumerate(windows):
        shared[(int(table[r, 0]), window)].append(r)
    buckets: dict[tuple[int, int, int], list[tuple[int, list[int]]]] = defaultdict(list)
    for (image, window), members in shared.items():
        for start in range(0, len(members), chunk):  # a cut with more units than a batch holds: split
            piece = members[start : start + chunk]
            buckets[(window[2], window[3], len(piece))].append((image, piece))
    batches: list[list[tuple[int, list[int]]]] = []
    for key in sorted(buckets):
        cuts, per_batch = buckets[key], max(1, chunk // key[2])
        batches.extend(cuts[start : start + per_batch] for start in range(0, len(cuts), per_batch))
    return batches


@contextmanager
def _backward_backend(leaf: Tensor) -> Iterator[None]:
    """On CPU, the backward pass without oneDNN: its convolution input-gradients run about 2x
    faster on ATen's own im2col + GEMM path (a first convolution back to 3 channels most of
    all). Only the backward: the forward, whose switches and ReLU masks the projection reads,
    runs as in ``vizkit.project`` (another backend's rounding can flip a near-tied switch); the
    backward's rounding moves a projection by ~1e-7 of its peak."""
    if leaf.device.type != "cpu" or not _MKLDNN_OFF_IN_BACKWARD:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "TF32 acceleration on top of oneDNN ..."
        with torch.backends.mkldnn.flags(enabled=False):
            yield


_MKLDNN_OFF_IN_BACKWARD = True


def _run_batch(
    im: Recorder,
    x: Tensor,
    layer: str,
    rule: ProjectionRule,
    table: Tensor,
    batch: list[tuple[int, list[int]]],
    windows: list[_Window],
    units: list[tuple[int, int]],
    boxes: Tensor,
    spatial: bool,
    channels_last: bool,
    crops: list[Tensor | None],
    values: Tensor,
) -> None:
    """One forward of the batch's cuts and one (vectorised) backward of all their seeds."""
    pieces = []
    for image, members in batch:
        top, left, cut_h, cut_w = windows[members[0]]
        pieces.append(x[image, :, top : top + cut_h, left : left + cut_w])
    cut = torch.stack(pieces).detach()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    leaf = cut.contiguous(memory_format=layout).requires_grad_(True)
    with torch.enable_grad():
        # the model gets a non-leaf copy, as in vizkit.project: a leaf that requires grad
        # refuses the in-place ops a model may apply to its input
        output = im.run_capturing(leaf.clone(memory_format=layout), layer, rule=rule)
    act = output.detach()
    depth = len(batch[0][1])
    slot_s, slot_g, slot_r = [], [], []
    for g, (_image, members) in enumerate(batch):
        for s, r in enumerate(members):
            slot_s.append(s)
            slot_g.append(g)
            slot_r.append(r)
    device = act.device
    s_idx = torch.tensor(slot_s, device=device)
    g_idx = torch.tensor(slot_g, device=device)
    c_idx = table[slot_r, 1].to(device)
    if spatial:
        where = torch.tensor([units[r] for r in slot_r], device=device)
        seed_values = act[g_idx, c_idx, where[:, 0], where[:, 1]]
    else:
        seed_values = act[g_idx, c_idx]
    scales = torch.ones_like(seed_values, dtype=torch.float32)
    if act.dtype == torch.float16:  # a power of two per seed (exact): the signal stays in range
        magnitude = seed_values.float().abs()
        exponent = torch.where(magnitude > 0, _HALF_SEED_EXPONENT - torch.floor(torch.log2(magnitude)), 0)
        scales = torch.exp2(exponent)
    seeds = torch.zeros((depth, *act.shape), dtype=act.dtype, device=device)
    scaled = (seed_values.float() * scales).to(act.dtype)
    if spatial:
        seeds[s_idx, g_idx, c_idx, where[:, 0], where[:, 1]] = scaled
    else:
        seeds[s_idx, g_idx, c_idx] = scaled
    grad = None
    if output.grad_fn is not None:
        with torch.enable_grad(), _backward_backend(leaf):
            if depth == 1:
                (grad,) = torch.autograd.grad(output, leaf, seeds[0], allow_unused=True)
                grad = None if grad is None else grad[None]
            else:
                (grad,) = torch.autograd.grad(output, leaf, seeds, is_grads_batched=True, allow_unused=True)
    if grad is None:  # not an all-zero projection: the graph is cut, not the signal
        raise VizkitError(
            f"the autograd projection cannot reach the input from layer '{layer}': the model's forward cuts "
            "the graph on the way (.detach(), .data, a round trip through numpy)"
        )
    half = act.dtype == torch.float16
    for n, r in enumerate(slot_r):
        top, left = windows[r][:2]
        x0, y0, x1, y1 = boxes[r].tolist()
        piece = grad[slot_s[n], slot_g[n], :, y0 - top : y1 - top, x0 - left : x1 - left]
        if half:  # scaled back; left to vizkit.project's retries at smaller scales if it overflowed
            piece = piece.float() / float(scales[n])
            crops[r] = piece if bool(torch.isfinite(piece).all()) else None
        else:
            crops[r] = piece.clone(memory_format=torch.contiguous_format)
        values[r] = float(seed_values[n])
