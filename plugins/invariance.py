"""The ``invariance`` analysis: how features and the prediction change under translation, scale
and rotation (paper §5, Fig. 5).

Each image is resized as the model's preprocessing says (shorter side to ``resize``), and then,
before the centre crop and the normalisation, transformed with torchvision
(``torchvision.transforms.v2.functional``, bilinear): ``translate`` moves it vertically by t input
pixels (positive = down), ``scale`` zooms by s about the centre, ``rotate`` turns it by a degrees
counter-clockwise about the centre. The centre crop follows, so translation and rotation first
bring in the image's own margin; what no image covers is filled with the dataset mean colour
(zero after normalisation, as the occluders of ``occlusion`` are). Every transform's steps are
``--steps`` values spread evenly over its range, plus the identity if the grid misses it; the
identity is the untransformed image itself, so its distance is exactly 0.

For every image, transform and step: the Euclidean distance between the flattened output of each
``--layers`` entry for the transformed and the original image (``--normalize norm``: divided by
the original's norm, so layers share an axis), the softmax probability of the target class and the
top-1 label. Each batch holds the original as its first row, so distances are not blurred by the
float differences between batches of different sizes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

import vizkit
from vizkit.toolkit import report
from vizkit.toolkit.figures import new_figure

TRANSFORMS = ("translate", "scale", "rotate")
IDENTITY = {"translate": 0.0, "scale": 1.0, "rotate": 0.0}
UNITS = {"translate": "vertical translation (px)", "scale": "scale", "rotate": "rotation (degrees)"}


@dataclass(frozen=True)
class Transform:
    """One transformation family and the values it is applied at."""

    name: str
    steps: tuple[float, ...]

    def apply(self, image: Tensor, value: float, fill: list[float]) -> Tensor:
        """``image`` [3,H,W] in [0,1] (resized, not yet cropped) transformed by ``value``."""
        from torchvision.transforms import InterpolationMode  # torchvision costs seconds at start-up
        from torchvision.transforms.v2 import functional as tf

        if value == IDENTITY[self.name]:
            return image
        bilinear = InterpolationMode.BILINEAR
        if self.name == "translate":
            return tf.affine(
                image,
                angle=0.0,
                translate=[0, round(value)],
                scale=1.0,
                shear=[0.0, 0.0],
                interpolation=bilinear,
                fill=fill,
            )
        if self.name == "scale":
            return tf.affine(
                image, angle=0.0, translate=[0, 0], scale=value, shear=[0.0, 0.0], interpolation=bilinear, fill=fill
            )
        return tf.rotate(image, value, interpolation=bilinear, fill=fill)


def parse_range(text: str, flag: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError:
        raise vizkit.UsageError(f"{flag} expects two comma-separated numbers LOW,HIGH, not '{text}'") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise vizkit.UsageError(f"{flag} needs LOW < HIGH, not '{text}'")
    return low, high


def make_transforms(names: list[str], steps: int, ranges: dict[str, tuple[float, float]]) -> list[Transform]:
    """The transforms ``names`` (of :data:`TRANSFORMS`, as ``--transforms`` gives them) with
    ``steps`` steps each over their ``ranges`` (the identity always among them)."""
    if ranges["scale"][0] <= 0:
        raise vizkit.UsageError(f"--range-scale must be above 0, not {ranges['scale'][0]}")
    out = []
    for name in names:
        low, high = ranges[name]
        values = np.linspace(low, high, steps)
        if name == "translate":
            values = np.round(values)  # whole input pixels
        grid = sorted({float(v) for v in values} | {IDENTITY[name]})
        if len(grid) < 2:  # a translation range inside (-0.5, 0.5) rounds to the identity alone
            raise vizkit.UsageError(
                f"--range-{name} {low:g},{high:g} gives no step but the identity (translations are whole "
                "input pixels); give a range that reaches at least one pixel"
            )
        out.append(Transform(name, tuple(grid)))
    return out


def _targets(target: tuple[str, ...], n: int, labels: Any, classes: int, logits: Tensor) -> list[int]:
    given = list(target) or ["auto"]
    if len(given) not in (1, n):
        raise vizkit.UsageError(f"give one --target for all images or one per image ({n}), not {len(given)}")
    given = given * n if len(given) == 1 else given
    out = []
    for i, value in enumerate(given):
        fixed = vizkit.data.resolve_target(value, labels, classes)
        out.append(int(logits[i].argmax()) if fixed is None else fixed)
    return out


def measure(
    ctx: vizkit.RunContext,
    resized: Tensor,
    transforms: list[Transform],
    layers: list[str],
    fill: list[float],
    normalize: str,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], Tensor]:
    """For one image ([3,H,W] resized, in [0,1]): per transform and layer the distance at every
    step, per transform the logits at every step, and the untransformed image's logits."""
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
    assert first_logits is not None
    return distances, logits, first_logits


