"""Devices and dtypes: the ``--device`` value as a torch device, refused with one line when this
machine has no such device; the dtype a model computes in, which its inputs are cast to."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vizkit.engine.recorder import floating_dtype
from vizkit.errors import UsageError


def ensure_device(name: str) -> torch.device:
    """A torch device, refusing one this machine lacks (CUDA, a CUDA index past the last, MPS)
    or that vizkit does not run on, with a one-line UsageError.

    Args:
        name: the ``--device`` value: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was given but no CUDA device is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was given but this PyTorch or machine has no MPS (Apple GPU) support")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device '{name}'; use cpu or cuda")
    return device


def model_dtype(model: nn.Module, strict: bool = True) -> torch.dtype:
    """The floating dtype ``model`` computes in: that of its floating parameters (of its floating
    buffers when it has no floating parameters; float32 when it has neither). Inputs are cast to it
    where they enter the model.

    Args:
        model: the model.
        strict: refuse a model whose floating parameters are of several dtypes (a UsageError naming
            them); False: the first one's.
    """
    if not strict:
        return floating_dtype(model) or torch.float32
    found: dict[torch.dtype, str] = {}
    for name, tensor in model.named_parameters():
        if tensor.is_floating_point():
            found.setdefault(tensor.dtype, name)
    if not found:
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                found.setdefault(buffer.dtype, name)
                break
    if len(found) > 1:
        kinds = ", ".join(f"{dtype_name(dtype)} (e.g. '{name}')" for dtype, name in found.items())
        raise UsageError(f"the model's parameters mix several dtypes: {kinds}; convert it to one, e.g. model.float()")
    return next(iter(found), torch.float32)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` as ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which sums and statistics over values of ``dtype`` are taken: float32 for the
    half-precision ones (bfloat16 keeps 8 bits of mantissa, float16 11), else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def to_model_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` in the model's ``dtype`` when it is a floating tensor of another one (integer ones
    such as class indices, and tensors already in ``dtype``, unchanged)."""
    if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x
