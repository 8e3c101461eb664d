"""Images in, tensors out: loading, preprocessing, datasets and class labels."""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from vizkit.errors import UsageError

if TYPE_CHECKING:  # torchvision is imported where used: it costs seconds at start-up
    from torchvision import transforms

IMAGE_EXTENSIONS = (
    *(".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"),
    *(".ppm", ".pgm", ".pbm", ".pnm"),
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_SIZE = 4096  # largest --resize / --crop
RESIZE_PIXELS = MAX_SIZE * MAX_SIZE  # a larger resize is done on the centre crop's part alone
_FLOAT32 = torch.finfo(torch.float32)  # --mean and --std become float32: what it holds


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, centre-crop, scale to [0, 1] and normalise per channel."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def transform(self) -> transforms.Compose:
        return self._pipeline

    @cached_property
    def _pipeline(self) -> transforms.Compose:  # built once, not per image
        from torchvision import transforms

        return transforms.Compose(
            [
                transforms.Resize(self.resize),
                transforms.CenterCrop(self.crop),
                transforms.ToTensor(),
                transforms.Normalize(self.mean, self.std),
            ]
        )

    def __post_init__(self) -> None:
        if self.resize < 1 or self.crop < 1:
            raise UsageError(f"--resize and --crop must be positive, not {self.resize} and {self.crop}")
        if max(self.resize, self.crop) > MAX_SIZE:  # 10**6 would fill the memory resizing one image
            raise UsageError(f"--resize and --crop must be at most {MAX_SIZE}, not {self.resize} and {self.crop}")
        if len(self.mean) != 3 or not all(abs(v) <= _FLOAT32.max for v in self.mean):  # NaN fails too
            raise UsageError(f"--mean must be three finite numbers, not {','.join(str(v) for v in self.mean)}")
        if self.crop > self.resize:
            raise UsageError(f"--crop {self.crop} is larger than --resize {self.resize}: the crop would be padded")
        if len(self.std) != 3 or not all(_FLOAT32.tiny <= v <= _FLOAT32.max for v in self.std):  # float32 > 0
            raise UsageError(
                f"--std must be three positive numbers (from {_FLOAT32.tiny:.3g} to {_FLOAT32.max:.3g}), "
                f"not {','.join(str(v) for v in self.std)}"
            )

    def __call__(self, image: Image.Image) -> Tensor:
        new_width, new_height = self.resized_size(*image.size)
        if new_width * new_height <= RESIZE_PIXELS:
            return self.transform()(image)
        # an extreme shape: a 1 x 200,000 px PNG (860 bytes) resizes to 160 x 32,000,000 px, 15 GB,
        # a MemoryError or the machine's end. Resample only the centre crop's part, at the filter
        # positions of the full resize (PIL's box), then the same CenterCrop offsets as torchvision.
        left, top = round((new_width - self.crop) / 2.0), round((new_height - self.crop) / 2.0)
        x_scale, y_scale = image.size[0] / new_width, image.size[1] / new_height
        box = (left * x_scale, top * y_scale, (left + self.crop) * x_scale, (top + self.crop) * y_scale)
        cropped = image.resize((self.crop, self.crop), Image.Resampling.BILINEAR, box=box)
        return self._pipeline.transforms[-1](self._pipeline.transforms[-2](cropped))  # ToTensor, Normalize

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a ``width`` x ``height`` image after the shorter-side resize
        (torchvision's rule: the longer side is truncated to an int)."""
        if width <= height:
            return self.resize, int(self.resize * height / width)
        return int(self.resize * width / height), self.resize

    def input_point(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        """Where pixel (``x``, ``y``) of a stored ``width`` x ``height`` image lands in the model's
        input (resize, then centre crop), in input pixels; outside [0, crop) when cropped away.

        Pixel (x, y) is the square [x, x+1) x [y, y+1); its centre is mapped, so integer input
        coordinates are pixel centres again.
        """
        new_width, new_height = self.resized_size(width, height)
        mapped = []
        for value, old, new in ((x, width, new_width), (y, height, new_height)):
            # torchvision's CenterCrop: offset round((new - crop) / 2), or padding when smaller
            offset = round((new - self.crop) / 2.0) if new >= self.crop else -((self.crop - new) // 2)
            mapped.append((value + 0.5) * new / old - 0.5 - offset)
        return mapped[0], mapped[1]

    def denormalize(self, x: Tensor) -> Tensor:
        """Back from the model's input space to displayable [0, 1] RGB."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
        return (x * std + mean).clamp(0, 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        return cls(
            resize=int(values["resize"]), crop=int(values["crop"]), mean=tuple(values["mean"]), std=tuple(values["std"])
        )


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


def preprocess_for(model: nn.Module | None) -> Preprocess:
    """The preprocessing ``model`` expects, so that images are fed at the size it was built for.

    :func:`vizkit.load_model` records it as ``model.vizkit_preprocess``: a registered model's own
    (``zfnet-compact``: resize 160, crop 144), the one in its weights' JSON (``weights.json``
    beside ``weights.pt``, or the ``run.json`` of a ``vizkit train`` folder), or one passed as
    ``preprocess=``. A model without one (or None) gets the ImageNet default, :class:`Preprocess`
    ``()`` (resize 256, crop 224). Set ``model.vizkit_preprocess`` on a model you built yourself
    to give it its own.

    Args:
        model: the model, or None for the ImageNet default.
    """
    found = getattr(model, "vizkit_preprocess", None) if model is not None else None
    if found is None:
        return Preprocess()
    if isinstance(found, Preprocess):
        return found
    if isinstance(found, Mapping):
        return Preprocess.from_dict(dict(found))
    raise UsageError(f"model.vizkit_preprocess must be a vizkit.Preprocess, not {type(found).__name__}")


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


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


@dataclass
class ImageList(Dataset):
    """An ordered list of image files, each with an optional class (ImageFolder sub-folder).

    ``images[i]`` is ``(preprocessed image, i)`` and raises :class:`UnreadableImage` for a file
    that cannot be read; :meth:`read` returns a :class:`BadImage` instead, and
    :func:`read_batches` batches the list, leaving such files out (or stopping at the first one,
    when strict). ``source`` names where the list came from (the ``--data`` value), for messages.
    """

    paths: list[Path]
    classes: list[str] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    preprocess: Preprocess = field(default_factory=Preprocess)
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.preprocess(load_image(self.paths[index])), index

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:
        return (self[i] for i in range(len(self)))

    def read(self, index: int) -> tuple[Tensor, int] | BadImage:
        """``self[index]``, or a :class:`BadImage` saying why the file cannot be read (never
        raises for a bad file, so a DataLoader worker can hand it back with its batch).

        Args:
            index: the item's position in the list.
        """
        try:
            image = load_image(self.paths[index])
        except UnreadableImage as error:
            return BadImage(index, str(self.paths[index]), error.why, error.detail)
        return self.preprocess(image), index

    @property
    def where(self) -> str:
        """How messages name the list: its source, else its first file's folder."""
        if self.source:
            return self.source
        return str(Path(self.paths[0]).parent) if self.paths else "an empty image list"


@dataclass(frozen=True)
class BadImage:
    """An item of an :class:`ImageList` whose file cannot be read: ``index`` in that list, the
    file's ``path``, ``why`` (a short kind, see :class:`UnreadableImage`) and the reader's
    ``detail``. What :meth:`ImageList.read` returns in place of ``(image, index)``."""

    index: int
    path: str
    why: str
    detail: str


class SkippedImages:
    """The unreadable images one run met while reading a dataset.

    Without ``strict`` each is skipped: the first :attr:`WARN_FIRST` get a warning on stderr that
    names the file and says why, later ones only a single line saying that more follow; the
    count, the kinds and the first :attr:`LISTED` files go to ``result.json``
    (``inputs.skipped_images``, see :meth:`summary`). With ``strict`` the first one is an
    :class:`UnreadableImage` (a one-line error naming it). A file is recorded once, however
    often it is met (a per-epoch rescan, a resumed scan).

    Args:
        strict: stop at the first unreadable image instead of skipping it.
        source: how messages name the dataset (the ``--data`` value).
        stream: where warnings go; None: ``sys.stderr`` at the time of writing.
    """

    WARN_FIRST = 5  # files named one warning each; later ones are counted quietly
    LISTED = 20  # files listed in result.json; the count covers all of them

    def __init__(self, strict: bool = False, source: str = "", stream: TextIO | None = None) -> None:
        self.strict = strict
        self.source = source
        self._stream = stream
        self._records: dict[str, tuple[str, str]] = {}  # path -> (why, detail), in the order met

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, path: object) -> bool:
        return str(path) in self._records

    @property
    def count(self) -> int:
        """How many distinct files were skipped."""
        return len(self._records)

    @property
    def paths(self) -> list[str]:
        """The skipped files, in the order they were met."""
        return list(self._records)

    def _warn(self, text: str) -> None:
        print(f"vizkit: warning: {text}", file=self._stream or sys.stderr, flush=True)

    def add(self, bad: BadImage, warn: bool = True) -> None:
        """Record an unreadable item (or, when strict, raise :class:`UnreadableImage` for it).

        Args:
            bad: the item, as :meth:`ImageList.read` returned it.
            warn: print the warning for it (a record merged from a checkpoint or another
                process is added quietly).
        """
        if self.strict:
            raise UnreadableImage(
                f"cannot read image {bad.path}: {bad.why} ({bad.detail}); --strict stops at the first unreadable "
                "image (without it, unreadable images are skipped with a warning)",
                bad.path,
                bad.why,
                bad.detail,
            )
        if bad.path in self._records:
            return
        self._records[bad.path] = (bad.why, bad.detail)
        if not warn:
            return
        if len(self._records) <= self.WARN_FIRST:
            detail = f": {bad.detail}" if bad.detail and bad.detail != bad.why else ""
            self._warn(f"skipping unreadable image {bad.path} ({bad.why}{detail})")
        elif len(self._records) == self.WARN_FIRST + 1:
            self._warn(
                f"more unreadable images: skipping them without a warning each (their count and the first "
                f"{self.LISTED} go to result.json)"
            )

    def take(self, batch: tuple[Tensor, Tensor, list[BadImage]]) -> tuple[Tensor, Tensor]:
        """A batch of :func:`read_batches`' loader with its unreadable items recorded (see
        :meth:`add`): the readable images and their indices.

        Args:
            batch: (images, indices, bad items), as the collate function of :func:`image_loader`
                makes it.
        """
        images, indices, bad = batch
        for item in bad:
            self.add(item)
        return images, indices

    def why(self) -> dict[str, int]:
        """How many files were skipped for each kind of reason, most common first."""
        return dict(Counter(why for why, _ in self._records.values()).most_common())

    def summary(self) -> dict[str, Any]:
        """What ``result.json`` holds under ``inputs.skipped_images``: ``count`` (files
        skipped), ``why`` (count per kind of reason), ``files`` (the first :attr:`LISTED`, in the
        order met, each ``{"path", "why", "detail"}``) and ``listed`` (how many ``files`` holds)."""
        files = [
            {"path": path, "why": why, "detail": detail}
            for path, (why, detail) in list(self._records.items())[: self.LISTED]
        ]
        return {"count": self.count, "why": self.why(), "files": files, "listed": len(files)}

    def state_dict(self) -> list[list[str]]:
        """The records as plain lists (for a checkpoint loaded with ``weights_only=True``)."""
        return [[path, why, detail] for path, (why, detail) in self._records.items()]

    def load_state_dict(self, rows: Iterable[Sequence[str]]) -> None:
        """Add the records of :meth:`state_dict` (quietly; already known files are kept as they are).

        Args:
            rows: ``[path, why, detail]`` lists, e.g. from a checkpoint.
        """
        for path, why, detail in rows:
            self._records.setdefault(str(path), (str(why), str(detail)))

    def none_readable(self, images: ImageList) -> UsageError:
        """The error for a dataset none of whose images could be read (to raise).

        Args:
            images: the dataset; its first recorded file is given as the example.
        """
        example = next((str(p) for p in images.paths if str(p) in self._records), None)
        detail = ""
        if example is not None:
            why, text = self._records[example]
            detail = f", e.g. {example} ({why}: {text})" if text != why else f", e.g. {example} ({why})"
        return UsageError(f"no readable images in {self.source or images.where}: {len(images)} skipped{detail}")

    def report(self, what: str = "") -> None:
        """One closing warning line with the count and kinds (nothing when none was skipped).

        Args:
            what: who is speaking, e.g. the analysis's name (a prefix of the line).
        """
        if not self._records:
            return
        kinds = ", ".join(f"{n} {why}" for why, n in self.why().items())
        where = f" in {self.source}" if self.source else ""
        plural = "s" if self.count != 1 else ""
        self._warn(
            f"{what + ': ' if what else ''}skipped {self.count} unreadable image{plural}{where} ({kinds}); "
            "listed under inputs.skipped_images in result.json (--strict stops at the first one instead)"
        )


class _Readable(Dataset):
    """An ImageList whose items are ``(image, index)`` or a BadImage, never an exception (so a
    worker hands bad files back with the batch instead of dying)."""

    def __init__(self, images: ImageList) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | BadImage:
        return self.images.read(index)


def collate_readable(items: list[tuple[Tensor, int] | BadImage]) -> tuple[Tensor, Tensor, list[BadImage]]:
    """A DataLoader collate function for :meth:`ImageList.read` items: ``(images, indices,
    bad)``, the readable items stacked as usual and the unreadable ones passed on as
    :class:`BadImage` s. A batch of only bad items has empty ``images`` and ``indices``.

    Args:
        items: the batch's items, in order.
    """
    good = [item for item in items if not isinstance(item, BadImage)]
    bad = [item for item in items if isinstance(item, BadImage)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images, indices = default_collate(good)
    return images, indices, bad


def workers_ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGINT and SIGTERM and leaves stopping
    to the main process.

    Ctrl-C in a terminal signals the whole process group, workers included; a worker killed by
    it makes the main process fail with "DataLoader worker exited unexpectedly" instead of
    finishing its step and saving its checkpoint. Workers still end with the main process (the
    DataLoader shuts them down, and they exit when their parent is gone).

    Args:
        worker_id: the worker's number (DataLoader passes it; unused).
    """
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def image_loader(
    images: ImageList, indices: Sequence[int] | None = None, batch_size: int = 32, workers: int = 0
) -> DataLoader:
    """A DataLoader over ``images`` (in order) whose batches are ``(images, indices, bad)`` (see
    :func:`collate_readable`); :meth:`SkippedImages.take` records the bad ones. Unreadable
    files travel back from the workers as data, never as a worker's exception.

    Args:
        images: the dataset.
        indices: the positions to load, in this order (None: all of them).
        batch_size: items per batch (bad ones included, so batch ``b`` always covers the same
            positions).
        workers: data-loading worker processes (0: load in this process).
    """
    dataset: Dataset = _Readable(images)
    if indices is not None:
        dataset = Subset(dataset, list(indices))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_readable,
        worker_init_fn=workers_ignore_stop_signals,  # Ctrl-C reaches them too: the main process stops cleanly
    )


def read_batches(
    images: ImageList,
    skipped: SkippedImages | None = None,
    indices: Sequence[int] | None = None,
    batch_size: int = 32,
    workers: int = 0,
    keep_empty: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(images [B,3,H,W], indices [B])`` batches of a dataset, its unreadable files left out
    and recorded in ``skipped`` (warned about, counted), or, when ``skipped.strict``, an
    :class:`UnreadableImage` at the first one.

    Args:
        images: the dataset.
        skipped: where unreadable files are recorded; None: a fresh, non-strict record.
        indices: the positions to read, in this order (None: all of them).
        batch_size: positions per batch; a batch holds fewer images when some were unreadable.
        workers: data-loading worker processes (0: load in this process).
        keep_empty: also yield batches whose every image was unreadable (empty tensors), so
            that a caller counting batches (checkpoints, shards) stays in step.
    """
    record = SkippedImages() if skipped is None else skipped
    for batch in image_loader(images, indices, batch_size, workers):
        good, where = record.take(batch)
        if len(where) or keep_empty:
            yield good, where


def first_readable(images: ImageList, skipped: SkippedImages | None = None) -> tuple[Tensor, int]:
    """The first item of ``images`` that can be read, as ``(image, index)`` (e.g. the probe
    image an analysis runs once to learn shapes); the unreadable ones before it are recorded in
    ``skipped`` (and warned about once a readable one is found: when none is, the UsageError
    "no readable images in DATA: N skipped, e.g. ..." is the only line the user sees).

    Args:
        images: the dataset.
        skipped: where unreadable files are recorded (strict: the first one raises); None: a
            fresh, non-strict record.
    """
    record = SkippedImages() if skipped is None else skipped
    pending: list[BadImage] = []
    for index in range(len(images)):
        item = images.read(index)
        if not isinstance(item, BadImage):
            for bad in pending:
                record.add(bad)
            return item
        if record.strict:
            record.add(item)  # raises
        pending.append(item)
    if not len(images):
        raise UsageError(f"no images in {record.source or images.where}")
    for bad in pending:
        record.add(bad, warn=False)
    raise record.none_readable(images)


def _image_files(root: str | os.PathLike) -> list[Path]:
    """The image files under the folder ``root``, sorted: searched recursively, following
    symlinked folders (as torchvision's ImageFolder does; a symlinked class folder used to be
    left out without a word) but never round a symlink loop, and leaving out hidden files and
    folders (``.ipynb_checkpoints``, ``.git``, ...: a checkpoint copy used to count as an image and
    ``.ipynb_checkpoints`` as a class). A broken symlink with an image name is kept, so reading it
    says it is missing. Unreadable folders are passed over, as ``os.walk`` does.

    Args:
        root: the folder.
    """
    found: list[Path] = []

    def walk(folder: Path, ancestors: frozenset[str]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows a symlink
                real = os.path.realpath(path)
                if real not in ancestors:  # a link back up the tree would never end
                    walk(path, ancestors | {real})
            elif is_image_file(path) and (entry.is_file() or entry.is_symlink()):
                found.append(path)

    walk(Path(root), frozenset({os.path.realpath(root)}))
    return sorted(found)


def image_list(source: str | os.PathLike, preprocess: Preprocess | None = None) -> ImageList:
    """The images under ``source``: a folder, an ImageFolder tree, or a text file of paths.

    Order is deterministic (sorted paths; the text file's own order), so indices are stable.

    Args:
        source: a folder (searched recursively, symlinked folders followed, hidden files and
            folders such as ``.ipynb_checkpoints`` left out: see :func:`_image_files`; an
            ImageFolder tree when every image is in a sub-folder, whose names become the classes),
            or a UTF-8 text file of image paths, one per line (relative to the file's folder; blank
            lines and ``#`` comments skipped; a byte-order mark is ignored; a file listed twice is a
            UsageError, since a scan would count it as two images).
        preprocess: how the dataset's items are preprocessed; None: the ImageNet default.
    """
    root = Path(source)
    preprocess = preprocess or Preprocess()
    if not root.exists():
        raise UsageError(f"data not found: {root}")
    if root.is_file() and is_image_file(root):
        raise UsageError(f"--data {root} is one image; --data takes a folder or a text file of paths (use --image)")
    if root.is_file():
        try:  # utf-8-sig: a byte-order mark (Windows editors) would become part of the first path
            lines = [line.strip() for line in root.read_text(encoding="utf-8-sig").splitlines()]
        except UnicodeDecodeError:
            raise UsageError(f"--data {root} is neither a folder nor a UTF-8 text file of image paths") from None
        listed = [
            (number, Path(line) if Path(line).is_absolute() else root.parent / line)
            for number, line in enumerate(lines, 1)
            if line and not line.startswith("#")
        ]
        paths = [path for _, path in listed]
        if not paths:
            raise UsageError(f"no image paths listed in {root}")
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise UsageError(f"{len(missing)} image(s) listed in {root} do not exist, e.g. {missing[0]}")
        first_line: dict[str, int] = {}
        for number, path in listed:  # the same file twice would be two images: twice a top9 winner
            earlier = first_line.setdefault(os.path.realpath(path), number)
            if earlier != number:
                raise UsageError(
                    f"{root} lists the same image twice, on lines {earlier} and {number} ({path}); list each image once"
                )
        return ImageList(paths, preprocess=preprocess, source=str(root))
    paths = _image_files(root)
    if not paths:
        raise UsageError(f"no images found under {root}")
    subfolders = sorted({p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1})
    loose = [p for p in paths if len(p.relative_to(root).parts) == 1]
    if subfolders and not loose:  # an ImageFolder tree: class = first sub-folder
        index = {name: i for i, name in enumerate(subfolders)}
        targets = [index[p.relative_to(root).parts[0]] for p in paths]
        return ImageList(paths, subfolders, targets, preprocess, str(root))
    return ImageList(paths, preprocess=preprocess, source=str(root))


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names, one per line: ``name`` or ``wnid<TAB>name`` (the name is kept, the wnids too
    when every line has one: see :class:`Labels`), or Caffe's ``synset_words.txt`` lines
    (``n01440764 tench, Tinca tinca``: the wnid and the first synonym).

    Args:
        path: a UTF-8 text file (a byte-order mark is ignored: it used to stick to the first
            name, so that class could not be named as a target); blank lines are skipped, and an
            empty file is a UsageError.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"labels file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"labels file is not UTF-8 text: {path}") from None
    rows = [line.split("\t", 1) for line in lines if line.strip()]
    if not rows:
        raise UsageError(f"labels file is empty: {path}")
    if all(len(row) == 1 and _CAFFE_SYNSET.match(row[0].strip()) for row in rows):
        # Caffe's synset_words.txt ("n01440764 tench, Tinca tinca"): the wnid, and the first of
        # the synonyms as the name (as in torchvision's and ../shared's lists), not the whole line
        matches = [_CAFFE_SYNSET.match(row[0].strip()) for row in rows]
        rows = [[m.group(1), m.group(2).split(",")[0]] for m in matches if m is not None]
    labels = Labels(row[-1].strip() for row in rows)
    if all(len(row) == 2 for row in rows):
        labels.wnids = [row[0].strip() for row in rows]
    return labels


_CAFFE_SYNSET = re.compile(r"^(n\d{8}) +(\S.*)$")  # a line of Caffe's synset_words.txt


class Labels(list):
    """Class names (a plain list of str) that may carry the WordNet ids they were read with
    (``wnids``), so a target can be given as ``n02112018`` as well as ``Pomeranian``."""

    wnids: list[str] | None = None


def check_labels(labels: Sequence[str] | None, num_classes: int) -> None:
    """Refuse class names that do not match the model's outputs one to one (a UsageError), so a
    wrong labels file is caught before it mislabels every figure.

    Args:
        labels: the class names; None (no labels) always passes.
        num_classes: how many outputs the model's classifier has.
    """
    if labels is not None and len(labels) != num_classes:
        raise UsageError(f"{len(labels)} labels given but the model has {num_classes} outputs")


def label_name(labels: Sequence[str] | None, index: int) -> str:
    """How figures and summaries name a class: its label, or ``class <index>`` without one.

    Args:
        labels: the class names, or None when there are none.
        index: the class index (an index outside ``labels`` gets the ``class <index>`` form).
    """
    return labels[index] if labels and 0 <= index < len(labels) else f"class {index}"


def resolve_target(target: str | int, labels: Sequence[str] | None, num_classes: int) -> int | None:
    """``auto`` -> None (use the model's top-1), an index, or a class name from the labels.

    Args:
        target: ``"auto"``, a class index (an int or its digits), a class name matched
            case-insensitively against ``labels`` (a name two classes share is a UsageError
            naming both), or a WordNet id when the labels came with them (:func:`read_labels`).
        labels: the class names; needed only when ``target`` is a name.
        num_classes: how many outputs the model has; an index outside it is a UsageError.
    """
    if isinstance(target, int):
        index = target
    elif str(target).lower() == "auto":
        return None
    elif str(target).lstrip("-").isdigit():
        index = int(target)
    else:
        if not labels:
            raise UsageError(f"target '{target}' is a name but no --labels were given")
        wnids = getattr(labels, "wnids", None) or []
        matches = [i for i, name in enumerate(labels) if name.lower() == str(target).lower()]
        matches = matches or [i for i, wnid in enumerate(wnids) if wnid.lower() == str(target).lower()]
        if not matches:
            raise UsageError(f"unknown target class '{target}' (not in the labels)")
        if len(matches) > 1:
            where = " and ".join(str(i) for i in matches)
            hint = " or the wnid" if wnids else ""
            raise UsageError(f"target '{target}' names several classes ({where}); give the index{hint}")
        index = matches[0]
    if not 0 <= index < num_classes:
        raise UsageError(f"target {index} is out of range (the model has {num_classes} classes)")
    return index


def parse_fill(text: str, preprocess: Preprocess) -> Tensor:
    """An occluder's colour in the model's (normalised) input space, as a [3] tensor.

    Args:
        text: ``mean`` (the dataset mean: zero after normalisation), ``zero`` (black), or
            ``R,G,B`` with values 0-255.
        preprocess: the model's preprocessing, whose mean and std normalise the colour.
    """
    mean, std = torch.tensor(preprocess.mean), torch.tensor(preprocess.std)
    text = str(text).strip().lower()
    if text == "mean":
        return torch.zeros(3)
    if text == "zero":
        return (0 - mean) / std
    try:
        rgb = torch.tensor([float(v) for v in text.split(",")])
    except ValueError:
        rgb = torch.tensor([])
    if rgb.numel() != 3 or bool((rgb < 0).any()) or bool((rgb > 255).any()):
        raise UsageError(f"--fill expects mean, zero, or R,G,B with values 0-255; not '{text}'")
    return (rgb / 255 - mean) / std


def ensure_device(name: str) -> torch.device:
    """A torch device, refusing CUDA when none is available."""
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
