"""The CDBN's input: greyscale images whitened as Olshausen & Field (1997) whiten natural images.

Natural images have an amplitude spectrum falling as 1/f; Lee et al. (ICML 2009) train the first
layer on images whitened the same way, so the bases learn edges rather than the image's low
frequencies. The filter is ``R(f) = f exp(-(f / f0)^4)`` with ``f0 = 0.4`` of the Nyquist
frequency: it flattens the 1/f spectrum and rolls off the highest frequencies, where noise and
aliasing live. Each whitened image is then scaled to zero mean and standard deviation ``scale``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vizkit.data import greyscale

CUTOFF = 0.4  # f0 as a fraction of the Nyquist frequency (Olshausen & Field)


def whitening_filter(height: int, width: int, cutoff: float = CUTOFF, dtype: torch.dtype = torch.float64) -> Tensor:
    """``R(f) = f exp(-(f / f0)^4)`` on the ``rfft2`` grid of an ``height x width`` image, with f
    in cycles per pixel and ``f0 = cutoff * 0.5`` (0.5 is Nyquist)."""
    fy = torch.fft.fftfreq(height, dtype=dtype).view(-1, 1)
    fx = torch.fft.rfftfreq(width, dtype=dtype).view(1, -1)
    f = torch.sqrt(fy**2 + fx**2)
    return f * torch.exp(-((f / (cutoff * 0.5)) ** 4))


def whiten(grey: Tensor, scale: float = 1.0, eps: float = 1e-8) -> Tensor:
    """``[N, 1, H, W]`` grey images whitened (:func:`whitening_filter`), each then scaled to zero
    mean and standard deviation ``scale`` (a flat image stays zero)."""
    h, w = grey.shape[-2:]
    spectrum = torch.fft.rfft2(grey.double())
    white = torch.fft.irfft2(spectrum * whitening_filter(h, w).to(grey.device), s=(h, w))
    white = white - white.mean(dim=(1, 2, 3), keepdim=True)
    std = white.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return (scale * white / std.clamp(min=eps)).to(grey.dtype)


def prepare(images: Tensor, scale: float = 1.0) -> Tensor:
    """What the CDBN's first layer sees: RGB or grey images in [0, 1], grey and whitened."""
    return whiten(greyscale(images), scale)