def _half_range(steps: tuple[float, ...], probability: np.ndarray, identity: float) -> list[float]:
    """The contiguous range of steps around the identity where P(true) stays >= half its value at
    the identity."""
    centre = steps.index(identity)
    keep = probability >= 0.5 * probability[centre]
    low = high = centre
    while low > 0 and keep[low - 1]:
        low -= 1
    while high < len(steps) - 1 and keep[high + 1]:
        high += 1
    return [steps[low], steps[high]]


def _linearity(steps: tuple[float, ...], distance: np.ndarray, identity: float, circular: bool) -> float | None:
    """R^2 of distance as a linear function of |step - identity| (angles: the shorter way round)."""
    x = np.abs(np.asarray(steps) - identity)
    if circular:
        x = np.minimum(x % 360, 360 - x % 360)
    if distance.std() == 0:
        return None
    r = np.corrcoef(x, distance)[0, 1]
    return float(r * r)


def _measure_images(
    ctx: vizkit.RunContext, families: list[Transform], layers: list[str], fill: list[float], normalize: str
) -> tuple[list[tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], Tensor]], Tensor]:
    """:func:`measure` on each image file, resized as the preprocessing resizes (the crop comes
    after the transformation); and the first image resized, for the figure's example strip."""
    from torchvision.transforms.v2 import functional as tf

    preprocess = ctx.preprocess
    per_image = []
    first_resized: Tensor | None = None  # the figure's example strip transforms the first image again
    for path in ctx.image_paths:
        picture = vizkit.load_image(path)
        resized = tf.to_dtype(
            tf.to_image(tf.resize(picture, [preprocess.resize], antialias=True)), torch.float32, scale=True
        )
        first_resized = resized if first_resized is None else first_resized
        per_image.append(measure(ctx, resized, families, layers, fill, normalize))
    assert first_resized is not None  # run() refuses a call without image files
    return per_image, first_resized


