"""The ADN's input: greyscale images with local subtractive and divisive contrast normalisation.

Zeiler, Taylor & Fergus (ICCV 2011) train on 150x150 greyscale images "with subtractive and
divisive contrast normalisation" (the normalisation of Jarrett et al., ICCV 2009): each pixel
minus a Gaussian-weighted mean of its neighbourhood, then divided by the Gaussian-weighted
standard deviation of that neighbourhood, floored at the image's mean local deviation so flat
regions are not blown up into noise. The result has zero local mean and about unit local
contrast, so one lambda per layer suits every image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vizkit.data import greyscale

KERNEL = 9  # the Gaussian window (Jarrett et al. use 9x9)
SIGMA = 2.0


def gaussian_window(size: int = KERNEL, sigma: float = SIGMA, dtype: torch.dtype = torch.float32) -> Tensor:
    """A normalised 2-D Gaussian ``[1, 1, size, size]`` (weights summing to 1)."""
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(axis**2) / (2 * sigma**2))
    window = torch.outer(g, g)
    return (window / window.sum()).to(dtype).view(1, 1, size, size)


def contrast_normalise(grey: Tensor, size: int = KERNEL, sigma: float = SIGMA, eps: float = 1e-4) -> Tensor:
    """Local subtractive then divisive normalisation of ``[N, 1, H, W]`` grey images.

    Borders are reflected, so the edges of the image are normalised like its inside.
    """
    window = gaussian_window(size, sigma, grey.dtype).to(grey.device)
    pad = size // 2

    def local_mean(x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), window)

    centred = grey - local_mean(grey)
    deviation = local_mean(centred.pow(2)).clamp(min=0).sqrt()
    floor = deviation.mean(dim=(1, 2, 3), keepdim=True).clamp(min=eps)
    return centred / torch.maximum(deviation, floor)


def prepare(images: Tensor) -> Tensor:
    """What an ADN reconstructs: RGB or grey images in [0, 1] as contrast-normalised grey maps."""
    return contrast_normalise(greyscale(images))
