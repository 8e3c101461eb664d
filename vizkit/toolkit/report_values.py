"""Rendering JSON values of a ``result.json`` as HTML for people: the report's generic rendering
(:mod:`vizkit.app.report`), public to report views through :mod:`vizkit.toolkit.report`.

Every analysis writes its summary as plain JSON: numbers, strings, lists and nested dicts. A
report that dumps that JSON is unreadable, so each shape gets the rendering a person would draw
by hand: numbers rounded to four significant digits, lists of labels as chips, lists of records
as tables, dicts whose values share their keys as one matrix table, other dicts as nested
key/value tables, and long arrays summarised by their length, first values and range. Every
string goes through :func:`html.escape`, so a hostile label cannot inject markup.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, TypeGuard

INLINE_NUMBERS = 12  # numeric lists up to this long are shown whole
INLINE_LABELS = 24  # label lists up to this long are shown whole, longer ones fold away
FIRST_FEW = 6  # values shown of a long array
MAX_LABELS = 500  # labels listed when a long list is unfolded (the rest are counted)
MAX_ROWS = 60  # rows of a records table or matrix before the rest folds away
MAX_COLUMNS = 16  # columns of a matrix before it is summarised instead
MAX_DEPTH = 6  # nesting shown as tables; deeper values are summarised
EXTRA_DIGITS = 5  # digits added at most so that a fraction rounded to a whole number shows it is not one

Scalar = (int, float, str, bool, type(None))


def esc(text: Any) -> str:
    """``text`` as HTML text or attribute value (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def format_number(value: float | int) -> str:
    """A number as a person reads it: integers whole, floats to four significant digits without
    an exponent between 1e-4 and 1e6, scientific notation outside, NaN and infinities by name.
    A fraction that four digits would round to a whole number keeps the digits that show it is
    not one (0.99996, not 1; 2.00003, not 2).

    Args:
        value: the number (a bool reads yes / no).
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 100_000 else str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude < 1e-4 or magnitude >= 1e6:
        return f"{value:.3e}"
    digits = max(0, 3 - math.floor(math.log10(magnitude)))
    text = _fixed(value, digits)
    if digits and "." not in text and float(text) != value:
        # rounding made a whole number of a fraction (0.99996 -> "1", 99.99996 -> "100"): a
        # probability or accuracy that is not 1 must not read as certain, so keep the digits
        # that show it is not, up to a few more (float noise like 1 - 1e-16 stays "1")
        for more in range(digits + 1, digits + 1 + EXTRA_DIGITS):
            longer = _fixed(value, more)
            if "." in longer:
                return longer
    return text


def _fixed(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether ``value`` is an int or a float, not a bool (JSON's true is no number to show).

    Args:
        value: any JSON value.
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_path_like(text: str) -> bool:
    """A file path (shown by its last part, the whole path on hover): has a slash and no spaces,
    and reads as a path: rooted (``/``, ``./``, ``../``, ``~``, ``C:``), two or more slashes, or
    a file name with an extension after the slash. A label such as "AC/DC" or "n/a" is shown
    whole (abbreviating it to "DC" would misname a class; showing a path whole misleads no one)."""
    if not ("/" in text or "\\" in text) or any(c.isspace() for c in text) or len(text) < 2:
        return False
    unified = text.replace("\\", "/")
    rooted = unified.startswith(("/", "./", "../", "~")) or (len(unified) > 2 and unified[1:3] == ":/")
    last = unified.rstrip("/").rsplit("/", 1)[-1]
    has_extension = "." in last.strip(".") and not last.endswith(".")
    return rooted or unified.rstrip("/").count("/") >= 2 or has_extension


def render_text(text: str) -> str:
    """A string as HTML: escaped, a file path shown by its last part (the whole path on hover).

    Args:
        text: the string.
    """
    if is_path_like(text):
        name = text.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or text
        return f'<span class="path" title="{esc(text)}">{esc(name)}</span>'
    return esc(text)


def text_labels(texts: Sequence[str]) -> list[str]:
    """Strings as :func:`render_text` shows them, a path by its file name (the whole path on
    hover), except that paths sharing a file name show as many of their last folders as tell
    them apart (``a/photo.jpg``, ``b/photo.jpg``), so rows or chips of images are never alike.

    Args:
        texts: the strings, e.g. a summary's image paths.
    """
    parts = [text.replace("\\", "/").rstrip("/").split("/") for text in texts]
    depth = [1] * len(texts)
    for _ in range(max((len(p) for p in parts), default=1)):
        shown = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clashes = {name for name, n in Counter(shown).items() if n > 1}
        if not clashes:
            break
        depth = [d + 1 if name in clashes and d < len(p) else d for p, d, name in zip(parts, depth, shown)]
    labels = []
    for text, p, d in zip(texts, parts, depth):
        if d == 1 or not is_path_like(text):
            labels.append(render_text(text))
        else:
            labels.append(f'<span class="path" title="{esc(text)}">{esc("/".join(p[-d:]))}</span>')
    return labels


def render_scalar(value: Any) -> str:
    """One value as HTML: None as a dash, a bool as yes/no, a number formatted, anything else
    as text (a path shortened, see :func:`render_text`)."""
    if value is None:
        return '<span class="none">—</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if is_number(value):
        return f'<span class="num">{esc(format_number(value))}</span>'
    return render_text(str(value))


def _numbers(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if is_number(v) and math.isfinite(float(v))]


def summarise_numbers(values: Sequence[Any]) -> str:
    """A long numeric list: its length, first few values and min / mean / max."""
    first = ", ".join(format_number(v) if is_number(v) else "—" for v in values[:FIRST_FEW])
    finite = _numbers(values)
    stats = ""
    if finite:
        stats = (
            f' <span class="stats">min {esc(format_number(min(finite)))}, '
            f"mean {esc(format_number(sum(finite) / len(finite)))}, max {esc(format_number(max(finite)))}</span>"
        )
    return f'<span class="array"><b>{len(values)} values</b>: {esc(first)}, …{stats}</span>'


def render_chips(items: Iterable[Any]) -> str:
    """``items`` as a row of HTML chips, each rendered as a scalar."""
    return '<ul class="chips">' + "".join(f"<li>{render_scalar(item)}</li>" for item in items) + "</ul>"


def render_labels(values: Sequence[Any]) -> str:
    """A list of strings (class names, image paths) as chips (paths sharing a file name told
    apart, see :func:`text_labels`); a long one folds away behind its count and first few."""
    shown = list(values[:MAX_LABELS])
    strings = [i for i, v in enumerate(shown) if isinstance(v, str)]
    items = [render_scalar(v) for v in shown]
    for i, label in zip(strings, text_labels([shown[i] for i in strings])):
        items[i] = label
    chips = '<ul class="chips">' + "".join(f"<li>{item}</li>" for item in items) + "</ul>"
    if len(values) <= INLINE_LABELS:
        return chips
    head = ", ".join(items[:FIRST_FEW])
    more = f'<p class="more">… and {len(values) - len(shown)} more</p>' if len(values) > len(shown) else ""
    return f"<details><summary><b>{len(values)} items</b>: {head}, …</summary>{chips}{more}</details>"


def _is_matrix(values: Sequence[Any]) -> bool:
    return all(isinstance(row, list) and all(is_number(v) or v is None for v in row) for row in values)


def render_matrix(values: Sequence[Sequence[Any]]) -> str:
    """A list of numeric rows: a table (row/column index headers) when small, else its shape."""
    width = max((len(row) for row in values), default=0)
    if len(values) > MAX_ROWS or width > MAX_COLUMNS:
        flat = [v for row in values for v in row]
        return f'<span class="array"><b>{len(values)}×{width} array</b> {summarise_numbers(flat)}</span>'
    head = "<tr><th></th>" + "".join(f'<th class="idx">{j}</th>' for j in range(width)) + "</tr>"
    body = "".join(
        f'<tr><th class="idx">{i}</th>' + "".join(f"<td>{render_scalar(v)}</td>" for v in row) + "</tr>"
        for i, row in enumerate(values)
    )
    return f'<table class="matrix">{head}{body}</table>'


def _is_ranking(values: Sequence[Any]) -> bool:
    return all(
        isinstance(v, dict) and "label" in v and any(is_number(v.get(k)) for k in ("probability", "score"))
        for v in values
    )


def render_ranking(values: Sequence[dict]) -> str:
    """Top-k predictions ``[{index, label, probability}, ...]`` as a compact ordered list."""
    items = []
    for v in values:
        score = v.get("probability", v.get("score"))
        items.append(f"<li>{render_text(str(v['label']))} {render_scalar(score)}</li>")
    return '<ol class="ranking">' + "".join(items) + "</ol>"


def render_records(values: Sequence[dict], depth: int) -> str:
    """A list of dicts as one table, a row per dict, a column per key (in first-seen order)."""
    columns: list[str] = []
    for row in values:
        columns.extend(k for k in row if k not in columns)
    shown = values[:MAX_ROWS]
    head = "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
    body = "".join(
        "<tr>" + "".join(f"<td>{render_value(row.get(c), depth + 1)}</td>" for c in columns) + "</tr>" for row in shown
    )
    more = f'<p class="more">… and {len(values) - len(shown)} more rows</p>' if len(values) > len(shown) else ""
    return f'<table class="records">{head}{body}</table>{more}'


def render_list(values: list[Any], depth: int) -> str:
    """A list as HTML in the form that reads best for its contents: numbers inline or
    summarised, labels as chips, a matrix, a ranking or records as a table, else numbered
    items; nesting beyond ``depth`` folds away."""
    if not values:
        return '<span class="none">(empty)</span>'
    if all(is_number(v) or v is None for v in values):
        if len(values) <= INLINE_NUMBERS:
            return (
                '<span class="num">'
                + esc(", ".join(format_number(v) if v is not None else "—" for v in values))
                + "</span>"
            )
        return summarise_numbers(values)
    if all(isinstance(v, (str, bool)) or v is None for v in values):
        return render_labels(values)
    if _is_matrix(values):
        return render_matrix(values)
    if all(isinstance(v, dict) for v in values):
        if _is_ranking(values):
            return render_ranking(values)
        if depth < MAX_DEPTH:
            return render_records(values, depth)
    if depth >= MAX_DEPTH:
        return f'<span class="array"><b>list of {len(values)}</b></span>'
    shown = values[:MAX_ROWS]
    more = f"<li class='more'>… and {len(values) - len(shown)} more</li>" if len(values) > len(shown) else ""
    return '<ol class="items">' + "".join(f"<li>{render_value(v, depth + 1)}</li>" for v in shown) + more + "</ol>"


def _matrix_columns(mapping: dict[str, Any]) -> list[str] | None:
    """The shared inner keys when every value of ``mapping`` is a dict of scalars (a matrix)."""
    if len(mapping) < 2 or not all(isinstance(v, dict) and v for v in mapping.values()):
        return None
    columns: list[str] = []
    for inner in mapping.values():
        if not all(isinstance(x, Scalar) for x in inner.values()):
            return None
        columns.extend(k for k in inner if k not in columns)
    if len(columns) > MAX_COLUMNS:
        return None
    return columns


def render_dict(mapping: dict[str, Any], depth: int = 0) -> str:
    """A dict as a matrix table when its values are dicts of scalars sharing keys, else as a
    key/value table whose values render recursively."""
    if not mapping:
        return '<span class="none">(empty)</span>'
    if depth >= MAX_DEPTH:
        return f'<span class="array"><b>{len(mapping)} entries</b>: {esc(", ".join(map(str, list(mapping)[:FIRST_FEW])))}</span>'
    columns = _matrix_columns(mapping)
    if columns is not None:
        head = "<tr><th></th>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
        body = "".join(
            f"<tr><th>{esc(key)}</th>" + "".join(f"<td>{render_scalar(inner.get(c))}</td>" for c in columns) + "</tr>"
            for key, inner in mapping.items()
        )
        return f'<table class="matrix">{head}{body}</table>'
    return key_value_table(mapping, depth)


def key_value_table(mapping: dict[str, Any], depth: int = 0, css: str = "kv") -> str:
    """A two-column table: each key beside its rendered value.

    Args:
        mapping: the keys and values to show.
        depth: how deep in nested tables this one is (deeper values are summarised).
        css: the table's class.
    """
    rows = "".join(
        f"<tr><th>{esc(key)}</th><td>{render_value(value, depth + 1)}</td></tr>" for key, value in mapping.items()
    )
    return f'<table class="{esc(css)}">{rows}</table>'


def render_value(value: Any, depth: int = 0) -> str:
    """Any JSON value as readable HTML (see the module docstring for the rules).

    Args:
        value: the value.
        depth: how deep in nested tables it is shown (0: at the top; deeper values are summarised).
    """
    if isinstance(value, dict):
        return render_dict({str(k): v for k, v in value.items()}, depth)
    if isinstance(value, (list, tuple)):
        return render_list(list(value), depth)
    return render_scalar(value)
