"""Probabilistic max-pooling as an op (:mod:`vizkit.engine.ops.probpool`): its switches are a
distribution over each cell, recorded in the forward, and a projection going down spreads each
pooled signal over its cell by the :func:`~vizkit.engine.ops.probpool.switch_mode` of the block it
runs in (argmax, expected or sampled switches).

Both projection paths spread alike: the explicit one unpools with the recorded weights; the
autograd one's forward returns ``P(p = 1)`` whose gradient to each detection unit's input is
the pooled signal times that unit's weight (not the derivative of ``P(p = 1)``, which would mix
in the "off" state's probability: a deconvnet unpools, it does not differentiate the pool).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vizkit.engine.geometry import Window
from vizkit.engine.ops.base import Node, PoolSwitches, SlidingOp, first_input, parse_signature, register_op
from vizkit.engine.ops.probpool import (
    ProbMaxPool2d,
    _kernel,
    current_switch_mode,
    pool_cells,
    prob_max_pool_probabilities,
    spread_weights,
    unpool_cells,
)
from vizkit.errors import VizkitError

if TYPE_CHECKING:
    from vizkit.engine.deconv import Tape
    from vizkit.engine.rules import ProjectionRule


@dataclass(frozen=True)
class ProbPoolSwitches(PoolSwitches):
    """A probabilistic max-pool's switches: ``indices`` are the most probable unit of each cell
    (as a max-pool's), ``conditional`` each cell's ``P(h_j = 1 | p = 1)`` ``[N, C, h, w, n]``,
    ``weights`` what the projection spreads a pooled signal with under switch mode ``kind``."""

    conditional: Tensor | None = None
    weights: Tensor | None = None
    kind: str = "argmax"

    def unpool(self, signal: Tensor) -> Tensor:
        """``signal`` on the pooling units ``[N, C, h, w]`` spread over their cells by the weights."""
        assert self.weights is not None
        return unpool_cells(signal.unsqueeze(-1) * self.weights.to(signal.dtype), self.window.kernel, self.input_shape)


class ProbabilisticMaxPool(SlidingOp):
    """Probabilistic max-pooling: records its switches (a distribution per cell) going up,
    spreads the signal by them going down."""

    name = "prob_max_pool2d"
    calls = ("prob_max_pool2d",)
    signature = parse_signature("(input, kernel_size=2, stride=None)")
    layer, owner = True, ProbMaxPool2d
    pad_value = float("-inf")

    def window(self, p: dict[str, Any]) -> Window:
        kernel = _kernel(p["kernel_size"], p["stride"])
        return Window(kernel, kernel, (0, 0))

    def forward(
        self, func: Callable, args: tuple, kwargs: dict, rule: ProjectionRule | None, record: bool
    ) -> tuple[Any, Any]:
        if rule is None and not record:
            return func(*args, **kwargs), None
        p = self.bind(args, kwargs)
        x, window = p["input"], self.window(p)
        mode = current_switch_mode()
        mode.uses += 1
        with torch.no_grad():
            pooled = prob_max_pool_probabilities(x, window.kernel)[1]
        conditional, indices, weights = spread_weights(x, window.kernel, mode)
        if rule is not None:  # the autograd path: the value P(p = 1), the gradient the unpooling
            linear = (pool_cells(x, window.kernel) * weights).sum(dim=-1)
            return pooled + (linear - linear.detach()), None
        switches = ProbPoolSwitches(
            indices=indices,
            input_shape=tuple(x.shape),
            window=window,
            ceil_mode=False,
            conditional=conditional,
            weights=weights,
            kind=mode.kind,
        )
        return pooled, switches

    def reverse(self, tape: Tape, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        if not isinstance(record, ProbPoolSwitches):
            raise VizkitError("the explicit deconvnet needs the probabilistic pool's switches (switches=True)")
        return Node(self, [tape.index(first_input(args, kwargs))], lambda s: [record.unpool(s)], window=record.window)

    def slide(self, slab: Tensor, p: dict[str, Any], window: Window) -> Tensor:
        return prob_max_pool_probabilities(slab, window.kernel)[1]


PROB_MAX_POOL = register_op(ProbabilisticMaxPool())
__all__ = ["PROB_MAX_POOL", "ProbPoolSwitches", "ProbabilisticMaxPool"]
