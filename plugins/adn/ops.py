"""The ADN's two calls as ops vizkit's engine knows: a layer's inferred code and its 3D pooling.

An ADN layer is not a feed-forward map: its maps come out of ISTA on the whole image. For the
engine it is written as the chain the paper's projections walk down: ``adn_code`` (layer l's
inferred maps z_l, wired to the pooled maps below so that going *down* it is the synthesis
``z -> F_l * z``, a transposed convolution with the layer's filters) and ``adn_pool3d`` (3D
max-|z| pooling, recording its switches, unpooled with them going down). A deconvnet projection
of a layer-l feature through these ops is therefore ``F_1 U_1 ... F_l U_l`` applied to it: the
ADN's own top-down reconstruction R_l through the inferred switches (Zeiler et al., ICCV 2011).

Both calls dispatch through ``__torch_function__`` so vizkit's recorder sees them as single
calls (their insides are not recorded); the autograd path agrees with the explicit one: the
code's value is the inferred z, its gradient to the input the transposed synthesis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import handle_torch_function, has_torch_function

from vizkit.engine import Window
from vizkit.engine.ops import Node, Op, parse_signature, register_op

from .pooling import Switches, pool, unpool


def adn_code(input: Tensor, weight: Tensor, code: Tensor) -> Tensor:
    """Layer l's inferred maps ``code`` ``[N, K, H, W]``, as a function of the layer's input.

    The value is ``code``; the derivative with respect to ``input`` (the pooled maps below, or
    the image, whose channels are averaged as the ADN sees grey) is that of ``conv2d(input,
    weight)``: its transpose is the synthesis ``conv_transpose2d(signal, weight)``.

    Args:
        input: the pooled maps of the layer below ``[N, C, H, W]``, or the image ``[N, 3, H, W]``.
        weight: the layer's filters ``[K, C, k, k]`` (odd k).
        code: the maps inference found, ``[N, K, H, W]``.
    """
    if has_torch_function((input, weight, code)):
        return handle_torch_function(adn_code, (input, weight, code), input, weight, code)
    x = input.mean(dim=1, keepdim=True) if input.shape[1] != weight.shape[1] else input
    linear = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    return code.detach() + (linear - linear.detach())


def adn_pool3d(input: Tensor, region: tuple[int, int, int]) -> Tensor:
    """3D max-|z| pooling of ``input`` over (maps, height, width) ``region``: each region's
    element of largest magnitude, sign kept (:func:`.pooling.pool`)."""
    if has_torch_function((input,)):
        return handle_torch_function(adn_pool3d, (input,), input, region)
    return pool(input, tuple(region))[0]  # type: ignore[arg-type]


class AdnCode(nn.Module):
    """Layer l's code (its filters are the module's weight); the model hands it the inferred maps."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)

    def forward(self, input: Tensor, code: Tensor) -> Tensor:
        return adn_code(input, self.weight, code)

    def extra_repr(self) -> str:
        k, c, h, w = self.weight.shape
        return f"{c} -> {k} maps, {h}x{w} filters (inferred by ISTA)"


class AdnPool3d(nn.Module):
    """3D max-|z| pooling over ``region`` (maps, height, width)."""

    def __init__(self, region: tuple[int, int, int]) -> None:
        super().__init__()
        self.region = tuple(int(v) for v in region)

    def forward(self, input: Tensor) -> Tensor:
        return adn_pool3d(input, self.region)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return "region={}x{}x{} (maps x height x width)".format(*self.region)


class AdnCodeOp(Op):
    """An ADN layer's code: going down, the layer's synthesis (a transposed 'same' convolution);
    the image below layer 1 gets the grey signal on each of its channels."""

    name = "adn_code"
    calls = ("adn_code",)
    signature = parse_signature("(input, weight, code)")
    layer, owner = True, AdnCode

    def window(self, p: dict[str, Any]) -> Window:
        k = int(p["weight"].shape[-1])
        return Window((k, k), (1, 1), (k // 2, k // 2))

    def reverse(self, tape: Any, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        p = self.bind(args, kwargs)
        x, weight = p["input"], p["weight"].detach()
        channels = x.shape[1]

        def synthesise(signal: Tensor) -> list[Tensor]:
            below = F.conv_transpose2d(signal, weight, padding=weight.shape[-1] // 2)
            if channels != weight.shape[1]:  # the image: the mean's transpose spreads it evenly
                below = below.expand(-1, channels, -1, -1) / channels
            return [below]

        return Node(self, [tape.index(x)], synthesise, window=self.window(p))

    def macs(self, args: tuple, kwargs: dict, output: Tensor) -> int:
        return output.numel() * self.bind(args, kwargs)["weight"][0].numel()


class AdnPool3dOp(Op):
    """3D max-|z| pooling: records its switches going up, unpools with them going down."""

    name = "adn_pool3d"
    calls = ("adn_pool3d",)
    signature = parse_signature("(input, region)")
    layer, owner = True, AdnPool3d

    def window(self, p: dict[str, Any]) -> Window:
        _, h, w = p["region"]
        return Window((h, w), (h, w), (0, 0))

    def forward(self, func: Callable, args: tuple, kwargs: dict, rule: Any, record: bool) -> tuple[Any, Any]:
        if not record:
            return func(*args, **kwargs), None
        p = self.bind(args, kwargs)
        pooled, switches = pool(p["input"], tuple(p["region"]))
        return pooled, switches

    def reverse(self, tape: Any, args: tuple, kwargs: dict, out: Tensor, record: Any) -> Node:
        from vizkit import VizkitError

        if not isinstance(record, Switches):
            raise VizkitError("the explicit deconvnet needs the ADN's 3D pooling switches (switches=True)")
        p = self.bind(args, kwargs)

        def unpool_down(signal: Tensor) -> list[Tensor]:
            return [unpool(signal, record)]

        return Node(self, [tape.index(p["input"])], unpool_down, window=self.window(p))


def _register() -> tuple[Op, Op]:
    """The two ops, registered once per process (a re-import finds them in the table)."""
    from vizkit.engine.ops import OPS

    existing = (OPS.get(AdnCodeOp.name), OPS.get(AdnPool3dOp.name))
    if existing[0] is not None and existing[1] is not None:
        return existing  # type: ignore[return-value]
    return register_op(AdnCodeOp()), register_op(AdnPool3dOp())


CODE_OP, POOL_OP = _register()
__all__ = ["CODE_OP", "POOL_OP", "AdnCode", "AdnPool3d", "adn_code", "adn_pool3d"]
