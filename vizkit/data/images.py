"""Image decoding: a file as upright 8-bit RGB whatever its mode, bit depth or transparency,
and a one-line error (:class:`UnreadableImage`) for a file that cannot be read."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn

from vizkit.data.preprocess import Preprocess, preprocess_for
from vizkit.errors import UsageError

IMAGE_EXTENSIONS = (
    *(".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"),
    *(".ppm", ".pgm", ".pbm", ".pnm"),
)


def is_image_file(path: Path) -> bool:
    """Whether a dataset scan takes ``path`` as an image: a known extension, not a hidden file.

    Args:
        path: the file.
    """
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601 luma weights of R, G, B: what PIL's "L" mode uses."""


def greyscale(images: Tensor) -> Tensor:
    """``[N, 3, H, W]`` RGB (or ``[N, 1, H, W]`` grey) tensors to ``[N, 1, H, W]`` luma (:data:`LUMA`):
    the grey image the unsupervised models (ADN, CDBN) see.

    Args:
        images: a batch with 1 or 3 channels.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1 or 3, H, W], got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def to_rgb(image: Image.Image) -> Image.Image:
    """An image as 8-bit RGB, upright, the way a person sees the file.

    - EXIF orientation (phone photos) is applied, so nothing is analysed sideways.
    - 16-bit integer images (``I;16*``) are scaled by 65535 / 255, not clipped to white.
    - 32-bit integer images (``I``, e.g. 16-bit PNGs in some Pillow versions): kept when their values
      lie in 0..255, scaled by 65535 when in 0..65535, otherwise stretched from min..max.
    - float images (``F``): values in [0, 1] are scaled by 255, others stretched from min..max of
      the finite values; +-inf become white / black, and NaN (no value) is white like a transparent
      pixel (one NaN no longer turns the whole image black).
    - transparency (RGBA, LA, PA, palette images with a transparent colour, and greyscale, RGB or
      16-bit images with a transparent colour key, PNG's tRNS) is composited over white, so hidden
      colours under transparent pixels never show through.

    Args:
        image: a PIL image of any mode.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    key = image.info.get("transparency")
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        hidden = ~np.isfinite(values) if mode == "F" else np.zeros(values.shape, bool)
        if isinstance(key, (int, float)) and not isinstance(key, bool):  # a transparent grey level (tRNS)
            hidden |= values == key
        finite = values[np.isfinite(values)]  # NaN and +-inf would make the range, and so every pixel, NaN
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
            scaled = values / 65535.0 * 255.0
        elif mode == "I" and low >= 0 and high <= 255:
            scaled = values
        elif mode == "F" and low >= 0 and high <= 1:
            scaled = values * 255.0
        else:  # no known range: stretch what is there
            scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        scaled = np.nan_to_num(scaled, nan=255.0, posinf=255.0, neginf=0.0)  # +inf white, -inf black
        scaled[hidden & ~np.isinf(values)] = 255.0  # NaN and the transparent key: white, like transparency
        return Image.fromarray(np.round(scaled).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "La":  # premultiplied LA: Pillow converts it to LA only ("La" -> "RGBA" is a ValueError)
        image, mode = image.convert("LA"), "LA"
    if (key is not None and mode in ("P", "1", "L", "RGB")) or mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")  # Pillow turns a transparent colour key (tRNS) into alpha here
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class UnreadableImage(UsageError):
    """An image file that cannot be read: missing, a folder, empty, not an image, truncated,
    unreadable (permissions) or corrupt.

    A UsageError, so a single ``--image`` that cannot be read is a one-line error; a dataset
    scan turns it into a skipped item instead (:class:`SkippedImages`). ``path`` is the file,
    ``why`` a short kind (``"truncated"``, ``"empty file"``, ``"not an image"``, ``"permission
    denied"``, ``"missing"``, ``"a folder"``, ``"too large"``, ``"corrupt"``) and ``detail`` the
    reader's own words.
    """

    def __init__(
        self, message: str, path: str | os.PathLike | None = None, why: str = "corrupt", detail: str = ""
    ) -> None:
        if path is None and message.startswith("Caught ") and "Original Traceback" in message:
            # torch re-raises a DataLoader worker's exception as ``type(traceback text)``: keep
            # the message (the traceback's last line), so a plugin that loads --data with its own
            # DataLoader still ends in one line naming the file
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)
        self.path = str(path) if path is not None else ""
        self.why = why
        self.detail = detail or message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.path or None, self.why, self.detail))


def _why(error: BaseException) -> str:
    """The short kind of a reader's exception (see :class:`UnreadableImage`)."""
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, UnidentifiedImageError):
        return "not an image"
    if isinstance(error, Image.DecompressionBombError):
        return "too large"
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return "truncated"
    return "corrupt"


def load_image(path: str | os.PathLike) -> Image.Image:
    """An image file as upright 8-bit RGB (see :func:`to_rgb` for orientation, bit depths and
    transparency).

    Args:
        path: the image file; a missing file, a folder or a file that cannot be decoded to the
            end (empty, not an image, truncated, unreadable) is an :class:`UnreadableImage` (a
            UsageError) naming it.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableImage(f"image not found: {path}", path, "missing", "no such file")
    if path.is_dir():
        raise UnreadableImage(
            f"expected an image file, got a folder: {path} (use --data for folders)", path, "a folder", "a folder"
        )
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        raise UnreadableImage(f"cannot read image {path}: the file is empty (0 bytes)", path, "empty file", "0 bytes")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except Exception as error:
        text = str(error).strip() or type(error).__name__
        detail = text.replace(f"'{path}'", "").replace(str(path), "").strip(" :") or text
        raise UnreadableImage(f"cannot read image {path}: {text}", path, _why(error), detail) from None


def load_images(
    paths: Sequence[str | os.PathLike], preprocess: Preprocess | nn.Module | None = None, model: nn.Module | None = None
) -> Tensor:
    """Several image files as one preprocessed batch [N, 3, crop, crop].

    ``load_images(paths, model=model)`` (or ``load_images(paths, model)``) uses the model's own
    preprocessing (:func:`preprocess_for`): 144x144 for ``zfnet-compact``, 224x224 for an
    ImageNet model; ``load_images(paths)`` uses the ImageNet default.

    Args:
        paths: the image files, in batch order (at least one).
        preprocess: the resize / crop / normalisation applied to each image; a model in this
            place means that model's preprocessing; None: ``model``'s, else the ImageNet default.
        model: the model the batch is for, whose preprocessing is used when ``preprocess`` is None.
    """
    if isinstance(preprocess, nn.Module):
        preprocess, model = None, preprocess
    if preprocess is None:
        preprocess = preprocess_for(model)
    elif not isinstance(preprocess, Preprocess):
        raise UsageError(f"preprocess must be a vizkit.Preprocess or a model, not {type(preprocess).__name__}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # one path, not its characters
    if not paths:
        raise UsageError("no images given")
    return torch.stack([preprocess(load_image(p)) for p in paths])
