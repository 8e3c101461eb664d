"""Window arithmetic of convolutions and pools: which inputs an output sees, and back.

One place for what receptive fields (:mod:`vizkit.engine.deconv`), the deconvnet's transposed
convolutions and incremental occlusion (:mod:`vizkit.engine.incremental`) all need: the
(kernel, stride, padding, dilation) of a call, resolved from its arguments once, and the index
arithmetic between an output range and the input range it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from torch import Tensor

Pair = tuple[int, int]
Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), inclusive, in one tensor's map
Index = TypeVar("Index", int, Tensor)  # one position, or one per occluder position


def pair(value: Any) -> Pair:
    """An int-or-pair convolution / pooling parameter as a pair."""
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


@dataclass(frozen=True)
class Window:
    """The sliding window of one conv or pool call, per spatial axis (rows, columns)."""

    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair = (1, 1)

    def reach(self, axis: int) -> int:
        """How far past its first input a window extends: dilation x (kernel - 1)."""
        return self.dilation[axis] * (self.kernel[axis] - 1)

    def input_range(self, axis: int, lo: Index, hi: Index) -> tuple[Index, Index]:
        """The input indices (inclusive, unclipped; padding may make them negative or too
        large) that outputs ``lo..hi`` along ``axis`` read."""
        start = lo * self.stride[axis] - self.padding[axis]
        return start, hi * self.stride[axis] - self.padding[axis] + self.reach(axis)

    def output_range(self, axis: int, lo: Index, hi: Index) -> tuple[Index, Index]:
        """The outputs (inclusive, unclipped) whose windows meet inputs ``lo..hi`` along
        ``axis``; ints or integer tensors (floor division works on both)."""
        stride, padding = self.stride[axis], self.padding[axis]
        first = (lo + padding - self.reach(axis) + stride - 1) // stride
        return first, (hi + padding) // stride

    def input_extent(self, axis: int, outputs: int) -> int:
        """How many consecutive inputs ``outputs`` consecutive outputs read."""
        return (outputs - 1) * self.stride[axis] + self.reach(axis) + 1

    def transposed_output_padding(self, input_size: Pair, output_size: Pair) -> Pair:
        """``output_padding`` that makes a transposed convolution of an output of
        ``output_size`` come back at exactly ``input_size`` (strides drop trailing inputs)."""
        sizes = []
        for axis in range(2):
            covered = (output_size[axis] - 1) * self.stride[axis] - 2 * self.padding[axis] + self.reach(axis) + 1
            sizes.append(input_size[axis] - covered)
        return (sizes[0], sizes[1])


def pool_window(kernel_size: Any, stride: Any, padding: Any = 0, dilation: Any = 1) -> Window:
    """The window of a pooling call; a missing stride means stride = kernel (torch's default)."""
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = kernel_size
    return Window(pair(kernel_size), pair(stride), pair(padding), pair(dilation))


def conv_window(kernel: Pair, stride: Any, padding: Any, dilation: Any) -> Window | None:
    """The window of a convolution; string padding resolved ('valid', symmetric 'same').
    None when the padding is asymmetric (an even 'same' kernel), which no window describes."""
    dilation_pair = pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same" and all(dilation_pair[i] * (kernel[i] - 1) % 2 == 0 for i in range(2)):
            padding = tuple(dilation_pair[i] * (kernel[i] - 1) // 2 for i in range(2))
        else:
            return None
    return Window(pair(kernel), pair(stride), pair(padding), dilation_pair)


def adaptive_bin(index: int, input_size: int, output_size: int) -> tuple[int, int]:
    """Input range [start, end) that output ``index`` of an adaptive pool averages."""
    return (index * input_size) // output_size, -(-((index + 1) * input_size) // output_size)
