"""The activations a recorded forward keeps: the model's own output tensors, copied on write.

Copying every layer's output as it appears costs, on a model of many small point-wise layers
(EfficientNet-B0 at batch 8: 260 layers), about what its convolutions cost. Almost no layer
output is ever changed after it is produced, so :class:`KeptActivations` keeps a reference to
each one and copies it only when an in-place op is about to overwrite its storage (a
``ReLU(inplace=True)`` on a convolution's output, ``out += identity``), which the recorder's
function mode sees before the op runs (:func:`vizkit.engine.ops.in_place.overwritten`).

An in-place op the mode cannot see (a C++ extension writing into its input, ``.data``
assignments) is caught afterwards by the tensor's version counter, which every in-place write
advances: :meth:`KeptActivations.seal` checks them when the forward ends, and the recorder then
runs the forward again copying every output as it appears. Outputs the forward returns are
copied at its end too, so that the caller changing them in place cannot change what was recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vizkit.engine.ops.in_place import overwritten, tensors_in
from vizkit.errors import VizkitError


def _address(tensor: Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class KeptActivations:
    """Layer name -> its output in one forward: references while nothing writes over them.

    ``copy_all`` copies each output as it is kept (the recorder's fallback when :meth:`seal`
    finds an output changed behind the mode's back; also under ``torch.inference_mode``, whose
    tensors have no version counter)."""

    def __init__(self, copy_all: bool = False, protected: Tensor | None = None) -> None:
        self.values: dict[str, Tensor] = {}
        self.copy_all = copy_all
        self.stale = False  # an output kept by reference changed without the mode seeing it
        self._shared: dict[int, list[str]] = {}  # storage address -> layers holding a reference
        self._versions: dict[str, int] = {}  # layer -> its reference's version when kept
        self._protected = None if protected is None else _address(protected)  # the forward's input

    def __bool__(self) -> bool:
        """Whether any output is held by reference (the mode need not look at calls otherwise)."""
        return bool(self._shared)

    def keep(self, layer: str, output: Tensor, copy: bool = True) -> None:
        """Keep ``output`` (detached) as ``layer``'s activation; ``copy=False``: no later op can
        change it (the forward stops at this layer)."""
        value = output.detach()
        if not copy:
            self.values[layer] = value
            return
        if self.copy_all or value.layout != torch.strided or torch.is_inference_mode_enabled() or value.is_inference():
            self.values[layer] = value.clone()
            return
        address = _address(value)
        if address == self._protected:  # a view of the caller's input, which the caller may reuse
            self.values[layer] = value.clone()
            return
        self.values[layer] = value
        self._versions[layer] = value._version
        self._shared.setdefault(address, []).append(layer)

    def before_write(self, func: Callable, args: tuple, kwargs: dict) -> None:
        """Copy the outputs held by reference that ``func(*args, **kwargs)`` is about to overwrite."""
        for target in overwritten(func, args, kwargs):
            if target.layout == torch.strided:
                self._copy(_address(target))

    def seal(self, output: Any) -> None:
        """At the end of the forward: copy what aliases the returned ``output`` (the caller may
        change it in place), and note whether any reference changed unseen (:attr:`stale`)."""
        for tensor in tensors_in(output):
            if tensor.layout == torch.strided and self._shared:
                self._copy(_address(tensor))
        self.stale = self.stale or any(self.values[layer]._version != v for layer, v in self._versions.items())

    def get(self, layer: str) -> Tensor:
        """``layer``'s kept output; an error when code outside the forward has changed it."""
        value = self.values[layer]
        version = self._versions.get(layer)
        if version is not None and value._version != version:
            raise VizkitError(
                f"the recorded output of layer '{layer}' was changed in place after the forward; "
                "run the forward again before reading it"
            )
        return value

    def _copy(self, address: int) -> None:
        layers = self._shared.pop(address, None)
        if not layers:
            return
        copies: dict[tuple, Tensor] = {}  # one copy per distinct view of the storage
        for layer in layers:
            value = self.values[layer]
            if value._version != self._versions.pop(layer):
                self.stale = True  # already overwritten by an op the mode did not see
            key = (value.storage_offset(), tuple(value.shape), value.stride(), value.dtype)
            if key not in copies:
                copies[key] = value.clone()
            self.values[layer] = copies[key]
