"""Views of the built-in analyses' summaries in the report: the tables a person would draw for
them (probes' accuracy per layer, correspondence's Table 1, per-image rows, the top9 unit
browser). A view returns its HTML and the summary keys it showed; what it did not show falls to
the generic rendering of :mod:`vizkit.app.report_values`, so a new key never goes missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report_units import draw_units, render_browser
from .report_values import esc, format_number, is_number, render_value, text_labels


@dataclass(frozen=True)
class Page:
    """One result as the views see it: its document, folder, the report's folder and the
    result's unique slug (anchor and asset folder name)."""

    document: dict[str, Any]
    folder: Path
    root: Path
    slug: str


View = Callable[[Page], tuple[str, set[str]]]


def _dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...`` or None where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _title(key: str) -> str:
    return key.replace("_", " ")


def _mean_std(mean: Any, std: Any, percent: bool = False) -> str:
    """``mean ± std`` with the mean rounded to the std's precision (two significant digits of
    the std), as a table of results is written; in percent for accuracies."""
    if not is_number(mean) or not math.isfinite(mean):
        return '<span class="none">—</span>'
    scale, unit = (100.0, "%") if percent else (1.0, "")
    mean = mean * scale
    if not is_number(std) or not math.isfinite(std) or std <= 0:
        text = f"{format_number(mean)}{unit}" + (" ± 0" if is_number(std) and std == 0 else "")
    else:
        std = std * scale
        decimals = max(0, 1 - math.floor(math.log10(std)))
        text = f"{mean:.{decimals}f}{unit} ± {std:.{decimals}f}"
    return f'<span class="num">{esc(text)}</span>'


# ------------------------------------------------------------------------------ per-image rows
PER_IMAGE: dict[str, list[str]] = {
    "deconvnet": ["predicted", "activations"],
    "occlusion": [
        "target_name",
        "target",
        "unoccluded_probability",
        "min_probability",
        "strongest_map",
        "positions_evaluated",
    ],
    "invariance": ["target_name", "target", "original_probability"],
    "attribution": ["target_name", "target", "probability", "deletion_best"],
}


def _image_names(document: dict[str, Any]) -> list[str] | None:
    images = document.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        return None
    return images


def per_image_table(document: dict[str, Any], keys: list[str]) -> tuple[str, set[str]]:
    """One row per input image with the per-image values of ``keys`` (those that are lists with
    one entry per image; an analysis that squeezes a single image's lists is handled too)."""
    images = _image_names(document)
    if images is None:
        return "", set()
    n = len(images)
    columns = []
    for key in keys:
        value = document.get(key)
        if isinstance(value, list) and len(value) == n:
            columns.append((key, value))
        elif n == 1 and key in document:
            columns.append((key, [value]))
    if not columns:
        return "", set()
    head = "<tr><th>image</th>" + "".join(f"<th>{esc(_title(key))}</th>" for key, _ in columns) + "</tr>"
    if "activations" in dict(columns) and isinstance(document.get("channels"), list):
        head = head.replace(
            "<th>activations</th>",
            f"<th>activations of maps {esc(', '.join(str(c) for c in document['channels']))}</th>",
        )
    rows = "".join(
        f"<tr><th>{label}</th>" + "".join(f"<td>{render_value(values[i], 2)}</td>" for _, values in columns) + "</tr>"
        for i, label in enumerate(text_labels(images))
    )
    return f'<h3>Per image</h3><table class="records">{head}{rows}</table>', {"images"} | {k for k, _ in columns}


def per_image_view(keys: list[str]) -> View:
    def view(page: Page) -> tuple[str, set[str]]:
        return per_image_table(page.document, keys)

    return view


def attribution_view(page: Page) -> tuple[str, set[str]]:
    """Per-image rows, then the deletion curve areas as a method x image table."""
    html, used = per_image_table(page.document, PER_IMAGE["attribution"])
    images = _image_names(page.document) or []
    for key, caption in (
        ("deletion_auc", "Area under the deletion curve (lower: the map found what matters sooner)"),
        ("deletion_auc_relative", "Deletion area as a fraction of the unaltered score"),
    ):
        table = page.document.get(key)
        if not isinstance(table, dict) or not all(
            isinstance(v, list) and len(v) == len(images) for v in table.values()
        ):
            continue
        head = "<tr><th>method</th>" + "".join(f"<th>{label}</th>" for label in text_labels(images)) + "</tr>"
        rows = "".join(
            f"<tr><th>{esc(method)}</th>" + "".join(f"<td>{render_value(v, 2)}</td>" for v in values) + "</tr>"
            for method, values in table.items()
        )
        html += f'<h3>{esc(caption)}</h3><table class="records">{head}{rows}</table>'
        used.add(key)
    return html, used


def _columns(declared: Any, table: dict) -> list[str]:
    """The declared column names, then any other key found in the table's inner dicts."""
    columns: list[str] = [str(name) for name in _list(declared)]
    for inner in table.values():
        if isinstance(inner, dict):
            columns.extend(str(key) for key in inner if str(key) not in columns)
    return columns


def _two_level_head(before: list[str], groups: list[str], sub: tuple[str, str], after: tuple[str, ...] = ()) -> str:
    """A header row of two-column groups (``sub`` under each group) between single columns."""
    single = lambda names: "".join(f"<th rowspan='2'>{esc(name)}</th>" for name in names)
    return (
        "<tr>"
        + single(before)
        + "".join(f"<th colspan='2'>{esc(group)}</th>" for group in groups)
        + single(after)
        + "</tr><tr>"
        + "".join(f"<th>{esc(sub[0])}</th><th>{esc(sub[1])}</th>" for _ in groups)
        + "</tr>"
    )


