"""The ``correspondence`` analysis: does occluding the same part change the features the same way?
(paper §7, Table 1, Fig. 8)

For a set of images of one kind of object with named parts marked (``--landmarks``, e.g. the eyes
and nose of frontal dog faces), each part is covered in every image by a square of ``--size``
input pixels filled with ``--fill``, and, as a baseline, ``--random`` squares of the same size are
placed at random points on the object. For layer l and image i, ``eps_i = x_i - x~_i`` is the
change of the flattened layer output; for every pair of images the score is the Hamming distance
between ``sign(eps_i)`` and ``sign(eps_j)`` divided by the vector length, reported as mean ± std
over the pairs. Lower = the occlusion changes the features of different images the same way.

Choices the paper leaves open, made here:

* **Exact zeros** (``--zeros``). ``sign`` (default, the paper's formula read literally): sign is
  -1, 0 or +1 and all positions count, so a unit that does not change in either image counts as
  agreement. ``changed``: only positions that change in at least one of the two images count
  (the distance is normalised by their number), so units far from both occluders or dead in both
  do not dilute the score.
* **Float noise.** Every occluded copy goes through the model in a batch whose first row is its
  own unoccluded image, so unchanged units give exactly equal outputs; ``--tolerance`` (a
  fraction of the layer's largest unoccluded |activation|) treats smaller changes as zero.
* **Pairs** are the unordered pairs i < j of images that both have the part; std is over those
  pairs (population std). **Random**: draw k places one square in every image; a draw's score is
  the mean over its pairs; ``mean`` and ``std`` are over all pairs of all draws, ``draw_std`` the
  std of the draws' means.
* **Significance** (the paper gives none): ``p_vs_random`` is a one-sided Monte-Carlo rank test of
  "the part scores below a random square": the fraction of the ``--random`` draws (plus the part
  itself) whose mean is at most the part's, (1 + #{draws <= part}) / (1 + draws). It is exact
  when a part's occlusion is exchangeable with a random one under the null; its resolution is
  1 / (1 + draws), so use more draws for smaller p-values.
* **Random squares** are centred uniformly inside the object: its ``box`` when the landmarks give
  one, else the box around the image's parts grown by ``--size`` on every side; either is mapped
  to input pixels and clipped to the crop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

import vizkit
from vizkit.data import parse_fill
from vizkit.toolkit import report
from vizkit.toolkit.figures import new_figure

RESERVED_KEYS = ("image", "class_index", "box", "parts", "name")
Zeros = Literal["sign", "changed"]


# ------------------------------------------------------------------------------------ landmarks
@dataclass(frozen=True)
class LandmarkedImage:
    """One image of the landmarks file: its path, named parts and optional object box, all in
    the stored image's pixels, and its optional class."""

    path: Path
    parts: dict[str, tuple[float, float]]
    box: tuple[float, float, float, float] | None = None
    class_index: int | None = None


def _resolve_image(name: str, folder: Path) -> Path | None:
    """The image ``name`` relative to the landmarks file's folder, then each parent folder, then
    as given."""
    for base in (folder, *folder.parents):
        candidate = base / name
        if candidate.is_file():
            return candidate
    given = Path(name)
    return given if given.is_file() else None


