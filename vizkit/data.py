"""Images in, tensors out: loading, preprocessing, datasets and class labels."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision import transforms

from vizkit.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        if self.crop > self.resize:
            raise UsageError(f"--crop {self.crop} is larger than --resize {self.resize}: the crop would be padded")
        if len(self.std) != 3 or any(not v > 0 for v in self.std):
            raise UsageError(f"--std must be three positive numbers, not {','.join(str(v) for v in self.std)}")

    def __call__(self, image: Image.Image) -> Tensor:
        return self.transform()(image)

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
    - float images (``F``): values in [0, 1] are scaled by 255, others stretched from min..max.
    - transparency (RGBA, LA, PA, palette images with a transparent colour) is composited over
      white, so hidden colours under transparent pixels never show through.

    Args:
        image: a PIL image of any mode.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
            scaled = values / 65535.0 * 255.0
        elif mode == "I" and low >= 0 and high <= 255:
            scaled = values
        elif mode == "F" and low >= 0 and high <= 1:
            scaled = values * 255.0
        else:  # no known range: stretch what is there
            scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        return Image.fromarray(np.round(scaled).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if (mode == "P" and "transparency" in image.info) or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """An image file as upright 8-bit RGB (see :func:`to_rgb` for orientation, bit depths and
    transparency).

    Args:
        path: the image file; a missing file, a folder or an unreadable image is a UsageError.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"image not found: {path}")
    if path.is_dir():
        raise UsageError(f"expected an image file, got a folder: {path} (use --data for folders)")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise UsageError(f"cannot read image {path}: {error}") from None


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
    """An ordered list of image files, each with an optional class (ImageFolder sub-folder)."""

    paths: list[Path]
    classes: list[str] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    preprocess: Preprocess = field(default_factory=Preprocess)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.preprocess(load_image(self.paths[index])), index

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:
        return (self[i] for i in range(len(self)))


def image_list(source: str | os.PathLike, preprocess: Preprocess | None = None) -> ImageList:
    """The images under ``source``: a folder, an ImageFolder tree, or a text file of paths.

    Order is deterministic (sorted paths; the text file's own order), so indices are stable.

    Args:
        source: a folder (searched recursively; an ImageFolder tree when every image is in a
            sub-folder, whose names become the classes), or a text file of image paths, one per
            line (relative to the file's folder; blank lines and ``#`` comments skipped).
        preprocess: how the dataset's items are preprocessed; None: the ImageNet default.
    """
    root = Path(source)
    preprocess = preprocess or Preprocess()
    if not root.exists():
        raise UsageError(f"data not found: {root}")
    if root.is_file() and is_image_file(root):
        raise UsageError(f"--data {root} is one image; --data takes a folder or a text file of paths (use --image)")
    if root.is_file():
        try:
            lines = [line.strip() for line in root.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError:
            raise UsageError(f"--data {root} is neither a folder nor a UTF-8 text file of image paths") from None
        paths = [
            Path(line) if Path(line).is_absolute() else root.parent / line
            for line in lines
            if line and not line.startswith("#")
        ]
        if not paths:
            raise UsageError(f"no image paths listed in {root}")
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise UsageError(f"{len(missing)} image(s) listed in {root} do not exist, e.g. {missing[0]}")
        return ImageList(paths, preprocess=preprocess)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise UsageError(f"no images found under {root}")
    subfolders = sorted({p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1})
    loose = [p for p in paths if len(p.relative_to(root).parts) == 1]
    if subfolders and not loose:  # an ImageFolder tree: class = first sub-folder
        index = {name: i for i, name in enumerate(subfolders)}
        targets = [index[p.relative_to(root).parts[0]] for p in paths]
        return ImageList(paths, subfolders, targets, preprocess)
    return ImageList(paths, preprocess=preprocess)


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names, one per line: ``name`` or ``wnid<TAB>name`` (the name is kept, the wnids too
    when every line has one: see :class:`Labels`).

    Args:
        path: a UTF-8 text file; blank lines are skipped, and an empty file is a UsageError.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"labels file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"labels file is not UTF-8 text: {path}") from None
    rows = [line.split("\t", 1) for line in lines if line.strip()]
    if not rows:
        raise UsageError(f"labels file is empty: {path}")
    labels = Labels(row[-1].strip() for row in rows)
    if all(len(row) == 2 for row in rows):
        labels.wnids = [row[0].strip() for row in rows]
    return labels


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
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device '{name}'; use cpu or cuda")
    return device