# ------------------------------------------------------------------------------------- probes
def probes_view(page: Page) -> tuple[str, set[str]]:
    """Table 7 style: a row per layer, per classifier the mean per-class accuracy ± std over
    folds (best layer in bold) and the C cross-validation chose in each fold."""
    document = page.document
    table = document.get("table")
    if not isinstance(table, dict) or not table:
        return "", set()
    layers = [str(layer) for layer in _list(document.get("layers")) or table]
    kinds = _columns(document.get("classifiers"), table)
    dims: dict[str, Any] = document["dims"] if isinstance(document.get("dims"), dict) else {}
    best = {}
    for kind in kinds:
        means = [(_dig(table, layer, kind, "mean"), layer) for layer in layers]
        finite = [(m, layer) for m, layer in means if is_number(m) and math.isfinite(m)]
        best[kind] = max(finite)[1] if finite else None
    head = _two_level_head(["layer", "features"], kinds, ("accuracy", "C per fold"))
    folds = document.get("folds")
    single = is_number(folds) and folds == 1  # one fold has no spread: "± 0" would claim one
    rows = []
    for layer in layers:
        cells = [f"<th>{esc(layer)}</th><td>{render_value(dims.get(layer))}</td>"]
        for kind in kinds:
            std = None if single else _dig(table, layer, kind, "std")
            text = _mean_std(_dig(table, layer, kind, "mean"), std, percent=True)
            if best[kind] == layer:
                text = f"<b>{text}</b>"
            cells.append(f"<td>{text}</td><td>{render_value(_dig(table, layer, kind, 'C'), 2)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    train = document.get("train_per_class")
    classes = document.get("classes")
    caption = "Mean per-class test accuracy" + (" of a single fold, so no ± std" if single else " ± std over folds")
    details = []
    if is_number(folds) and not single:
        details.append(f"{folds} folds")
    if is_number(train):
        details.append(f"{train} training images per class")
    if isinstance(classes, list):
        details.append(f"{len(classes)} classes")
    if details:
        caption += " (" + ", ".join(details) + ")"
    html = f'<h3>Linear probes</h3><table class="records probes"><caption>{esc(caption)}; best layer in bold</caption>{head}{"".join(rows)}</table>'
    return html, {"table", "layers", "classifiers", "dims"}


# ------------------------------------------------------------------------------ correspondence
def correspondence_view(page: Page) -> tuple[str, set[str]]:
    """Table 1 style: a row per part and one for random squares, per layer the mean ± std of the
    pairwise sign-change distance and the part's p-value against random squares."""
    document = page.document
    table, random = document.get("table"), document.get("random")
    if not isinstance(table, dict) or not table:
        return "", set()
    parts = [str(p) for p in _list(document.get("parts")) or table]
    layers = _columns(document.get("layers"), table)
    pairs: dict[str, Any] = document["pairs"] if isinstance(document.get("pairs"), dict) else {}
    head = _two_level_head(["occluded"], layers, ("distance", "p vs random"), after=("pairs",))
    rows = []
    for part in parts:
        cells = "".join(
            f"<td>{_mean_std(_dig(table, part, layer, 'mean'), _dig(table, part, layer, 'std'))}</td>"
            f"<td>{render_value(_dig(table, part, layer, 'p_vs_random'))}</td>"
            for layer in layers
        )
        rows.append(f"<tr><th>{esc(_title(part))}</th>{cells}<td>{render_value(pairs.get(part))}</td></tr>")
    used = {"table", "parts", "layers", "pairs"}
    if isinstance(random, dict):
        cells = "".join(
            f"<td>{_mean_std(_dig(random, layer, 'mean'), _dig(random, layer, 'std'))}</td><td></td>"
            for layer in layers
        )
        rows.append(
            f'<tr class="baseline"><th>random squares</th>{cells}<td>{render_value(pairs.get("random"))}</td></tr>'
        )
        used.add("random")
    caption = (
        "Hamming distance between the sign changes of image pairs, mean ± std over pairs "
        "(lower: occluding the part changes different images' features alike)"
    )
    html = f'<h3>Correspondence</h3><table class="records correspondence"><caption>{esc(caption)}</caption>{head}{"".join(rows)}</table>'
    return html, used


# ---------------------------------------------------------------------------------------- top9
def top9_view(page: Page) -> tuple[str, set[str]]:
    """The unit browser over every map's card (see :mod:`vizkit.app.report_units`)."""
    document = page.document
    try:
        units, total = draw_units(page.folder, document, page.root, page.slug)
    except (OSError, ValueError) as error:
        return f'<p class="note">Unit browser unavailable: {esc(error)}</p>', set()
    k = document.get("k")
    n_images = document.get("n_images")
    html = render_browser(
        units,
        total,
        int(k) if is_number(k) else 0,
        str(document.get("layer", "?")),
        int(n_images) if is_number(n_images) else None,
    )
    return html, set()


VIEWS: dict[str, View] = {
    "deconvnet": per_image_view(PER_IMAGE["deconvnet"]),
    "occlusion": per_image_view(PER_IMAGE["occlusion"]),
    "invariance": per_image_view(PER_IMAGE["invariance"]),
    "attribution": attribution_view,
    "probes": probes_view,
    "correspondence": correspondence_view,
    "top9": top9_view,
}
