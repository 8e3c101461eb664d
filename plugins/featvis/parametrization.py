"""How an image is parametrised while it is optimised, one job per class:

* a basis that gives an unbounded "raw" image from the parameters: :class:`PixelBasis` (the
  pixels themselves) or :class:`FourierBasis` (Lucid's: scaled ``rfft2`` coefficients, the
  spectrum scaled by 1/frequency so that all frequencies start with equal energy);
* :class:`ColorDecorrelation`: a 3x3 colour matrix applied to the raw image, the square root of
  the ImageNet colour correlation (Lucid's ``color_correlation_svd_sqrt``) or of the RGB covariance
  estimated from a set of images;
* a map to [0, 1]: :class:`Sigmoid` (Lucid's) or :class:`Clip`;
* :class:`Normalize`: the model's mean/std normalisation of a [0, 1] image;
* :class:`ImageParam`: the three first composed, with ``params``, ``image()`` and ``from_image``.

Every step has an inverse, so an image can be set into a parametrisation (``from_image``) and read
back: the tests round-trip images through each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

import vizkit

# Lucid's colour_correlation_svd_sqrt: the square root of ImageNet's RGB correlation (columns =
# the decorrelated colour directions), normalised below by its largest column norm
IMAGENET_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


Generators = torch.Generator | Sequence[torch.Generator] | None


def _init(shape: Sequence[int], sd: float, generator: Generators, device: torch.device | str) -> Tensor:
    """Normal noise of ``shape`` times ``sd``, drawn on the CPU (the same seed, any device): from
    one generator, or row by row from one generator per row (a row then does not depend on the
    rows drawn with it)."""
    if generator is None or isinstance(generator, torch.Generator):
        values = torch.randn(*shape, generator=generator)
    else:
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for {shape[0]} rows")
        values = torch.stack([torch.randn(*shape[1:], generator=g) for g in generator])
    return (values * sd).to(device).requires_grad_(True)


class PixelBasis:
    """The raw image is the parameter itself: ``params`` = one leaf tensor [B,3,H,W]."""

    def __init__(
        self,
        batch: int,
        size: int | tuple[int, int],
        sd: float = 0.01,
        generator: Generators = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.height, self.width = (size, size) if isinstance(size, int) else size
        self.pixels = _init((batch, 3, self.height, self.width), sd, generator, device)

    @property
    def params(self) -> list[Tensor]:
        return [self.pixels]

    def raw(self) -> Tensor:
        return self.pixels

    def set_raw(self, raw: Tensor) -> None:
        with torch.no_grad():
            self.pixels.copy_(raw)


def frequency_scale(height: int, width: int, decay_power: float = 1.0) -> Tensor:
    """Lucid's spectrum scale for an ``rfft2`` of a [height, width] image: 1/frequency^decay_power
    (frequencies below 1/max(height, width) clamped there, so the mean is finite), times
    sqrt(height * width) as Lucid's (for the 1/N of the inverse transform), [height, width // 2 + 1]."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    freqs = torch.sqrt(fx * fx + fy * fy)
    scale = 1.0 / torch.clamp(freqs, min=1.0 / max(width, height)) ** decay_power
    return scale * math.sqrt(width * height)