def _point(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def read_landmarks(path: str | Path) -> list[LandmarkedImage]:
    """The images of a landmarks file (the format of ``shared/data/dog_landmarks.json``).

    Args:
        path: a JSON file: ``{"images": [...]}`` or a bare list; each entry has ``image`` (a path),
            any number of parts as ``"name": [x, y]`` (or under ``"parts": {...}``), an optional
            ``box`` [x0, y0, x1, y1] and an optional ``class_index``.
    """
    path = Path(path)
    if not path.is_file():
        raise vizkit.UsageError(f"landmarks file not found: {path}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise vizkit.UsageError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    entries = document.get("images") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise vizkit.UsageError(f"{path} must hold a list of images (or {{'images': [...]}})")
    images = [_landmarked_image(path, number, entry) for number, entry in enumerate(entries)]
    if len(images) < 2:
        raise vizkit.UsageError(f"{path} lists {len(images)} image(s); correspondence needs at least two")
    if not any(image.parts for image in images):
        raise vizkit.UsageError(f'{path} names no parts (e.g. "nose": [x, y]) in any image')
    return images


def _landmarked_image(path: Path, number: int, entry: Any) -> LandmarkedImage:
    """Entry ``number`` of landmarks file ``path``, checked (a UsageError says what is wrong)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        raise vizkit.UsageError(f"{path}: image {number} has no 'image' path")
    found = _resolve_image(entry["image"], path.parent)
    if found is None:
        raise vizkit.UsageError(f"{path}: image not found: {entry['image']} (looked next to the file and above it)")
    source = entry["parts"] if isinstance(entry.get("parts"), dict) else entry
    parts = {}
    for key, value in source.items():
        if key in RESERVED_KEYS:
            continue
        point = _point(value)
        if point is None:
            raise vizkit.UsageError(f"{path}: part '{key}' of {entry['image']} is not an [x, y] pair")
        parts[key] = point
    box = entry.get("box")
    if box is not None and not (isinstance(box, list) and len(box) == 4 and box[0] < box[2] and box[1] < box[3]):
        raise vizkit.UsageError(f"{path}: the box of {entry['image']} must be [x0, y0, x1, y1] with x0 < x1, y0 < y1")
    class_index = entry.get("class_index")
    corners = (float(box[0]), float(box[1]), float(box[2]), float(box[3])) if box else None
    return LandmarkedImage(found, parts, corners, class_index)


# ------------------------------------------------------------------------------------ squares
@dataclass(frozen=True)
class Square:
    """An occluder: top-left (row, col) in input pixels and side; may reach past the border,
    where it is clipped."""

    top: int
    left: int
    size: int

    @classmethod
    def centred(cls, x: float, y: float, size: int) -> Square:
        return cls(round(y - (size - 1) / 2), round(x - (size - 1) / 2), size)

    def apply(self, image: Tensor, fill: Tensor) -> Tensor:
        """A copy of ``image`` [3,H,W] with the square (clipped to the image) filled."""
        out = image.clone()
        height, width = image.shape[-2:]
        y0, x0 = max(0, self.top), max(0, self.left)
        y1, x1 = min(height, self.top + self.size), min(width, self.left + self.size)
        out[:, y0:y1, x0:x1] = fill.to(image.device, image.dtype).reshape(3, 1, 1)
        return out


def object_region(
    image: LandmarkedImage, parts: dict[str, tuple[float, float]], size: int, crop: int, to_input: Any
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in input pixels where random squares are centred: the mapped ``box``, or
    the box around the image's mapped parts grown by ``size``; clipped to the crop."""
    if image.box is not None:
        x0, y0 = to_input(image.box[0], image.box[1])
        x1, y1 = to_input(image.box[2], image.box[3])
    else:
        xs = [p[0] for p in parts.values()]
        ys = [p[1] for p in parts.values()]
        x0, y0, x1, y1 = min(xs) - size, min(ys) - size, max(xs) + size, max(ys) + size
    clip = lambda v: min(max(v, 0.0), crop - 1.0)
    return clip(x0), clip(y0), clip(x1), clip(y1)


# ------------------------------------------------------------------------------------ the score
def sign_distances(eps: Tensor, zeros: Zeros = "sign") -> np.ndarray:
    """Pairwise normalised Hamming distances between the signs of the rows of ``eps``.

    Args:
        eps: [n, D] changes of a feature vector (original minus occluded), one row per image.
        zeros: ``sign``: sign in {-1, 0, +1}, every position counts, distance / D; ``changed``:
            only positions where at least one of the two rows is non-zero count, distance / their
            number (NaN when there is none).

    Returns:
        [n, n] float64 matrix, symmetric, 0 on the diagonal.
    """
    if zeros not in ("sign", "changed"):
        raise vizkit.UsageError(f"--zeros must be sign or changed, not '{zeros}'")
    signs = torch.sign(eps.reshape(eps.shape[0], -1)).to(torch.int8)
    n, length = signs.shape
    out = np.zeros((n, n))
    for i in range(n):
        differ = signs[i][None] != signs  # [n, D]
        if zeros == "sign":
            out[i] = (differ.sum(dim=1).double() / length).numpy()
        else:
            counted = (signs[i][None] != 0) | (signs != 0)
            totals = counted.sum(dim=1).double()
            out[i] = torch.where(totals > 0, (differ & counted).sum(dim=1).double() / totals, torch.nan).numpy()
    np.fill_diagonal(out, 0.0)
    return out


def pair_values(matrix: np.ndarray, members: list[int]) -> np.ndarray:
    """The distances of the unordered pairs i < j among ``members`` (NaN pairs left out)."""
    values = [matrix[i, j] for a, i in enumerate(members) for j in members[a + 1 :]]
    array = np.asarray(values, dtype=np.float64)
    return array[~np.isnan(array)]


def p_below_random(part_mean: float, draw_means: np.ndarray) -> float | None:
    """One-sided Monte-Carlo rank p-value of "the part scores below a random occlusion"; None
    when the part has no score or no draw has one (``--zeros changed`` with a ``--tolerance``
    that no change exceeds): a missing score must not read as a small p."""
    draws = draw_means[~np.isnan(draw_means)]
    if math.isnan(part_mean) or draws.size == 0:
        return None
    return float((1 + np.sum(draws <= part_mean)) / (1 + draws.size))


# ------------------------------------------------------------------------------------ features
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
    bar = vizkit.toolkit.progress_bar(total=n * count, desc="correspondence", enabled=ctx.progress)
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


# ------------------------------------------------------------------------------------ analysis
def _parts_in_crop(
    entries: list[LandmarkedImage], pictures: list[Any], preprocess: vizkit.Preprocess
) -> tuple[list[dict[str, tuple[float, float]]], list[str]]:
    """Each image's parts mapped to input pixels, and the parts the crop cuts away (reported
    and skipped), in words."""
    crop = preprocess.crop
    mapped: list[dict[str, tuple[float, float]]] = []
    skipped: list[str] = []
    for entry, picture in zip(entries, pictures):
        width, height = picture.size
        inside = {}
        for part, (x, y) in entry.parts.items():
            ix, iy = preprocess.input_point(x, y, width, height)
            if 0 <= ix < crop and 0 <= iy < crop:
                inside[part] = (ix, iy)
            else:
                skipped.append(f"{part} of {entry.path.name} (at {ix:.0f},{iy:.0f}, outside the {crop}x{crop} crop)")
        mapped.append(inside)
    return mapped, skipped


def _named_in(mapped: list[dict[str, tuple[float, float]]], part: str) -> int:
    """How many images name ``part`` inside the crop."""
    return sum(part in inside for inside in mapped)


def _squares(
    entries: list[LandmarkedImage],
    mapped: list[dict[str, tuple[float, float]]],
    pictures: list[Any],
    parts: list[str],
    preprocess: vizkit.Preprocess,
    size: int,
    random: int,
    seed: int,
) -> tuple[list[list[Square]], list[tuple[float, float, float, float]]]:
    """Every image's squares: one per part it has (a placeholder where it has not), then
    ``random`` squares drawn inside its object region; and those regions."""
    crop = preprocess.crop
    generator = np.random.default_rng(seed)
    squares: list[list[Square]] = []
    regions = []
    for entry, inside, picture in zip(entries, mapped, pictures):
        own = [Square.centred(*inside[part], size) if part in inside else Square(0, 0, 0) for part in parts]

        def to_input(
            x: float, y: float, width: int = picture.size[0], height: int = picture.size[1]
        ) -> tuple[float, float]:
            return preprocess.input_point(x, y, width, height)

        region = object_region(entry, inside or {"centre": (crop / 2, crop / 2)}, size, crop, to_input)
        regions.append(region)
        xs = generator.uniform(region[0], region[2], random)
        ys = generator.uniform(region[1], region[3], random)
        squares.append(own + [Square.centred(float(x), float(y), size) for x, y in zip(xs, ys)])
    return squares, regions


def _random_distances(draws: np.ndarray, n: int) -> tuple[dict[str, float | None], np.ndarray]:
    """The random baseline of one layer from its ``draws`` ([draws, n, n] distance matrices):
    the mean and spread over every pair of every draw, and each draw's mean over its pairs."""
    everyone = list(range(n))
    draw_pairs = [pair_values(matrix, everyone) for matrix in draws]
    draw_means = np.array([values.mean() if values.size else np.nan for values in draw_pairs])
    pooled = np.concatenate(draw_pairs)
    scored = draw_means[~np.isnan(draw_means)]
    baseline = {
        "mean": _float(pooled.mean()) if pooled.size else None,
        "std": _float(pooled.std()) if pooled.size else None,
        "draw_std": _float(scored.std()) if scored.size else None,
    }
    return baseline, draw_means


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


def _float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


# ------------------------------------------------------------------------------------ figures
def occlusion_figure(
    ctx: vizkit.RunContext,
    images: Tensor,
    entries: list[LandmarkedImage],
    squares: list[list[Square]],
    parts: list[str],
    mapped: list[dict[str, tuple[float, float]]],
    fill: Tensor,
) -> Any:
    """Fig. 8: one row per image, one column per part and one for the first random draw."""
    from matplotlib.patches import Rectangle

    n, columns = len(entries), len(parts) + 1
    figure = new_figure(1.9 * (columns + 0.2), 1.95 * n + 0.5)
    for i in range(n):
        for c in range(columns):
            ax = figure.add_subplot(n, columns, i * columns + c + 1)
            square = squares[i][c] if c < len(parts) else squares[i][len(parts)]
            present = c >= len(parts) or parts[c] in mapped[i]
            shown = square.apply(images[i], fill) if present else images[i]
            vizkit.toolkit.figures.show(ax, ctx.preprocess.denormalize(shown.cpu()))
            if present:
                ax.add_patch(
                    Rectangle(
                        (square.left - 0.5, square.top - 0.5),
                        square.size,
                        square.size,
                        fill=False,
                        edgecolor="yellow",
                        linewidth=1.2,
                    )
                )
            if i == 0:
                ax.set_title("random (draw 1)" if c == len(parts) else parts[c].replace("_", " "), fontsize=8)
            if c == 0:
                ax.set_ylabel(entries[i].path.stem[:22], fontsize=7)
    figure.suptitle("Correspondence: the same part occluded in every image (and a random square)", fontsize=9)
    figure.subplots_adjust(left=0.06, right=0.99, top=0.92, bottom=0.01, wspace=0.04, hspace=0.08)
    return figure


def table_figure(
    table: dict,
    random_table: dict,
    parts: list[str],
    layers: list[str],
    zeros: str,
    size: int,
    draws: int,
    tolerance: float = 0.0,
) -> Any:
    """Table 1: parts (and random) as rows, layers as columns, mean ± std; lowest per column bold."""
    rows = [*parts, "random"]
    cells, colours = [], []
    best = {
        layer: min((table[p][layer]["mean"] for p in parts if table[p][layer]["mean"] is not None), default=None)
        for layer in layers
    }
    for row in rows:
        line, tint = [], []
        for layer in layers:
            stats = random_table[layer] if row == "random" else table[row][layer]
            if stats["mean"] is not None:
                text = f"{stats['mean']:.3f} ± {stats['std']:.3f}"
            else:
                text = "n/a (no change > tolerance)" if tolerance > 0 else "n/a (no unit changed)"
            if row != "random" and stats["p_vs_random"] is not None:
                text += f"\np = {stats['p_vs_random']:.3f}"
            line.append(text)
            bold = row != "random" and best[layer] is not None and stats["mean"] == best[layer]
            tint.append("#fff2b3" if bold else "white")
        cells.append(line)
        colours.append(tint)
    figure = new_figure(1.6 + 2.0 * len(layers), 0.9 + 0.55 * len(rows))
    ax = figure.add_subplot(1, 1, 1)
    ax.axis("off")
    drawn = ax.table(
        cellText=cells,
        cellColours=colours,
        rowLabels=[r.replace("_", " ") for r in rows],
        colLabels=layers,
        loc="center",
        cellLoc="center",
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1.0, 2.2)
    for (r, c), cell in drawn.get_celld().items():
        if r > 0 and c >= 0 and colours[r - 1][c] != "white":
            cell.get_text().set_fontweight("bold")
    ax.set_title(
        f"Sign-change Hamming distance (lower = more consistent), {size}px squares, zeros: {zeros}"
        + (f", tolerance {tolerance:g}" if tolerance > 0 else "")
        + ";\n"
        f"p: rank among {draws} random draws (one-sided, part < random)",
        fontsize=8,
    )
    return figure


# ------------------------------------------------------------------------------------ report view
def report_view(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """The report's Table 1: a row per part and one for random squares, per layer the mean ± std
    of the pairwise sign-change distance and the part's p-value against random squares."""
    document = page.document
    table, random = document.get("table"), document.get("random")
    if not isinstance(table, dict) or not table:
        return "", set()
    listed = document.get("parts")
    parts = [str(p) for p in (listed if isinstance(listed, list) else []) or table]
    layers = report.columns(document.get("layers"), table)
    pairs: dict[str, Any] = document["pairs"] if isinstance(document.get("pairs"), dict) else {}
    head = report.two_level_head(["occluded"], layers, ("distance", "p vs random"), after=("pairs",))
    rows = []
    for part in parts:
        cells = "".join(
            f"<td>{report.mean_std(report.dig(table, part, layer, 'mean'), report.dig(table, part, layer, 'std'))}</td>"
            f"<td>{report.render_value(report.dig(table, part, layer, 'p_vs_random'))}</td>"
            for layer in layers
        )
        rows.append(
            f"<tr><th>{report.esc(report.title(part))}</th>{cells}<td>{report.render_value(pairs.get(part))}</td></tr>"
        )
    used = {"table", "parts", "layers", "pairs"}
    if isinstance(random, dict):
        cells = "".join(
            f"<td>{report.mean_std(report.dig(random, layer, 'mean'), report.dig(random, layer, 'std'))}</td><td></td>"
            for layer in layers
        )
        rows.append(
            f'<tr class="baseline"><th>random squares</th>{cells}<td>{report.render_value(pairs.get("random"))}</td></tr>'
        )
        used.add("random")
    caption = (
        "Hamming distance between the sign changes of image pairs, mean ± std over pairs "
        "(lower: occluding the part changes different images' features alike)"
    )
    html = (
        f'<h3>Correspondence</h3><table class="records correspondence"><caption>{report.esc(caption)}</caption>'
        f"{head}{''.join(rows)}</table>"
    )
    return html, used


@vizkit.hookimpl
def register_analyses(register: Any) -> None:
    register(
        vizkit.Analysis(
            name="correspondence",
            description="Correspondence: does occluding the same part change the features of different images the same way? (Table 1, Fig. 8)",
            run=run,
            inputs="none",
            options=[
                vizkit.Option(
                    "landmarks",
                    str,
                    required=True,
                    help="JSON of images with named parts, e.g. shared/data/dog_landmarks.json",
                ),
                vizkit.Option(
                    "layers",
                    str,
                    required=True,
                    help="layers to compare, comma-separated (e.g. conv5,fc7)",
                    parse=vizkit.toolkit.parse_layers,
                ),
                vizkit.Option(
                    "size", int, 40, help="side of each occluding square, in input pixels", minimum=1, maximum=4096
                ),
                vizkit.Option(
                    "random",
                    int,
                    20,
                    help="random squares per image (the baseline; also the p-values' draws)",
                    minimum=1,
                    maximum=10_000,
                ),
                vizkit.Option(
                    "fill", str, "mean", help="occluder colour: mean (dataset mean), zero (black), or R,G,B in 0-255"
                ),
                vizkit.Option(
                    "zeros",
                    ("sign", "changed"),
                    "sign",
                    help="sign: every unit counts, 0 is its own sign; changed: only units that change in either image",
                ),
                vizkit.Option(
                    "tolerance",
                    float,
                    0.0,
                    help="changes below this fraction of the layer's largest activation count as zero",
                    minimum=0,
                    maximum=1,
                ),
            ],
            demo={"landmarks": "{landmarks}", "layers": "conv5,fc7", "random": 10},  # a resource vizkit demo finds
            demo_quick={"random": 4},
            view=vizkit.ReportView(report_view),
        )
    )
