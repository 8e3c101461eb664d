"""``vizkit.toolkit.report``: HTML helpers for report views (:class:`vizkit.ReportView`).

A view returns HTML for its result's section in ``vizkit report``; these are the pieces the
built-in views are made of, public so that a plugin's view looks and behaves like theirs:

* text and numbers: :func:`esc` (every string that goes into the page), :func:`format_number`
  (four significant digits, the report's rule), :func:`is_number`, :func:`mean_std`
  (``mean ± std`` rounded to the std's precision), :func:`url` (a relative link or picture source);
* values: :func:`render_value` (any JSON value as the generic rendering shows it: tables, chips,
  summarised arrays), :func:`key_value_table`, :func:`render_text` and :func:`text_labels`
  (file paths shortened to what tells them apart);
* tables: :func:`per_image_table` (a row per input image) and :func:`per_image_view` (a whole
  view of it), :func:`two_level_head` (grouped column headers), :func:`columns`, :func:`dig`,
  :func:`title`; :func:`fold` (a long table folded under its heading, as the report folds its
  own: the figures come first, long tables are a click away).

Every helper escapes what it puts in the page; HTML a view writes itself must use :func:`esc`.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

from vizkit.framework.report_view import ReportPage, ReportView

from .report_values import esc, format_number, is_number, key_value_table, render_text, render_value, text_labels

FOLD_ROWS = 12  # a table with more rows than this is folded (its heading stays visible)

__all__ = [
    "columns",
    "dig",
    "esc",
    "fold",
    "format_number",
    "is_number",
    "key_value_table",
    "mean_std",
    "per_image_table",
    "per_image_view",
    "render_text",
    "render_value",
    "text_labels",
    "title",
    "two_level_head",
    "url",
]


def url(*parts: str) -> str:
    """A relative URL of a file below the report, each character percent-encoded where needed
    and the whole escaped: ready for an ``href`` or ``src`` attribute.

    Args:
        *parts: the path's parts relative to the report's folder (empty and ``.`` parts left out),
            e.g. ``page.asset_path(name)`` or a result folder and a file name in it.
    """
    path = "/".join(p for p in parts if p and p != ".")
    return esc(quote(path))


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where a level is missing or not a dict (a view reading a
    result of another version must not fail on a missing key).

    Args:
        value: a JSON value, usually a summary's table.
        *keys: the keys to follow, outermost first.
    """
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def title(key: str) -> str:
    """A summary key as a heading: underscores as spaces (``left_eye``: ``left eye``).

    Args:
        key: the key.
    """
    return key.replace("_", " ")


def mean_std(mean: Any, std: Any, percent: bool = False) -> str:
    """``mean ± std`` as HTML, the mean rounded to the std's precision (two significant digits
    of the std), as a table of results is written; a dash when the mean is not a finite number,
    the mean alone (four significant digits) when the std is missing or not positive.

    Args:
        mean: the mean (any JSON value: a non-number shows as a dash).
        std: its standard deviation; None: no spread is claimed.
        percent: show both as percentages (accuracies).
    """
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


def columns(declared: Any, table: dict) -> list[str]:
    """A table's column names: the ``declared`` ones (a summary's list, e.g. its ``layers``),
    then any other key found in the table's inner dicts, in first-seen order.

    Args:
        declared: the names the summary lists (a list; anything else lists none).
        table: a dict of dicts: row -> column -> value.
    """
    found: list[str] = [str(name) for name in declared] if isinstance(declared, list) else []
    for inner in table.values():
        if isinstance(inner, dict):
            found.extend(str(key) for key in inner if str(key) not in found)
    return found


def two_level_head(before: list[str], groups: list[str], sub: tuple[str, str], after: tuple[str, ...] = ()) -> str:
    """A two-row table header: a two-column group (``sub`` under each of ``groups``) between
    single columns spanning both rows.

    Args:
        before: the single columns before the groups.
        groups: the groups' names (e.g. layers).
        sub: the two column names under each group (e.g. ``("accuracy", "C per fold")``).
        after: the single columns after the groups.
    """
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


def _image_names(document: dict[str, Any]) -> list[str] | None:
    images = document.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        return None
    return images


def per_image_table(document: dict[str, Any], keys: list[str]) -> tuple[str, set[str]]:
    """A table with one row per input image (the summary's ``images``) and a column per key of
    ``keys`` whose value is a list with one entry per image (a single image's value that is not
    a list counts too); the HTML and the keys shown (``images`` among them), or ``""`` and no
    keys when the summary has no image list or none of the keys fits.

    Args:
        document: the result's ``result.json``.
        keys: the per-image summary keys, in column order.
    """
    images = _image_names(document)
    if images is None:
        return "", set()
    n = len(images)
    shown = []
    for key in keys:
        value = document.get(key)
        if isinstance(value, list) and len(value) == n:
            shown.append((key, value))
        elif n == 1 and key in document:
            shown.append((key, [value]))
    if not shown:
        return "", set()
    head = "<tr><th>image</th>" + "".join(f"<th>{esc(title(key))}</th>" for key, _ in shown) + "</tr>"
    rows = "".join(
        f"<tr><th>{label}</th>" + "".join(f"<td>{render_value(values[i], 2)}</td>" for _, values in shown) + "</tr>"
        for i, label in enumerate(text_labels(images))
    )
    table = f'<table class="records">{head}{rows}</table>'
    html = fold(f"Per image <small>{n} images</small>", table) if n > FOLD_ROWS else f"<h3>Per image</h3>{table}"
    return html, {"images"} | {k for k, _ in shown}


def fold(heading: str, html: str, open: bool = False) -> str:
    """``html`` folded under ``heading`` (a ``<details>`` whose summary reads as an ``<h3>``): a
    long table or a block of settings a reader opens when they want it.

    Args:
        heading: the heading's HTML (escape any value in it: :func:`esc`).
        html: what folds away.
        open: shown unfolded at first (a short block: the reader can still fold it).
    """
    return f'<details class="fold"{" open" if open else ""}><summary><h3>{heading}</h3></summary>{html}</details>'


def per_image_view(
    keys: list[str], *, paper: str = "", paper_order: float | None = None, key_figure: str = ""
) -> ReportView:
    """A whole view: the per-image table of ``keys`` (see :func:`per_image_table`), e.g.
    ``Analysis(..., view=vizkit.toolkit.report.per_image_view(["target_name", "probability"]))``.

    Args:
        keys: the per-image summary keys, in column order.
        paper: the view's :attr:`~vizkit.ReportView.paper` (what of the paper it reproduces).
        paper_order: its :attr:`~vizkit.ReportView.paper_order` (where its sections go).
        key_figure: its :attr:`~vizkit.ReportView.key_figure` (the figure on the front page).
    """

    def render(page: ReportPage) -> tuple[str, set[str]]:
        return per_image_table(page.document, keys)

    return ReportView(render, paper=paper, paper_order=paper_order, key_figure=key_figure)