def _family_summary(
    family: Transform,
    per_image: list[tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], Tensor]],
    layers: list[str],
    targets: list[int],
    p0: np.ndarray,
    originals: Tensor,
    arrays: dict[str, np.ndarray],
) -> dict[str, Any]:
    """One transformation's curves, stored into ``arrays``, and their summary: per layer how
    soon and how linearly its features move, and how long the target's probability and the
    top-1 label hold."""
    n = len(per_image)
    t = family.name
    identity = IDENTITY[t]
    arrays[f"{t}_steps"] = np.asarray(family.steps, dtype=np.float32)
    probabilities = np.stack([_softmax(logits[t])[:, targets[i]] for i, (_, logits, _) in enumerate(per_image)])
    arrays[f"{t}_prob"] = probabilities.astype(np.float32)
    arrays[f"{t}_top1"] = np.stack([logits[t].argmax(axis=1) for _, logits, _ in per_image]).astype(np.int64)
    centre = family.steps.index(identity)
    nearest = min((s for s in range(len(family.steps)) if s != centre), key=lambda s: abs(family.steps[s] - identity))
    layer_summary = {}
    for layer in layers:
        distance = np.stack([d[t][layer] for d, _, _ in per_image])
        arrays[f"{t}_distance_{layer}"] = distance.astype(np.float32)
        peak = distance.max(axis=1)
        layer_summary[layer] = {
            "first_step": family.steps[nearest],
            # how much of its largest change a layer already shows at the smallest step
            "first_step_fraction": _mean([distance[i, nearest] / peak[i] for i in range(n) if peak[i] > 0]),
            "linearity_r2": _mean([_linearity(family.steps, distance[i], identity, t == "rotate") for i in range(n)]),
            "max_distance": _mean(list(peak)),
        }
    return {
        "layers": layer_summary,
        "prob_half_range": [_half_range(family.steps, probabilities[i], identity) for i in range(n)],
        "prob_above_half_fraction": _mean([float((probabilities[i] >= 0.5 * p0[i]).mean()) for i in range(n)]),
        "top1_kept_fraction": _mean(
            [float((arrays[f"{t}_top1"][i] == int(originals[i].argmax())).mean()) for i in range(n)]
        ),
    }