class FourierBasis:
    """Lucid's Fourier parametrisation: ``params`` = the real and imaginary parts of an image's
    ``rfft2`` coefficients [B,3,H,W//2+1,2], multiplied by :func:`frequency_scale` before the
    inverse transform (and divided by 4, as Lucid does), so that a gradient step changes every
    frequency by about the same amount of energy: the image is decorrelated in space."""

    def __init__(
        self,
        batch: int,
        size: int | tuple[int, int],
        sd: float = 0.01,
        decay_power: float = 1.0,
        generator: Generators = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.height, self.width = (size, size) if isinstance(size, int) else size
        self.scale = frequency_scale(self.height, self.width, decay_power).to(device)
        shape = (batch, 3, self.height, self.width // 2 + 1, 2)
        self.spectrum = _init(shape, sd, generator, device)

    @property
    def params(self) -> list[Tensor]:
        return [self.spectrum]

    def raw(self) -> Tensor:
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        return torch.fft.irfft2(coefficients, s=(self.height, self.width)) / 4.0

    def set_raw(self, raw: Tensor) -> None:
        """Set the coefficients so that :meth:`raw` gives ``raw`` (exactly, up to rounding: the
        imaginary parts ``irfft2`` ignores are those ``rfft2`` of a real image makes zero)."""
        coefficients = torch.fft.rfft2(raw * 4.0) / self.scale
        with torch.no_grad():
            self.spectrum.copy_(torch.view_as_real(coefficients))


class ColorDecorrelation:
    """A linear map of the raw image's colours: ``forward`` mixes the three decorrelated channels
    into RGB with ``matrix`` (rows = RGB, columns = directions), ``inverse`` undoes it."""

    def __init__(self, matrix: Tensor | Sequence[Sequence[float]]) -> None:
        matrix = torch.as_tensor(matrix, dtype=torch.float32)
        if matrix.shape != (3, 3) or not torch.isfinite(matrix).all():
            raise vizkit.UsageError(f"a colour matrix must be 3x3 and finite, not {tuple(matrix.shape)}")
        if torch.linalg.matrix_rank(matrix.double()) < 3:
            raise vizkit.UsageError("the colour matrix is singular: its images' colours span fewer than 3 directions")
        self.matrix = matrix / matrix.norm(dim=0).max()  # Lucid's normalisation: largest column norm 1

    @classmethod
    def imagenet(cls) -> ColorDecorrelation:
        """Lucid's square root of the ImageNet colour correlation."""
        return cls(IMAGENET_COLOR_SQRT)

    @classmethod
    def from_images(cls, images: Tensor) -> ColorDecorrelation:
        """The square root (Cholesky factor) of the RGB covariance of ``images`` [N,3,H,W] in [0, 1]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise vizkit.UsageError(f"colour statistics need images [N,3,H,W], not {tuple(images.shape)}")
        pixels = images.detach().double().permute(1, 0, 2, 3).reshape(3, -1)
        covariance = torch.cov(pixels)
        try:
            factor = torch.linalg.cholesky(covariance)
        except RuntimeError:  # torch.linalg.LinAlgError: not positive definite (grey images)
            raise vizkit.UsageError("the images' colours span fewer than 3 directions (greyscale?)") from None
        return cls(factor.float())

    def forward(self, raw: Tensor) -> Tensor:
        return torch.einsum("ij,bjhw->bihw", self.matrix.to(raw), raw)

    def inverse(self, rgb: Tensor) -> Tensor:
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.matrix.double()).to(rgb), rgb)


class Sigmoid:
    """Lucid's map to [0, 1]; its inverse clamps to [eps, 1 - eps] so that it stays finite."""

    def __init__(self, eps: float = 1e-4) -> None:
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def inverse(self, image: Tensor) -> Tensor:
        return torch.logit(image.clamp(self.eps, 1 - self.eps))


class Clip:
    """Raw values shifted by 0.5 and clipped to [0, 1] (the pixel parametrisation of DVT); the
    inverse of an image in [0, 1] is exact."""

    def forward(self, x: Tensor) -> Tensor:
        return (x + 0.5).clamp(0.0, 1.0)

    def inverse(self, image: Tensor) -> Tensor:
        return image - 0.5


class Normalize:
    """The model's input normalisation of a [0, 1] image: (image - mean) / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def of(cls, preprocess: vizkit.Preprocess) -> Normalize:
        return cls(preprocess.mean, preprocess.std)

    def forward(self, image: Tensor) -> Tensor:
        return (image - self.mean.to(image)) / self.std.to(image)

    def inverse(self, x: Tensor) -> Tensor:
        return x * self.std.to(x) + self.mean.to(x)


Basis = PixelBasis | FourierBasis
Squash = Sigmoid | Clip


class ImageParam:
    """An image to optimise: ``basis`` -> optional ``color`` decorrelation -> ``squash`` to [0, 1].

    ``params`` are the leaf tensors to hand to an optimiser; ``image()`` is [B,3,H,W] in [0, 1];
    ``from_image(image)`` sets the parameters so that ``image()`` gives ``image`` back."""

    def __init__(self, basis: Basis, color: ColorDecorrelation | None = None, squash: Squash | None = None) -> None:
        self.basis = basis
        self.color = color
        self.squash: Squash = squash if squash is not None else Sigmoid()

    @property
    def params(self) -> list[Tensor]:
        return self.basis.params

    def image(self) -> Tensor:
        raw = self.basis.raw()
        if self.color is not None:
            raw = self.color.forward(raw)
        return self.squash.forward(raw)

    def from_image(self, image: Tensor) -> ImageParam:
        raw = self.squash.inverse(image.detach().to(self.params[0].device, torch.float32))
        if self.color is not None:
            raw = self.color.inverse(raw)
        self.basis.set_raw(raw)
        return self


def make_image(
    param: str = "fourier",
    batch: int = 1,
    size: int | tuple[int, int] = 128,
    decorrelate: bool | ColorDecorrelation = True,
    squash: str = "sigmoid",
    sd: float = 0.01,
    decay_power: float = 1.0,
    generator: Generators = None,
    device: torch.device | str = "cpu",
) -> ImageParam:
    """The parametrisation by name: ``param`` "fourier" or "pixel"; ``decorrelate`` True (the
    ImageNet colour matrix), False, or a :class:`ColorDecorrelation`; ``squash`` "sigmoid" or "clip"."""
    basis: Basis
    if param == "fourier":
        basis = FourierBasis(batch, size, sd=sd, decay_power=decay_power, generator=generator, device=device)
    elif param == "pixel":
        basis = PixelBasis(batch, size, sd=sd, generator=generator, device=device)
    else:
        raise vizkit.UsageError(f"unknown parametrisation '{param}': use fourier or pixel")
    if isinstance(decorrelate, ColorDecorrelation):
        color: ColorDecorrelation | None = decorrelate
    else:
        color = ColorDecorrelation.imagenet() if decorrelate else None
    squashes: dict[str, Squash] = {"sigmoid": Sigmoid(), "clip": Clip()}
    if squash not in squashes:
        raise vizkit.UsageError(f"unknown map to [0, 1] '{squash}': use sigmoid or clip")
    return ImageParam(basis, color, squashes[squash])
