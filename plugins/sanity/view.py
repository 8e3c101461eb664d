"""sanity's report view: "can I trust this map?", a table per image with a row per method: how
alike its map stays once every layer is re-drawn (a map that explains the model should change),
how alike it is for another class (a map that explains the class should change), and how
faithful the trained model's map is (deletion, insertion, ROAD), then plain words for the numbers."""

from __future__ import annotations

import math
from typing import Any

import vizkit
from vizkit.toolkit import report

PER_IMAGE = ["target_name", "target", "probability", "random_logit_name"]
EXPLAINED = (
    "<p class='note'>How to read it. <b>Randomized</b>: similarity of the map after every "
    "randomized step has been re-drawn (the last cascading column of the figure) to the trained "
    "model's map: near 1 means the map hardly depends on the weights, so it cannot explain what this "
    "model learnt (Adebayo et al. found this for guided backprop); near 0 means it does. <b>Other "
    "class</b>: the same similarity for a random other class on the trained model: near 1 means the "
    "map does not depend on the class it is said to explain. <i>all zero</i>: the map vanished once the "
    "model was randomized (it depends on the weights; no similarity is defined). Spearman |.|: rank correlation of the "
    "absolute maps; SSIM and HOG compare their structure and edges. <b>Deletion</b> (lower is "
    "better) and <b>insertion</b> (higher is better): area under the target's probability as the "
    "most relevant pixels are removed, or put back onto a blank image. <b>ROAD</b> MoRF (lower) / "
    "LeRF (higher): mean probability as the most or least relevant pixels are imputed from their "
    "neighbours, which hides the shape of what was removed. <b>Compared model</b> (with "
    "--compare-model, e.g. one trained on shuffled labels): the same similarity to that model's map; a "
    "map that explains what the model learnt differs there too.</p>"
)


def _value(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<span class='note'>n/a</span>"
    if isinstance(value, (int, float)):
        return f"{value:.2f}"  # two decimals: the differences that matter here are tenths
    return report.render_value(value, 2)


def _cell(table: Any, method: str, metric: str | None, image: int) -> Any:
    """``table[method][metric][image]`` (or ``table[method][image]`` without a metric), the last
    step's value when it is a list of steps; None where the shape is not as expected."""
    entry = table.get(method) if isinstance(table, dict) else None
    if metric is not None:
        entry = entry.get(metric) if isinstance(entry, dict) else None
    if not isinstance(entry, list) or image >= len(entry):
        return None
    value = entry[image]
    return value[-1] if isinstance(value, list) and value else value


COLUMNS = (  # (heading, summary key, metric)
    ("Randomized: Spearman |.|", "fully_randomized", "spearman_abs"),
    ("Randomized: SSIM", "fully_randomized", "ssim"),
    ("Randomized: HOG", "fully_randomized", "hog"),
    ("Other class: Spearman |.|", "random_logit", "spearman_abs"),
    ("Other class: SSIM", "random_logit", "ssim"),
    ("Compared model: Spearman |.|", "similarity_compare_model", "spearman_abs"),
    ("Deletion AUC", "deletion_auc", None),
    ("Insertion AUC", "insertion_auc", None),
    ("ROAD MoRF", "road_morf_mean", None),
    ("ROAD LeRF", "road_lerf_mean", None),
)


def report_view(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """Per-image rows, then the "can I trust this map?" table of each image."""
    document = page.document
    html, used = report.per_image_table(document, PER_IMAGE)
    images = document.get("images")
    methods = document.get("methods")
    if not (isinstance(images, list) and isinstance(methods, list)):
        return html, used
    present = [column for column in COLUMNS if isinstance(document.get(column[1]), dict)]
    head = "<tr><th>method</th>" + "".join(f"<th>{report.esc(c[0])}</th>" for c in present) + "</tr>"
    zero_table = document.get("all_zero")
    zero: dict[str, Any] = zero_table if isinstance(zero_table, dict) else {}
    step_list = document.get("steps")
    steps: list[Any] = step_list if isinstance(step_list, list) else []
    for i, image in enumerate(report.text_labels(images)):  # HTML already
        rows = ""
        for method in (m for m in methods if isinstance(m, str)):
            found = zero.get(method)
            zeros: list[Any] = found if isinstance(found, list) else []
            gone = i < len(zeros) and isinstance(zeros[i], list) and len(steps) in zeros[i]
            cells = "".join(
                "<td><span class='note'>all zero</span></td>"
                if gone and key == "fully_randomized"
                else f"<td>{_value(_cell(document.get(key), method, metric, i))}</td>"
                for _, key, metric in present
            )
            rows += f"<tr><th>{report.esc(method)}</th>{cells}</tr>"
        html += f'<h3>Can I trust this map? {image}</h3><table class="records">{head}{rows}</table>'
    used.update(key for _, key, _ in present)
    used.add("all_zero")
    return html + EXPLAINED, used
