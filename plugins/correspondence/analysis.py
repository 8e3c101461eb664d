"""The ``correspondence`` run: every image occluded by its squares, the sign of each layer's
feature change, the distances per part and per random draw, the result and its figures."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

import vizkit
from vizkit.data import parse_fill

from .figures import occlusion_figure, table_figure
from .landmarks import read_landmarks
from .squares import Square, _named_in, _parts_in_crop, _squares
from .statistics import Zeros, _float, _random_distances, p_below_random, pair_values, sign_distances


def feature_changes(
    ctx: vizkit.RunContext,
    images: Tensor,
    squares: list[list[Square]],
    layers: list[str],
    fill: Tensor,
    tolerance: float,
) -> dict[str, Tensor]:
    """Per layer, the sign of original minus occluded features: int8 [n_images, n_squares, D].

    Each batch holds one image and some of its occluded copies, its unoccluded self first, so
    units the square cannot reach compare exactly equal."""
    im = ctx.instrumented
    n, count = images.shape[0], len(squares[0])
    per_batch = max(1, ctx.batch_size - 1)
    signs: dict[str, Tensor] = {}
    bar = vizkit.toolkit.progress_bar(
        total=n * count, desc="correspondence", unit="occluded images", enabled=ctx.progress
    )
    with im.configured(layers=layers, switches=False), torch.no_grad():
        for i in range(n):
            for start in range(0, count, per_batch):
                chunk = squares[i][start : start + per_batch]
                batch = torch.stack([images[i], *(square.apply(images[i], fill) for square in chunk)])
                im(batch.to(ctx.device), until=layers[-1])
                for layer in layers:
                    features = im.activation(layer).reshape(batch.shape[0], -1).float()
                    eps = features[:1] - features[1:]
                    if tolerance > 0:
                        eps = torch.where(eps.abs() <= tolerance * features[0].abs().max(), 0.0, eps)
                    if layer not in signs:
                        signs[layer] = torch.zeros((n, count, features.shape[1]), dtype=torch.int8)
                    signs[layer][i, start : start + len(chunk)] = torch.sign(eps).to(torch.int8).cpu()
                bar.update(len(chunk))
    bar.close()
    return signs


def run(
    ctx: vizkit.RunContext,
    landmarks: str,
    layers: Any,
    size: int,
    random: int,
    fill: str,
    zeros: Zeros,
    tolerance: float,
) -> vizkit.Result:
    entries = read_landmarks(landmarks)
    preprocess = ctx.preprocess
    crop = preprocess.crop
    if size > crop:  # the Option's range holds it at 1 or more
        raise vizkit.UsageError(f"--size must be between 1 and the input size {crop}, not {size}")
    fill_value = parse_fill(fill, preprocess)
    names = vizkit.toolkit.parse_layers(layers)
    pictures = [vizkit.load_image(entry.path) for entry in entries]
    mapped, skipped = _parts_in_crop(entries, pictures, preprocess)
    parts = [part for part in dict.fromkeys(p for inside in mapped for p in inside) if _named_in(mapped, part) >= 2]
    if not parts:
        detail = f"; skipped: {'; '.join(skipped)}" if skipped else ""
        raise vizkit.UsageError(f"no part is named (inside the crop) in at least two images of {landmarks}{detail}")

    images = torch.stack([preprocess(picture) for picture in pictures])
    squares, regions = _squares(entries, mapped, pictures, parts, preprocess, size, random, ctx.seed)
    signs = feature_changes(ctx, images, squares, names, fill_value, tolerance)

    n = len(entries)
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    random_table: dict[str, dict[str, float | None]] = {}
    arrays: dict[str, np.ndarray] = {}
    pair_counts = {}
    for layer in names:
        draws = np.stack([sign_distances(signs[layer][:, len(parts) + k].float(), zeros) for k in range(random)])
        random_table[layer], draw_means = _random_distances(draws, n)
        arrays[f"random/{layer}"] = draws.astype(np.float32)
        for p, part in enumerate(parts):
            members = [i for i in range(n) if part in mapped[i]]
            matrix = np.full((n, n), np.nan)
            matrix[np.ix_(members, members)] = sign_distances(signs[layer][members, p].float(), zeros)
            values = pair_values(matrix, members)
            mean = float(values.mean()) if values.size else math.nan
            table.setdefault(part, {})[layer] = {
                "mean": _float(mean),
                "std": _float(values.std()) if values.size else None,
                "p_vs_random": p_below_random(mean, draw_means),
            }
            arrays[f"{part}/{layer}"] = matrix.astype(np.float32)
            pair_counts[part] = int(values.size)
    arrays["squares"] = np.array([[[s.top, s.left] for s in row] for row in squares], dtype=np.int64)
    arrays["regions"] = np.array(regions, dtype=np.float32)

    result = vizkit.Result(
        summary={
            "table": table,
            "random": random_table,
            "images": [str(e.path) for e in entries],
            "parts": parts,
            "layers": names,
            "size": size,
            "zeros": zeros,
            "tolerance": tolerance,
            "draws": random,
            "pairs": {**pair_counts, "random": n * (n - 1) // 2},
            "skipped": skipped,
            "square_order": "per image: one square per part in 'parts' order (0-size where the image lacks it), then the random draws",
        },
        arrays=arrays,
    )
    result.figures["correspondence_occlusions"] = occlusion_figure(
        ctx, images, entries, squares, parts, mapped, fill_value
    )
    result.figures["correspondence_table"] = table_figure(
        table, random_table, parts, names, zeros, size, random, tolerance
    )
    return result
