"""``vizkit report DIR``: one static HTML page over every result saved below a folder.

The page (``DIR/index.html``) works opened from disk: style and script are inline, nothing is
fetched from the network, figures are referenced by relative path. It has a table of contents
linking to a section per result (every folder below DIR holding a ``result.json``); each section
shows the analysis, model (spec, shortened weights hash), parameters, inputs and timing, the
summary rendered for people (tables, rounded numbers, label lists, summarised arrays; never raw
JSON), and the figures scaled to fit, a click enlarging them.

An analysis shows its results its own way through its report view (``Analysis(view=...)``, a
:class:`vizkit.ReportView`: the tables a person would draw, a unit browser whose pictures it draws
into ``DIR/report_assets/``), found through the registered analyses of the App; the summary keys
the view did not show, and every key of an analysis without a view (or whose plugin is missing
or disabled), get the generic rendering of :mod:`vizkit.toolkit.report_values`. A result the
report cannot read or a view that fails on unexpected data is reported in its section, never a
crash. The core names no analysis: every view lives in its analysis's plugin.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from vizkit.errors import UsageError
from vizkit.framework.registry import App, get_app
from vizkit.framework.report_view import ASSETS, MANIFEST, ReportPage, ReportView
from vizkit.framework.results import RESULT_FILE, write_atomic
from vizkit.toolkit.report import url as _url
from vizkit.toolkit.report_values import esc, format_number, is_number, key_value_table, render_text, render_value
from vizkit.version import __version__

from .report_static import CSS, CSS_LAST, JS

REPORT_FILE = "index.html"
_RESERVED = {"analysis", "vizkit_version", "model", "params", "inputs", "files", "seconds"}
HASH_SHOWN = 12  # hex digits of the weights' sha256 shown (the whole hash on hover)
WIDE_RATIO = 2.2  # a figure this many times wider than high spans the whole row (a strip of panels)


def find_results(folder: Path) -> list[Path]:
    """Every ``result.json`` below ``folder`` (itself included), in sorted path order, skipping
    the report's own asset folder."""
    found = []
    for path in sorted(folder.rglob(RESULT_FILE)):
        relative = path.relative_to(folder).parts
        if relative and relative[0] == ASSETS:
            continue
        if path.is_file():
            found.append(path)
    return found


