"""Probabilistic max-pooling (Lee, Grosse, Ranganath & Ng, ICML 2009) and the switches it gives.

A pooling cell of n detection units with inputs I_1..I_n (I = W * v + b from below) allows at
most one of them on; the pooling unit is on if one is. The cell's 2^n configurations collapse
into n + 1 states: unit j on, with probability exp(I_j) / (1 + sum_l exp(I_l)), or all off, with
probability 1 / (1 + sum_l exp(I_l)). :func:`prob_max_pool2d` returns the pooling units'
probability of being on; :func:`prob_max_pool_probabilities` also each detection unit's.

Where a max-pool's switches say *which* unit won, a probabilistic pool's say how likely each is
to be the one that is on, given that the pooling unit is: ``P(h_j = 1 | p = 1) = softmax(I)_j``
over the cell. A projection going down spreads a pooling unit's signal over its cell by one of
three switch modes, chosen for a ``with`` block by :func:`switch_mode`:

* ``"argmax"`` (the default, the paper's deconvnet): all of it to the most probable unit;
* ``"expected"``: to every unit, in proportion to ``P(h_j = 1 | p = 1)``;
* ``"sampled"``: all of it to one unit drawn from that distribution (seeded; the expected
  switches are the mean of the sampled ones). A draw depends on the seed and the pooled
  tensor's shape, so both projection paths draw alike, but an image drawn alone and the same
  image inside a batch get different switches.

Cells are disjoint ``k x k`` blocks (stride = kernel, as the model defines them); rows and
columns past the last whole block belong to no cell (their units are on with the sigmoid of
their input, the one-unit case, and are not pooled), as ``max_pool2d`` drops them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import handle_torch_function, has_torch_function

SwitchKind = Literal["argmax", "expected", "sampled"]
SWITCH_MODES: tuple[str, ...] = ("argmax", "expected", "sampled")


def _kernel(kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None) -> tuple[int, int]:
    kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(int(k) for k in kernel_size)
    if len(kernel) != 2 or min(kernel) < 1:
        raise ValueError(f"kernel_size must be one or two positive integers, not {kernel_size!r}")
    if stride is not None:
        steps = (stride, stride) if isinstance(stride, int) else tuple(int(s) for s in stride)
        if tuple(steps) != tuple(kernel):
            raise ValueError(
                f"probabilistic max-pooling pools disjoint cells: stride must equal kernel_size ({kernel}), not {stride!r}"
            )
    return (int(kernel[0]), int(kernel[1]))


def pool_cells(input: Tensor, kernel: tuple[int, int]) -> Tensor:
    """The whole cells of ``input`` [N, C, H, W] as ``[N, C, H // kh, W // kw, kh * kw]``."""
    n, c, h, w = input.shape
    kh, kw = kernel
    rows, cols = h // kh, w // kw
    inner = input[..., : rows * kh, : cols * kw]
    return inner.reshape(n, c, rows, kh, cols, kw).permute(0, 1, 2, 4, 3, 5).reshape(n, c, rows, cols, kh * kw)


def unpool_cells(
    values: Tensor, kernel: tuple[int, int], shape: torch.Size | tuple[int, ...], fill: Tensor | None = None
) -> Tensor:
    """The inverse of :func:`pool_cells`: ``[N, C, h, w, kh * kw]`` back to ``shape`` [N, C, H, W];
    the positions outside every cell hold ``fill`` there (zeros without it)."""
    n, c, rows, cols, _ = values.shape
    kh, kw = kernel
    planes = values.reshape(n, c, rows, cols, kh, kw).permute(0, 1, 2, 4, 3, 5).reshape(n, c, rows * kh, cols * kw)
    height, width = int(shape[-2]), int(shape[-1])
    if (rows * kh, cols * kw) == (height, width):
        return planes
    out = fill.clone() if fill is not None else values.new_zeros((n, c, height, width))
    out[..., : rows * kh, : cols * kw] = planes
    return out


def cell_states(blocks: Tensor) -> Tensor:
    """Each cell's n + 1 state probabilities ``[..., n + 1]`` from its inputs ``[..., n]``
    (:func:`pool_cells`): unit j on, ``exp(I_j) / (1 + sum exp(I))``, then all off (logit 0),
    as one softmax so that large inputs do not overflow."""
    return torch.cat([blocks, blocks.new_zeros((*blocks.shape[:-1], 1))], dim=-1).softmax(dim=-1)


def draw_states(probabilities: Tensor, uniform: Tensor) -> Tensor:
    """The state each row of ``probabilities`` ``[..., k]`` draws with ``uniform`` ``[..., 1]`` in
    [0, 1): the first whose cumulative mass passes u times the row's total (its mass as rounded,
    so a state of probability 0 is never drawn)."""
    cumulative = probabilities.double().cumsum(dim=-1)
    chosen = (cumulative < uniform.to(cumulative.device) * cumulative[..., -1:]).sum(dim=-1)
    return chosen.clamp(max=probabilities.shape[-1] - 1)


def prob_max_pool_probabilities(
    input: Tensor, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None
) -> tuple[Tensor, Tensor]:
    """Each detection unit's ``P(h_j = 1)`` (the shape of ``input``) and each pooling unit's
    ``P(p = 1)`` ``[N, C, H // kh, W // kw]`` for inputs ``I`` = ``input``, computed as a softmax
    over each cell's n + 1 states (the "off" state's logit is 0), so large inputs do not overflow.

    Args:
        input: the detection units' inputs ``I`` [N, C, H, W].
        kernel_size: the cell (``k`` or ``(kh, kw)``).
        stride: None or equal to ``kernel_size`` (cells are disjoint).
    """
    kernel = _kernel(kernel_size, stride)
    blocks = pool_cells(input, kernel)
    detection = cell_states(blocks)[..., :-1]
    pooled = detection.sum(dim=-1)
    return unpool_cells(detection, kernel, input.shape, fill=torch.sigmoid(input)), pooled


def prob_max_pool2d(
    input: Tensor, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None
) -> Tensor:
    """The pooling units' probability of being on, ``1 - 1 / (1 + sum_cell exp(I))``, over
    disjoint ``kernel_size`` cells of ``input`` (the detection units' inputs ``I``).

    One call as vizkit's recorder sees it (it dispatches through ``__torch_function__``): an
    instrumented forward records its switches (:class:`~vizkit.engine.ops.ProbPoolSwitches`) and
    the deconvnet unpools with them by the current :func:`switch_mode`.
    """
    if has_torch_function((input,)):
        return handle_torch_function(prob_max_pool2d, (input,), input, kernel_size, stride)
    return prob_max_pool_probabilities(input, kernel_size, stride)[1]


class ProbMaxPool2d(nn.Module):
    """Probabilistic max-pooling over disjoint ``kernel_size`` cells (:func:`prob_max_pool2d`)."""

    def __init__(self, kernel_size: int | tuple[int, int] = 2) -> None:
        super().__init__()
        self.kernel_size = _kernel(kernel_size, None)

    def forward(self, input: Tensor) -> Tensor:
        return prob_max_pool2d(input, self.kernel_size)

    def extra_repr(self) -> str:
        return "kernel_size={}x{} (probabilistic)".format(*self.kernel_size)


@dataclass
class SwitchMode:
    """The switch mode of a ``with switch_mode(...)`` block; ``uses`` counts the probabilistic
    pools that spread a signal by it (0 after a block whose model has none)."""

    kind: SwitchKind = "argmax"
    seed: int = 0
    uses: int = 0


_MODE: ContextVar[SwitchMode | None] = ContextVar("vizkit_switch_mode", default=None)


@contextmanager
def switch_mode(kind: str = "argmax", seed: int = 0) -> Iterator[SwitchMode]:
    """Inside the block, projections cross probabilistic max-pools by ``kind`` switches
    (``argmax``, ``expected`` or ``sampled``; sampled ones drawn from ``seed``). Ordinary
    max-pools have argmax switches whatever the mode. Yields the mode, whose ``uses`` says how
    many probabilistic pools it served."""
    if kind not in SWITCH_MODES:
        raise ValueError(f"switches must be one of {', '.join(SWITCH_MODES)}, not {kind!r}")
    state = SwitchMode(kind=kind, seed=int(seed))  # type: ignore[arg-type]
    token = _MODE.set(state)
    try:
        yield state
    finally:
        _MODE.reset(token)


def current_switch_mode() -> SwitchMode:
    """The innermost :func:`switch_mode` block's mode (argmax outside any)."""
    return _MODE.get() or SwitchMode()


def spread_weights(input: Tensor, kernel: tuple[int, int], mode: SwitchMode) -> tuple[Tensor, Tensor, Tensor]:
    """For inputs ``I`` [N, C, H, W]: the conditional probabilities ``P(h_j = 1 | p = 1)`` per
    cell ``[N, C, h, w, n]``, the argmax flat index into each input plane ``[N, C, h, w]``, and the
    weights ``mode`` spreads a pooled signal with ``[N, C, h, w, n]`` (one-hot for argmax and
    sampled switches). A sampled draw depends on the seed and the tensor's shape only, so the
    explicit and the autograd paths of one projection draw the same switches."""
    blocks = pool_cells(input.detach(), kernel)
    # half precision is computed in float32, float64 stays float64 (not rounded to float32)
    conditional = blocks.softmax(dim=-1, dtype=torch.promote_types(blocks.dtype, torch.float32)).to(blocks.dtype)
    best = blocks.argmax(dim=-1)  # the largest input: the softmax's argmax, before any rounding ties it
    n = blocks.shape[-1]
    if mode.kind == "sampled":
        generator = torch.Generator().manual_seed(hash((mode.seed, tuple(input.shape))) % (2**63))
        uniform = torch.rand((*blocks.shape[:-1], 1), generator=generator, dtype=torch.float64)
        chosen = draw_states(conditional, uniform)
    else:
        chosen = best
    if mode.kind == "expected":
        weights = conditional
    else:
        weights = F.one_hot(chosen, n).to(blocks.dtype)
    kh, kw = kernel
    top = torch.arange(blocks.shape[2], device=input.device).view(1, 1, -1, 1) * kh
    left = torch.arange(blocks.shape[3], device=input.device).view(1, 1, 1, -1) * kw
    indices = (top + best // kw) * input.shape[-1] + left + best % kw
    return conditional, indices, weights


__all__ = [
    "SWITCH_MODES",
    "ProbMaxPool2d",
    "SwitchMode",
    "cell_states",
    "current_switch_mode",
    "draw_states",
    "pool_cells",
    "prob_max_pool2d",
    "prob_max_pool_probabilities",
    "spread_weights",
    "switch_mode",
    "unpool_cells",
]
