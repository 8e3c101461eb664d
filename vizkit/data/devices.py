"""Devices: the ``--device`` value as a torch device, refused with one line when this machine
has no such device."""

from __future__ import annotations

import torch

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
