"""The ``probes`` report view: Table 7 as an HTML table."""

from __future__ import annotations

import math
from typing import Any

import vizkit
from vizkit.toolkit import report


def report_view(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """The report's Table 7: a row per layer, per classifier the mean per-class accuracy ± std
    over folds (best layer in bold) and the C cross-validation chose in each fold."""
    document = page.document
    table = document.get("table")
    if not isinstance(table, dict) or not table:
        return "", set()
    listed = document.get("layers")
    layers = [str(layer) for layer in (listed if isinstance(listed, list) else []) or table]
    kinds = report.columns(document.get("classifiers"), table)
    dims: dict[str, Any] = document["dims"] if isinstance(document.get("dims"), dict) else {}
    best = {}
    for kind in kinds:
        means = [(report.dig(table, layer, kind, "mean"), layer) for layer in layers]
        finite = [(m, layer) for m, layer in means if report.is_number(m) and math.isfinite(m)]
        best[kind] = max(finite)[1] if finite else None
    head = report.two_level_head(["layer", "features"], kinds, ("accuracy", "C per fold"))
    folds = document.get("folds")
    single = report.is_number(folds) and folds == 1  # one fold has no spread: "± 0" would claim one
    rows = []
    for layer in layers:
        cells = [f"<th>{report.esc(layer)}</th><td>{report.render_value(dims.get(layer))}</td>"]
        for kind in kinds:
            std = None if single else report.dig(table, layer, kind, "std")
            text = report.mean_std(report.dig(table, layer, kind, "mean"), std, percent=True)
            if best[kind] == layer:
                text = f"<b>{text}</b>"
            cells.append(f"<td>{text}</td><td>{report.render_value(report.dig(table, layer, kind, 'C'), 2)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    caption = _report_caption(document, single)
    html = (
        f'<h3>Linear probes</h3><table class="records probes"><caption>{report.esc(caption)}; best layer in bold'
        f"</caption>{head}{''.join(rows)}</table>"
    )
    return html, {"table", "layers", "classifiers", "dims"}


def _report_caption(document: dict[str, Any], single: bool) -> str:
    folds, train, classes = document.get("folds"), document.get("train_per_class"), document.get("classes")
    caption = "Mean per-class test accuracy" + (" of a single fold, so no ± std" if single else " ± std over folds")
    details = []
    if report.is_number(folds) and not single:
        details.append(f"{folds} folds")
    if report.is_number(train):
        details.append(f"{train} training images per class")
    if isinstance(classes, list):
        details.append(f"{len(classes)} classes")
    if details:
        caption += " (" + ", ".join(details) + ")"
    return caption
