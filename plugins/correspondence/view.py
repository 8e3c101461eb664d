"""The ``correspondence`` report view: Table 1 as an HTML table."""

from __future__ import annotations

from typing import Any

import vizkit
from vizkit.toolkit import report


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
