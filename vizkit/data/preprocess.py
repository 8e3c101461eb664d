"""Preprocessing: the resize, centre crop and normalisation a model's input gets, and colours
(an occluder's fill) in that normalised space."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import Tensor, nn

from vizkit.errors import UsageError

if TYPE_CHECKING:  # torchvision is imported where used: it costs seconds at start-up
    from torchvision import transforms

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
        """The torchvision pipeline (Resize, CenterCrop, ToTensor, Normalize), built once."""
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
        """The fields as a plain dict (what result.json and run.json record)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocess:
        """A Preprocess from :meth:`to_dict`'s form (e.g. read back from JSON).

        Args:
            values: ``resize``, ``crop``, ``mean`` and ``std``.
        """
        return cls(
            resize=int(values["resize"]), crop=int(values["crop"]), mean=tuple(values["mean"]), std=tuple(values["std"])
        )


def preprocess_for(model: nn.Module | None) -> Preprocess:
    """The preprocessing ``model`` expects, so that images are fed at the size it was built for.

    :func:`vizkit.load_model` records it in the model's ``vizkit_info``
    (:class:`vizkit.models.ModelInfo`): a registered model's own (``zfnet-compact``: resize 160,
    crop 144), the one in its weights' JSON (``weights.json`` beside ``weights.pt``, or the
    ``run.json`` of a ``vizkit train`` folder), or one passed as ``preprocess=``. A model without
    one (or None) gets the ImageNet default, :class:`Preprocess` ``()`` (resize 256, crop 224).
    Set ``model.vizkit_info = vizkit.models.ModelInfo(preprocess=...)`` on a model you built
    yourself to give it its own.

    Args:
        model: the model, or None for the ImageNet default.
    """
    if model is None:
        return Preprocess()
    if hasattr(model, "vizkit_preprocess"):  # the attribute ModelInfo replaced: never ignored silently
        raise UsageError(
            "model.vizkit_preprocess is no longer read; set model.vizkit_info = "
            "vizkit.models.ModelInfo(preprocess=...) instead"
        )
    # ModelInfo sits a layer above (vizkit.models): read by name, as vizkit.models.model_info does
    found = getattr(getattr(model, "vizkit_info", None), "preprocess", None)
    if found is None:
        return Preprocess()
    if isinstance(found, Preprocess):
        return found
    raise UsageError(f"model.vizkit_info.preprocess must be a vizkit.Preprocess, not {type(found).__name__}")


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
