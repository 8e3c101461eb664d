"""What ``invariance`` measures: for each image, transformation and step, each layer's distance
to the untransformed image and the logits, the untransformed image first in every batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

import vizkit

from .transforms import Transform


def measure(
    ctx: vizkit.RunContext,
    resized: Tensor,
    transforms: list[Transform],
    layers: list[str],
    fill: list[float],
    normalize: str,
    progress: Any = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], Tensor]:
    """For one image ([3,H,W] resized, in [0,1]): per transform and layer the distance at every
    step, per transform the logits at every step, and the untransformed image's logits
    (``progress`` counts the transformed images)."""
    from torchvision.transforms.v2 import functional as tf

    preprocess = ctx.preprocess
    im = ctx.instrumented

    def prepare(image: Tensor) -> Tensor:
        return tf.normalize(
            tf.center_crop(image, [preprocess.crop, preprocess.crop]), list(preprocess.mean), list(preprocess.std)
        )

    jobs = [(t.name, s, value) for t in transforms for s, value in enumerate(t.steps)]
    per_batch = max(1, ctx.batch_size - 1)
    original = prepare(resized)
    distances = {t.name: {layer: np.zeros(len(t.steps)) for layer in layers} for t in transforms}
    logits = {t.name: np.zeros((len(t.steps), 0)) for t in transforms}
    family = {t.name: t for t in transforms}
    first_logits = None
    with im.configured(layers=layers, switches=False), torch.no_grad():
        for start in range(0, len(jobs), per_batch):
            chunk = jobs[start : start + per_batch]
            batch = torch.stack(
                [original, *(prepare(family[name].apply(resized, value, fill)) for name, _, value in chunk)]
            )
            out = im(batch.to(ctx.device))
            if not isinstance(out, Tensor) or out.dim() != 2:
                raise vizkit.UsageError("invariance needs a classifier: the model must output [N, classes] logits")
            if first_logits is None:
                first_logits = out[0].float().cpu()
            for layer in layers:
                features = im.activation(layer).reshape(batch.shape[0], -1).double()
                gaps = (features[1:] - features[:1]).norm(dim=1)
                if normalize == "norm":
                    gaps = gaps / features[0].norm().clamp(min=1e-30)
                for (name, s, _), gap in zip(chunk, gaps.cpu().numpy()):
                    distances[name][layer][s] = gap
            for (name, s, _), row in zip(chunk, out[1:].float().cpu()):
                if logits[name].shape[1] == 0:
                    logits[name] = np.zeros((len(family[name].steps), row.numel()), dtype=np.float32)
                logits[name][s] = row.numpy()
            if progress is not None:
                progress.update(len(chunk))
    assert first_logits is not None
    return distances, logits, first_logits


def _measure_images(
    ctx: vizkit.RunContext, families: list[Transform], layers: list[str], fill: list[float], normalize: str
) -> tuple[list[tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], Tensor]], Tensor]:
    """:func:`measure` on each image file, resized as the preprocessing resizes (the crop comes
    after the transformation); and the first image resized, for the figure's example strip."""
    from torchvision.transforms.v2 import functional as tf

    preprocess = ctx.preprocess
    per_image = []
    first_resized: Tensor | None = None  # the figure's example strip transforms the first image again
    steps = sum(len(t.steps) for t in families)
    bar = vizkit.toolkit.progress_bar(
        total=len(ctx.image_paths) * steps, desc="invariance", unit="transformed images", enabled=ctx.progress
    )
    for path in ctx.image_paths:
        picture = vizkit.load_image(path)
        resized = tf.to_dtype(
            tf.to_image(tf.resize(picture, [preprocess.resize], antialias=True)), torch.float32, scale=True
        )
        first_resized = resized if first_resized is None else first_resized
        per_image.append(measure(ctx, resized, families, layers, fill, normalize, bar))
    bar.close()
    assert first_resized is not None  # run() refuses a call without image files
    return per_image, first_resized
