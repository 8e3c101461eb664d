"""featvis in ``vizkit report``: after the figure, a table of every unit with its picture(s) (the
result's ``units/<unit>.png``) and how far to trust them: the activation reached, the best natural
exemplar's, their ratio, and the unit's rank among the layer's units on the picture."""

from __future__ import annotations

import math
from typing import Any

import vizkit
from vizkit.toolkit.report import esc, url

SHOWN = {
    "layer",
    "objective",
    "units",
    "unit_labels",
    "layer_units",
    "per_unit",
    "exemplars",
    "images",
    "ratio_median",
    "ratio_min",
    "ratio_max",
    "ratio_above_1",
    "rank_1_fraction",
    "diversity",
}

CSS = """
.featvis table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
.featvis td, .featvis th { padding: 3px 8px; border-bottom: 1px solid #e3e3e3; text-align: right; vertical-align: middle; }
.featvis td:first-child, .featvis th:first-child { text-align: left; }
.featvis img { height: 64px; image-rendering: auto; display: block; }
.featvis .scroll { overflow-x: auto; max-width: 100%; }
.featvis .low { color: #a33; }
.featvis td:first-child { white-space: nowrap; }
@media (max-width: 600px) {
  .featvis td, .featvis th { padding: 3px 4px; }
  .featvis img { height: 48px; }
}
"""


def _number(value: Any, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _first(values: Any) -> Any:
    return values[0] if isinstance(values, list) and values else None


def picture_url(page: vizkit.framework.ReportPage, unit: Any) -> str:
    """The URL, from the report's folder, of the result's picture of ``unit``."""
    relative = page.folder.resolve().relative_to(page.root.resolve()).as_posix()
    return url("" if relative == "." else relative, "units", f"{int(unit)}.png")


def lede(document: dict[str, Any]) -> str:
    """One sentence on the whole run: how the pictures compare with natural images."""
    parts = []
    exemplars = document.get("exemplars")
    if isinstance(exemplars, dict):
        if exemplars.get("exact"):
            where = f"every one of the {esc(exemplars.get('images'))} images of {esc(exemplars.get('from'))}"
        else:
            where = (
                f"the exemplars the {esc(exemplars.get('source'))} result in {esc(exemplars.get('from'))} kept "
                f"(the strongest of {esc(exemplars.get('images'))} images by their maximum)"
            )
        parts.append(f"Natural yardstick: {where}, scored with the same objective.")
        median = document.get("ratio_median")
        if isinstance(median, (int, float)):
            parts.append(
                f"The pictures reach <b>{esc(_number(median))}x</b> their unit's best natural exemplar (median; "
                f"{esc(_number(document.get('ratio_min')))}x to {esc(_number(document.get('ratio_max')))}x), "
                f"{esc(_number(100 * float(document.get('ratio_above_1') or 0)))}% of them more than it."
            )
    else:
        parts.append("No natural exemplars were given (--data or --exemplars), so no ratio can be shown.")
    fraction = document.get("rank_1_fraction")
    if isinstance(fraction, (int, float)):
        parts.append(
            f"On {esc(_number(100 * fraction))}% of the pictures their unit is the layer's most active "
            f"of {esc(document.get('layer_units'))} units (rank 1)."
        )
    return f"<p>{' '.join(parts)}</p>"


def render(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """The featvis table and the keys it shows."""
    document = page.document
    records = document.get("per_unit")
    if not isinstance(records, list):
        return "", set()
    units = document.get("layer_units")
    has_ratio = any(isinstance(r, dict) and "ratio" in r for r in records)
    has_normalized = any(isinstance(r, dict) and "rank_normalized" in r for r in records)
    head = ["unit", "picture", "reached"]
    if has_ratio:
        head += ["best natural", "ratio"]
    head += [f"rank of {esc(units)}"]
    if has_normalized:
        head += ["rank, normalised"]
    rows = []
    for record in records:
        if not isinstance(record, dict):
            continue
        ratio = _first(record.get("ratio"))
        cells = [
            esc(record.get("label", record.get("unit"))),
            f'<img loading="lazy" alt="{esc(record.get("label"))}" src="{picture_url(page, record.get("unit", 0))}">',
            esc(_number(_first(record.get("reached")))),
        ]
        if has_ratio:
            low = isinstance(ratio, (int, float)) and ratio < 1
            cells += [
                esc(_number(record.get("best_natural"))),
                f'<span class="{"low" if low else ""}">{esc(_number(ratio))}</span>',
            ]
        cells.append(esc(_first(record.get("rank"))))
        if has_normalized:
            cells.append(esc(_first(record.get("rank_normalized")) or "—"))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = (
        '<div class="scroll"><table><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    return f'<div class="featvis">{lede(document)}{table}</div>', set(SHOWN)


def report_view() -> vizkit.ReportView:
    return vizkit.ReportView(render, css=CSS, paper="", paper_order=None, key_figure="featvis")