def run(
    ctx: vizkit.RunContext,
    target: tuple[str, ...],
    layers: list[str],
    transforms: list[str],
    steps: int,
    range_translate: str,
    range_scale: str,
    range_rotate: str,
    normalize: str,
) -> vizkit.Result:
    ranges = {
        "translate": parse_range(range_translate, "--range-translate"),
        "scale": parse_range(range_scale, "--range-scale"),
        "rotate": parse_range(range_rotate, "--range-rotate"),
    }
    families = make_transforms(transforms, steps, ranges)
    if not ctx.image_paths:
        raise vizkit.UsageError("invariance needs image files (--image FILE ...): it transforms them before cropping")
    preprocess = ctx.preprocess
    fill = list(preprocess.mean)  # the dataset mean colour, zero after normalisation
    started = time.perf_counter()
    per_image, first_resized = _measure_images(ctx, families, layers, fill, normalize)
    n = len(per_image)
    originals = torch.stack([first for _, _, first in per_image])
    classes = originals.shape[1]
    vizkit.data.check_labels(ctx.labels, classes)
    targets = _targets(target, n, ctx.labels, classes, originals)
    p0 = originals.softmax(dim=1)[torch.arange(n), torch.tensor(targets)].numpy()

    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    for family in families:
        summary[family.name] = _family_summary(family, per_image, layers, targets, p0, originals, arrays)
    names = [ctx.label(t) for t in targets]
    result = vizkit.Result(
        summary={
            "images": [str(p) for p in ctx.image_paths],
            "target": targets,
            "target_name": names,
            "original_probability": [round(float(p), 6) for p in p0],
            "layers": layers,
            "transforms": {f.name: list(f.steps) for f in families},
            "normalize": normalize,
            "fill": "dataset mean",
            "seconds_measure": round(time.perf_counter() - started, 3),
            "summary": summary,
        },
        arrays=arrays,
    )
    result.figures["invariance"] = curves_figure(
        ctx,
        first_resized,
        families,
        layers,
        arrays,
        names,
        normalize,
        fill,
    )
    result.figures["invariance_top1"] = top1_figure(ctx, families, arrays, names)
    return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _mean(values: list[Any]) -> float | None:
    """The mean of the finite values, to 6 significant digits (not decimals: a relative distance
    of 3e-7 is not 0.0); None if there is none."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(f"{float(np.mean(kept)):.6g}") if kept else None


# ------------------------------------------------------------------------------------ figures
def curves_figure(
    ctx: vizkit.RunContext,
    resized: Tensor,
    families: list[Transform],
    layers: list[str],
    arrays: dict[str, np.ndarray],
    names: list[str],
    normalize: str,
    fill: list[float],
) -> Any:
    """Fig. 5: a row per transformation: example images, distance per layer, P(true class)."""
    from torchvision.transforms.v2 import functional as tf

    rows, columns = len(families), len(layers) + 2
    figure = new_figure(3.1 * columns, 2.8 * rows + 0.6)
    grid = figure.add_gridspec(rows, columns, width_ratios=[1.7] + [1] * (columns - 1), wspace=0.32, hspace=0.45)
    preprocess = ctx.preprocess
    colours = [f"C{i}" for i in range(len(names))]
    for r, family in enumerate(families):
        t = family.name
        steps = arrays[f"{t}_steps"]
        # (a) a strip of the first image at five of the steps
        ax = figure.add_subplot(grid[r, 0])
        picks = np.unique(np.linspace(0, len(steps) - 1, 5).round().astype(int))
        tiles = [
            tf.center_crop(family.apply(resized, float(steps[k]), fill), [preprocess.crop, preprocess.crop])
            .permute(1, 2, 0)
            .clamp(0, 1)
            .numpy()
            for k in picks
        ]
        ax.imshow(vizkit.toolkit.figures.tile_mosaic(np.stack(tiles), rows=1), interpolation="bilinear")
        ax.set_xticks(
            [(k + 0.5) * (preprocess.crop + 2) for k in range(len(picks))],
            [f"{steps[k]:.3g}" for k in picks],
            fontsize=6,
        )
        ax.set_yticks([])
        ax.set_title(f"({'abc'[r % 3]}) {UNITS[t]}", fontsize=8, loc="left")
        for c, layer in enumerate(layers):
            ax = figure.add_subplot(grid[r, 1 + c])
            for i, name in enumerate(names):
                ax.plot(steps, arrays[f"{t}_distance_{layer}"][i], color=colours[i], linewidth=1.1, label=name)
            ax.set_title(f"{layer}: " + ("relative " if normalize == "norm" else "") + "Euclidean distance", fontsize=8)
            ax.set_xlabel(UNITS[t], fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_ylim(bottom=0)
        ax = figure.add_subplot(grid[r, columns - 1])
        for i, name in enumerate(names):
            ax.plot(steps, arrays[f"{t}_prob"][i], color=colours[i], linewidth=1.1, label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("P(true class)", fontsize=8)
        ax.set_xlabel(UNITS[t], fontsize=7)
        ax.tick_params(labelsize=6)
        if r == 0:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
    figure.suptitle(
        "Invariance (Fig. 5): feature distance to the original image and probability of the true class", fontsize=10
    )
    # margins in inches (a fraction of the height left a one-transform figure's suptitle on top of
    # the panels' titles): the suptitle and a row of titles above, tick labels and x label below
    height = figure.get_figheight()
    figure.subplots_adjust(left=0.03, right=0.86, top=1 - 0.75 / height, bottom=0.6 / height)
    return figure


def top1_figure(
    ctx: vizkit.RunContext, families: list[Transform], arrays: dict[str, np.ndarray], names: list[str]
) -> Any:
    """The top-1 label along each transformation, a coloured band per image; runs of three steps
    or more are labelled in place, every label has its own colour (up to 60)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels, counts = np.unique(np.concatenate([arrays[f"{f.name}_top1"].ravel() for f in families]), return_counts=True)
    order = labels[np.argsort(-counts, kind="stable")]  # most frequent first: they get the first colours
    palette = [colormaps[name](k) for name in ("tab20", "tab20b", "tab20c") for k in range(20)]
    lookup = {int(label): k for k, label in enumerate(order)}
    colours = [palette[k] if k < len(palette) else (0.5, 0.5, 0.5, 1.0) for k in range(len(order))]
    figure = new_figure(12, 0.3 + (0.3 * len(names) + 0.6) * len(families))
    for r, family in enumerate(families):
        ax = figure.add_subplot(len(families), 1, r + 1)
        top1 = arrays[f"{family.name}_top1"]
        coded = np.vectorize(lambda v: lookup[int(v)])(top1)
        steps = arrays[f"{family.name}_steps"]
        ax.imshow(
            coded,
            aspect="auto",
            interpolation="nearest",
            cmap=ListedColormap(colours),
            vmin=-0.5,
            vmax=len(order) - 0.5,
            extent=(-0.5, len(steps) - 0.5, len(names) - 0.5, -0.5),
        )
        for i in range(len(names)):
            start = 0
            for s in range(1, len(steps) + 1):
                if s == len(steps) or top1[i, s] != top1[i, start]:
                    if s - start >= 3:
                        ax.text(
                            (start + s - 1) / 2,
                            i,
                            ctx.label(int(top1[i, start]))[:18],
                            ha="center",
                            va="center",
                            fontsize=5.5,
                            color="black",
                        )
                    start = s
        ticks = np.unique(np.linspace(0, len(steps) - 1, 7).round().astype(int))
        ax.set_xticks(ticks, [f"{steps[k]:.3g}" for k in ticks], fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xlabel(UNITS[family.name], fontsize=7)
    shown = order[:40]
    legend_rows = math.ceil(len(shown) / 5)
    height = figure.get_figheight() + 0.35 + 0.12 * legend_rows
    figure.set_figheight(height)
    more = f" ({len(order) - len(shown)} rarer labels not in the legend)" if len(order) > len(shown) else ""
    figure.suptitle(f"Top-1 label along each transformation, one band per image{more}", fontsize=9, y=1 - 0.1 / height)
    figure.legend(
        handles=[Patch(color=colours[lookup[int(v)]], label=ctx.label(int(v))[:22]) for v in shown],
        fontsize=5.5,
        loc="upper center",
        ncol=5,
        frameon=False,
        bbox_to_anchor=(0.55, 1 - 0.32 / height),
    )
    figure.subplots_adjust(
        left=0.14,
        right=0.98,
        top=1 - (0.45 + 0.12 * legend_rows) / height,
        bottom=0.45 / height,
        hspace=0.35 + 0.1 * len(families),
    )
    return figure


@vizkit.hookimpl
def register_analyses(register: Any) -> None:
    register(
        vizkit.Analysis(
            name="invariance",
            description="Invariance curves: feature distance and true-class probability under translation, scale and rotation (Fig. 5)",
            run=run,
            inputs="images",
            options=[
                vizkit.Option(
                    "target",
                    str,
                    multiple=True,
                    help="true class: auto (the model's top-1), an index or a name; once for all images or once per image",
                ),
                vizkit.Option(
                    "layers",
                    str,
                    required=True,
                    help="layers to measure, comma-separated (the paper: layer 1 and layer 7)",
                    parse=vizkit.toolkit.parse_layers,
                ),
                vizkit.Option(
                    "transforms",
                    TRANSFORMS,
                    "translate,scale,rotate",
                    help="any of translate, scale, rotate, comma-separated",
                    comma_separated=True,
                ),
                vizkit.Option(
                    "steps",
                    int,
                    25,
                    help="steps per transformation (the identity is added when the grid misses it)",
                    minimum=2,
                    maximum=1000,
                ),
                vizkit.Option(
                    "range_translate",
                    str,
                    "-60,60",
                    help="vertical translation LOW,HIGH in input pixels (positive = down)",
                ),
                vizkit.Option("range_scale", str, "1.0,1.8", help="scale LOW,HIGH about the centre"),
                vizkit.Option("range_rotate", str, "0,360", help="rotation LOW,HIGH in degrees, counter-clockwise"),
                vizkit.Option(
                    "normalize",
                    ("none", "norm"),
                    "none",
                    help="norm: divide each distance by the norm of the original's features",
                ),
            ],
            demo={"layers": "conv1,fc7", "steps": 13},
            demo_quick={"steps": 5},
            view=report.per_image_view(["target_name", "target", "original_probability"]),  # the report's rows
        )
    )