def _slug(relative: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", relative.lower()).strip("-") or "result"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def prune_assets(root: Path, keep: set[str]) -> None:
    """Remove the asset folders of results no longer in the report (only folders holding the
    report's own manifest, :data:`~vizkit.framework.report_view.MANIFEST`, are touched)."""
    assets = root / ASSETS
    if not assets.is_dir():
        return
    for folder in assets.iterdir():
        if folder.is_dir() and folder.name not in keep and (folder / MANIFEST).is_file():
            shutil.rmtree(folder)


# ----------------------------------------------------------------------------------- the blocks
def _model_block(model: Any) -> str:
    if not isinstance(model, dict):
        return render_value(model)
    shown: dict[str, Any] = {}
    for key, value in model.items():
        if key == "weights_sha256" and isinstance(value, str) and len(value) > HASH_SHOWN:
            continue
        shown[key] = value
    rows = key_value_table(shown, 1)
    digest = model.get("weights_sha256")
    if isinstance(digest, str) and len(digest) > HASH_SHOWN:
        rows = rows.replace(
            "</table>",
            f'<tr><th>weights sha256</th><td><code title="{esc(digest)}">{esc(digest[:HASH_SHOWN])}…</code></td></tr></table>',
        )
    return rows


def _timing_block(document: dict[str, Any]) -> str:
    timing: dict[str, Any] = {}
    if "seconds" in document:
        timing["total"] = document["seconds"]
    for key, value in document.items():
        if key.startswith("seconds_"):
            timing[key[len("seconds_") :].replace("_", " ")] = value
    if not timing:
        return '<span class="none">—</span>'
    return _seconds_table(timing)


def _seconds_table(timing: dict[str, Any]) -> str:
    """Durations in seconds as a key/value table (nested per-part durations as nested tables)."""
    rows = []
    for key, value in timing.items():
        if is_number(value):
            cell = f'<span class="num">{esc(format_number(value))} s</span>'
        elif isinstance(value, dict) and value:
            cell = _seconds_table(value)
        else:
            cell = render_value(value, 2)
        rows.append(f"<tr><th>{esc(key)}</th><td>{cell}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def _image_size(path: Path) -> tuple[int, int] | None:
    """A picture's (width, height) read from its header, None when it is not a readable image."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None


def _figures(document: dict[str, Any], here: Path, relative: str) -> str:
    files = document.get("files")
    names = files.get("figures") if isinstance(files, dict) else None
    if not isinstance(names, list) or not names:
        return ""
    shown, missing = [], []
    for name in names:
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            continue
        if not (here / name).is_file():
            missing.append(name)
            continue
        url = _url(relative, name)
        size = _image_size(here / name)
        wide = size is not None and size[0] > WIDE_RATIO * size[1]
        dimensions = f' width="{size[0]}" height="{size[1]}"' if size else ""
        shown.append(
            f'<figure{" class=wide" if wide else ""}><a class="zoom" href="{url}" title="{esc(name)}">'
            f'<img src="{url}" alt="{esc(name)}"{dimensions}></a><figcaption>{esc(name)}</figcaption></figure>'
        )
    note = f'<p class="note">Missing figure files: {esc(", ".join(missing))}</p>' if missing else ""
    if not shown:
        return note
    return f'<h3>Figures <small>click to enlarge</small></h3><div class="figures">{"".join(shown)}</div>{note}'


def _raw_links(document: dict[str, Any], here: Path, relative: str) -> str:
    links = [f'<a href="{_url(relative, RESULT_FILE)}">{RESULT_FILE}</a>']
    files = document.get("files")
    arrays = files.get("arrays") if isinstance(files, dict) else None
    if isinstance(arrays, str) and "/" not in arrays and (here / arrays).is_file():
        links.append(f'<a href="{_url(relative, arrays)}">{esc(arrays)}</a>')
    return f'<p class="raw">raw data: {" · ".join(links)}</p>'


def _lede(document: dict[str, Any]) -> str:
    bits = []
    model = document.get("model")
    if isinstance(model, dict) and model.get("spec"):
        bits.append(f"model <b>{esc(model['spec'])}</b>")
    if isinstance(document.get("layer"), str):
        bits.append(f"layer <b>{esc(document['layer'])}</b>")
    elif isinstance(document.get("layers"), list) and all(isinstance(x, str) for x in document["layers"]):
        bits.append("layers <b>" + esc(", ".join(document["layers"])) + "</b>")
    images = document.get("images")
    inputs = document.get("inputs")
    if isinstance(images, list):
        bits.append(f"{len(images)} image{'s' if len(images) != 1 else ''}")
    elif isinstance(inputs, dict) and isinstance(inputs.get("images"), list):
        bits.append(f"{len(inputs['images'])} image(s)")
    if is_number(document.get("seconds")):
        bits.append(f"{format_number(document['seconds'])} s")
    if document.get("vizkit_version"):
        bits.append(f"vizkit {esc(document['vizkit_version'])}")
    return f'<p class="lede">{" · ".join(bits)}</p>' if bits else ""


def render_result(document: dict[str, Any], here: Path, root: Path, slug: str, view: ReportView | None = None) -> str:
    """One result's section (without its ``<section>`` wrapper).

    Args:
        document: the result's ``result.json``.
        here: the result's folder.
        root: the report's folder.
        slug: the result's unique name in the report.
        view: its analysis's report view; None: the generic rendering only.
    """
    relative = here.relative_to(root).as_posix()
    relative = "" if relative == "." else relative
    analysis = str(document.get("analysis") or "unknown analysis")
    parts = [f"<h2>{esc(analysis)} <small>in {esc(relative or '.')}/</small></h2>", _lede(document)]
    meta = [
        f"<div><h3>Model</h3>{_model_block(document.get('model'))}</div>",
        f"<div><h3>Parameters</h3>{render_value(document.get('params') or {}, 0)}</div>",
        f"<div><h3>Inputs</h3>{render_value(document.get('inputs') or {}, 0)}</div>",
        f"<div><h3>Timing</h3>{_timing_block(document)}</div>",
    ]
    parts.append(f'<div class="meta">{"".join(meta)}</div>')
    used: set[str] = set()
    if view is not None:
        try:
            html, used = view.render(ReportPage(document, here, root, slug))
            parts.append(html)
        except Exception as error:  # a view meeting data it does not expect: fall back, say why
            used = set()
            parts.append(
                f'<p class="error">The {esc(analysis)} view could not show this result '
                f"({esc(type(error).__name__)}: {esc(error)}); its values follow as they are.</p>"
            )
    rest = {
        key: value
        for key, value in document.items()
        if key not in _RESERVED and key not in used and not key.startswith("seconds_")
    }
    if rest:
        parts.append(f"<h3>Summary</h3>{key_value_table(rest, 0)}")
    parts.append(_figures(document, here, relative))
    parts.append(_raw_links(document, here, relative))
    return "".join(parts)


def _toc_entry(slug: str, analysis: str, relative: str, note: str) -> str:
    # the whole relative path: results nested in different folders often end alike (a/run, b/run)
    return (
        f'<li><a href="#res-{slug}">{esc(analysis)}</a><small class="where">{esc(relative)}'
        f"{(' · ' + esc(note)) if note else ''}</small></li>"
    )


def _view(document: dict[str, Any], app: App) -> ReportView | None:
    """The report view of the result's analysis: the registered analysis's own, if any."""
    spec = app.analyses.get(str(document.get("analysis") or ""))
    return spec.view if spec is not None else None


def _unreadable(slug: str, relative: str, error: BaseException) -> str:
    return (
        f'<section class="result" id="res-{slug}"><h2>unreadable result <small>{esc(relative)}</small></h2>'
        f'<p class="error">{esc(RESULT_FILE)} could not be read: {esc(error)}</p></section>'
    )


def _toc_note(document: dict[str, Any]) -> str:
    """The model spec and duration shown under a result's entry in the table of contents."""
    seconds = document.get("seconds")
    model = document.get("model")
    return " · ".join(
        x
        for x in (
            str(model.get("spec")) if isinstance(model, dict) and model.get("spec") else "",
            f"{format_number(seconds)} s" if is_number(seconds) else "",
        )
        if x
    )


def build_page(folder: Path, app: App) -> tuple[str, int]:
    """The report's HTML over every result below ``folder`` and the number of results shown.

    Args:
        folder: the report's folder.
        app: the registry whose analyses' views show their results.
    """
    sections, toc = [], []
    taken: set[str] = set()
    views: list[ReportView] = []  # those with a result on the page, in order: their css and js go in once
    count = 0
    for result_file in find_results(folder):
        here = result_file.parent
        relative = here.relative_to(folder).as_posix()
        slug = _slug(relative if relative != "." else "result", taken)
        try:
            document = json.loads(result_file.read_text(encoding="utf-8"))
            if not isinstance(document, dict):
                raise ValueError("it is not a JSON object")
        except (OSError, ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
            toc.append(_toc_entry(slug, "unreadable result", relative, ""))
            sections.append(_unreadable(slug, relative, error))
            continue
        count += 1
        view = _view(document, app)
        if view is not None and all(view is not seen for seen in views):
            views.append(view)
        toc.append(_toc_entry(slug, str(document.get("analysis") or "unknown analysis"), relative, _toc_note(document)))
        sections.append(
            f'<section class="result" id="res-{slug}">{render_result(document, here, folder, slug, view)}</section>'
        )
    prune_assets(folder, taken)
    return _page(folder, count, toc, sections, views), count


def _page(folder: Path, count: int, toc: list[str], sections: list[str], views: list[ReportView]) -> str:
    """The whole page around the results' sections: head, style, table of contents, script."""
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "".join(sections) or (
        f'<section class="result"><p>No results found below {render_text(str(folder))}: run '
        "<code>vizkit run ANALYSIS ... --out DIR/NAME</code>, then <code>vizkit report DIR</code>.</p></section>"
    )
    contents = f'<nav class="toc"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>' if toc else ""
    style = CSS + "".join(view.css for view in views) + CSS_LAST
    script = JS + "".join(view.js for view in views)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>vizkit report: {esc(folder.resolve().name)}</title><style>{style}</style></head><body>"
        f'<header class="top"><h1>vizkit report</h1><p>{count} result{"s" if count != 1 else ""} below '
        f"{esc(folder.resolve())} · generated {esc(generated)} by vizkit {esc(__version__)}</p></header>"
        f'<div class="layout">{contents}<main>{body}</main></div>'
        f"<script>{script}</script></body></html>\n"
    )


def write_report(folder: Path, app: App | None = None) -> tuple[Path, int]:
    """Write ``folder/index.html`` over every result below ``folder``; return its path and the
    number of results shown.

    Args:
        folder: the folder holding the results (at any depth); the page is written there.
        app: the registry whose analyses' report views show their results; None: the installed
            plugins' (:func:`vizkit.framework.get_app`).

    Raises:
        UsageError: ``folder`` is not an existing folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"report folder not found: {folder} (give a folder holding results)")
    page, count = build_page(folder, app or get_app())
    path = folder / REPORT_FILE
    write_atomic(path, page.encode("utf-8"))
    return path, count
