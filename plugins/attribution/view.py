"""attribution's report view: a row per image (target, probability, the method whose deletion
curve fell fastest), then the faithfulness scores as method x image tables: the areas under the
deletion curves, and where ``--metrics`` asked for them the insertion areas and ROAD's means."""

from __future__ import annotations

import vizkit
from vizkit.toolkit import report

PER_IMAGE = ["target_name", "target", "probability", "deletion_best"]
AREAS = (
    ("deletion_auc", "Area under the deletion curve (lower: the map found what matters sooner)"),
    ("deletion_auc_relative", "Deletion area as a fraction of the unaltered score"),
    ("insertion_auc", "Area under the insertion curve (higher: the most attributed pixels alone restore the score)"),
    ("road_morf", "ROAD, most relevant first: mean probability over the percentages imputed (lower: better)"),
    ("road_lerf", "ROAD, least relevant first: mean probability over the percentages imputed (higher: better)"),
)


def report_view(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """Per-image rows, then each faithfulness table (method x image) the summary holds."""
    html, used = report.per_image_table(page.document, PER_IMAGE)
    images = page.document.get("images")
    images = images if isinstance(images, list) and images and all(isinstance(i, str) for i in images) else []
    for key, caption in AREAS:
        table = page.document.get(key)
        if not isinstance(table, dict) or not all(
            isinstance(v, list) and len(v) == len(images) for v in table.values()
        ):
            continue
        head = "<tr><th>method</th>" + "".join(f"<th>{label}</th>" for label in report.text_labels(images)) + "</tr>"
        rows = "".join(
            f"<tr><th>{report.esc(method)}</th>"
            + "".join(f"<td>{report.render_value(v, 2)}</td>" for v in values)
            + "</tr>"
            for method, values in table.items()
        )
        html += f'<h3>{report.esc(caption)}</h3><table class="records">{head}{rows}</table>'
        used.add(key)
    return html, used
