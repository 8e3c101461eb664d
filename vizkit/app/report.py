"""``vizkit report DIR``: one static HTML page over every result saved below a folder.

The page (``DIR/index.html``) works opened from disk: style and script are inline, nothing is
fetched from the network, figures are referenced by relative path. It leads with pictures, as
Microscope and NetDissect do: a front page with one card per result (every folder below DIR
holding a ``result.json``) showing its key figure and naming the analysis, layer and the paper's
figure it reproduces, then a section per result in the paper's order (Zeiler & Fergus: deconvnet
Fig. 1, top9 Fig. 2, ... probes Table 7; analyses beyond the paper follow). Each section shows
its figures first (a click enlarges them), then the analysis's own view, then the rest of the
summary rendered for people (tables, rounded numbers, label lists, summarised arrays; never raw
JSON), with long tables and the model, parameters, inputs and timing folded (``<details>``). The
page reads at 1400 px and down to a 420 px phone without scrolling sideways.

An analysis shows its results its own way through its report view (``Analysis(view=...)``, a
:class:`vizkit.ReportView`: the tables a person would draw, a unit browser whose pictures it draws
into ``DIR/report_assets/``; its place in the paper and its key figure), found through the
registered analyses of the App; the summary keys the view did not show, and every key of an
analysis without a view (or whose plugin is missing or disabled), get the generic rendering of
:mod:`vizkit.toolkit.report_values`. A result the report cannot read or a view that fails on
unexpected data is reported in its section, never a crash. The core names no analysis: every
view lives in its analysis's plugin.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vizkit.errors import UsageError
from vizkit.framework.registry import App, get_app
from vizkit.framework.report_view import ASSETS, MANIFEST, ReportPage, ReportView
from vizkit.framework.results import RESULT_FILE, write_atomic
from vizkit.toolkit.report import fold
from vizkit.toolkit.report import url as _url
from vizkit.toolkit.report_values import esc, format_number, is_number, key_value_table, render_text, render_value
from vizkit.version import __version__

from .report_static import CSS, CSS_LAST, JS

REPORT_FILE = "index.html"
_RESERVED = {"analysis", "vizkit_version", "model", "params", "inputs", "files", "seconds"}
HASH_SHOWN = 12  # hex digits of the weights' sha256 shown (the whole hash on hover)
WIDE_RATIO = 2.2  # a figure this many times wider than high spans the whole row (a strip of panels)
SUMMARY_OPEN_ROWS = 12  # a generic summary of at most this many table rows shows unfolded


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


def figure_names(document: dict[str, Any], here: Path) -> tuple[list[str], list[str]]:
    """The result's figures that are files beside its ``result.json`` (in the order it lists
    them) and those it lists that are missing; names that are not plain file names are left out."""
    files = document.get("files")
    names = files.get("figures") if isinstance(files, dict) else None
    if not isinstance(names, list):
        return [], []
    shown: list[str] = []
    missing: list[str] = []
    for name in names:
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            continue
        (shown if (here / name).is_file() else missing).append(name)
    return shown, missing


def key_figure(names: list[str], pattern: str = "") -> str | None:
    """The figure that stands for a result: the first of ``names`` matching ``pattern`` (a file
    name with or without ``.png``, or a shell pattern: :attr:`vizkit.ReportView.key_figure`),
    else the first figure; None when there is none.

    Args:
        names: the result's figure file names, in its order.
        pattern: the view's key figure; empty: the first figure.
    """
    if pattern:
        for name in names:
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".png"):
                return name
    return names[0] if names else None


def _figure(relative: str, here: Path, name: str) -> str:
    url = _url(relative, name)
    size = _image_size(here / name)
    wide = size is not None and size[0] > WIDE_RATIO * size[1]
    dimensions = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return (
        f'<figure{" class=wide" if wide else ""}><a class="zoom" href="{url}" title="{esc(name)}">'
        f'<img src="{url}" alt="{esc(name)}"{dimensions}></a><figcaption>{esc(name)}</figcaption></figure>'
    )


def _figures(document: dict[str, Any], here: Path, relative: str, key: str | None) -> str:
    """The result's figures, its key figure first, each scaled to fit and enlarging on click."""
    names, missing = figure_names(document, here)
    if key in names:
        names = [key] + [name for name in names if name != key]
    note = f'<p class="note">Missing figure files: {esc(", ".join(missing))}</p>' if missing else ""
    if not names:
        return note
    return f'<div class="figures">{"".join(_figure(relative, here, name) for name in names)}</div>{note}'


def _raw_links(document: dict[str, Any], here: Path, relative: str) -> str:
    links = [f'<a href="{_url(relative, RESULT_FILE)}">{RESULT_FILE}</a>']
    files = document.get("files")
    arrays = files.get("arrays") if isinstance(files, dict) else None
    if isinstance(arrays, str) and "/" not in arrays and (here / arrays).is_file():
        links.append(f'<a href="{_url(relative, arrays)}">{esc(arrays)}</a>')
    return f'<p class="raw">raw data: {" · ".join(links)} · <a href="#overview">↑ overview</a></p>'


def _layers(document: dict[str, Any]) -> str:
    """The layer or layers a result looked at, as text ("" when it names none)."""
    if isinstance(document.get("layer"), str):
        return str(document["layer"])
    layers = document.get("layers")
    if isinstance(layers, list) and layers and all(isinstance(x, str) for x in layers):
        return ", ".join(layers)
    return ""


def _lede(document: dict[str, Any], description: str) -> str:
    bits = []
    model = document.get("model")
    if isinstance(model, dict) and model.get("spec"):
        bits.append(f"model <b>{esc(model['spec'])}</b>")
    layers = _layers(document)
    if layers:
        bits.append(f"layer{'s' if ',' in layers else ''} <b>{esc(layers)}</b>")
    images = document.get("images")
    inputs = document.get("inputs")
    if isinstance(images, list):
        bits.append(f"{len(images)} image{'s' if len(images) != 1 else ''}")
    elif isinstance(inputs, dict) and isinstance(inputs.get("images"), list):
        bits.append(f"{len(inputs['images'])} image(s)")
    if is_number(document.get("seconds")):
        bits.append(f"{format_number(document['seconds'])} s")
    lines = f'<p class="what">{esc(description)}</p>' if description else ""
    return lines + (f'<p class="lede">{" · ".join(bits)}</p>' if bits else "")


def _meta(document: dict[str, Any]) -> str:
    """Model, parameters, inputs and timing, folded: what a reader opens to check how a result was made."""
    version = document.get("vizkit_version")
    blocks = [
        f"<div><h4>Model</h4>{_model_block(document.get('model'))}</div>",
        f"<div><h4>Parameters</h4>{render_value(document.get('params') or {}, 0)}</div>",
        f"<div><h4>Inputs</h4>{render_value(document.get('inputs') or {}, 0)}</div>",
        f"<div><h4>Timing</h4>{_timing_block(document)}</div>",
    ]
    made = f" <small>vizkit {esc(version)}</small>" if version else ""
    return fold(f"Model, parameters, inputs, timing{made}", f'<div class="meta">{"".join(blocks)}</div>')


def _heading(analysis: str, paper: str, relative: str) -> str:
    badge = f' <span class="paper">{esc(paper)}</span>' if paper else ""
    return f"<h2>{esc(analysis)}{badge} <small>in {esc(relative or '.')}/</small></h2>"


def render_result(
    document: dict[str, Any],
    here: Path,
    root: Path,
    slug: str,
    view: ReportView | None = None,
    description: str = "",
) -> str:
    """One result's section (without its ``<section>`` wrapper): heading and lede, figures (the
    key figure first), the view's HTML, the rest of the summary, then the model, parameters,
    inputs and timing folded away.

    Args:
        document: the result's ``result.json``.
        here: the result's folder.
        root: the report's folder.
        slug: the result's unique name in the report.
        view: its analysis's report view; None: the generic rendering only.
        description: the analysis's one-line description, shown under the heading.
    """
    relative = here.relative_to(root).as_posix()
    relative = "" if relative == "." else relative
    analysis = str(document.get("analysis") or "unknown analysis")
    names, _missing = figure_names(document, here)
    key = key_figure(names, view.key_figure if view is not None else "")
    parts = [
        _heading(analysis, view.paper if view is not None else "", relative),
        _lede(document, description),
        _figures(document, here, relative, key),
    ]
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
        table = key_value_table(rest, 0)
        short = table.count("<tr") <= SUMMARY_OPEN_ROWS
        title = "Summary" if short or not used else "More of the summary"
        parts.append(fold(f"{title} <small>{len(rest)} value{'s' if len(rest) != 1 else ''}</small>", table, short))
    parts.append(_meta(document))
    parts.append(_raw_links(document, here, relative))
    return "".join(parts)


@dataclass
class Entry:
    """One result found below the report's folder, as the page shows it.

    Attributes:
        slug: its unique name (its section's anchor is ``res-<slug>``; its assets' folder).
        relative: its folder relative to the report's (``""``: the report's own folder).
        here: its folder.
        document: its ``result.json``; None when it could not be read (``error`` says why).
        view: its analysis's report view, if any.
        description: its analysis's one-line description ("" when the analysis is unknown).
        error: why it could not be read.
    """

    slug: str
    relative: str
    here: Path
    document: dict[str, Any] | None = None
    view: ReportView | None = None
    description: str = ""
    error: BaseException | None = None

    @property
    def analysis(self) -> str:
        if self.document is None:
            return "unreadable result"
        return str(self.document.get("analysis") or "unknown analysis")

    @property
    def paper(self) -> str:
        return self.view.paper if self.view is not None else ""


def paper_order(entries: list[Entry]) -> list[Entry]:
    """The results in the order of their sections: the paper's (each view's
    :attr:`~vizkit.ReportView.paper_order`), then analyses beyond the paper by name, then
    unreadable results; within an analysis, by folder."""

    def key(entry: Entry) -> tuple[int, float, str, str]:
        if entry.document is None:
            return (2, 0.0, "", entry.relative)
        order = entry.view.paper_order if entry.view is not None else None
        if order is None or not is_number(order) or not math.isfinite(order):
            return (1, 0.0, entry.analysis, entry.relative)
        return (0, float(order), entry.analysis, entry.relative)

    return sorted(entries, key=key)


def _toc_entry(entry: Entry) -> str:
    # the whole relative path: results nested in different folders often end alike (a/run, b/run)
    note = _toc_note(entry.document) if entry.document is not None else ""
    paper = f' <span class="paper">{esc(entry.paper)}</span>' if entry.paper else ""
    return (
        f'<li><a href="#res-{entry.slug}">{esc(entry.analysis)}</a>{paper}<small class="where">'
        f"{esc(entry.relative or '.')}{(' · ' + esc(note)) if note else ''}</small></li>"
    )


def _card(entry: Entry) -> str:
    """The front page's card of a result: its key figure, the analysis, the paper's figure, the
    layer and the folder, linking to its section (a strip of panels gets a card twice as wide)."""
    picture = '<span class="thumb none">no figure</span>'
    wide = False
    detail = [entry.relative or "."]
    if entry.document is not None:
        names, _missing = figure_names(entry.document, entry.here)
        key = key_figure(names, entry.view.key_figure if entry.view is not None else "")
        if key is not None:
            size = _image_size(entry.here / key)
            dimensions = f' width="{size[0]}" height="{size[1]}"' if size else ""
            wide = size is not None and size[0] > WIDE_RATIO * size[1]
            picture = f'<span class="thumb"><img src="{_url(entry.relative, key)}" alt="{esc(key)}"{dimensions}></span>'
        layers = _layers(entry.document)
        if layers:
            detail.insert(0, layers)
    paper = f'<span class="paper">{esc(entry.paper)}</span>' if entry.paper else ""
    return (
        f'<li{" class=wide" if wide else ""}><a class="card" href="#res-{entry.slug}" title="{esc(entry.description)}">{picture}'
        f'<span class="card-title"><b>{esc(entry.analysis)}</b>{paper}</span>'
        f'<span class="card-sub">{esc(" · ".join(detail))}</span></a></li>'
    )


def _gallery(entries: list[Entry]) -> str:
    if not entries:
        return ""
    return (
        '<section class="overview" id="overview"><h2>Overview</h2><p class="lede">One card per result, in the '
        "order of the paper (Zeiler &amp; Fergus 2014), analyses beyond it after; a card leads to its section.</p>"
        f'<ol class="gallery">{"".join(_card(entry) for entry in entries)}</ol></section>'
    )


def _view(document: dict[str, Any], app: App) -> tuple[ReportView | None, str]:
    """The report view of the result's analysis (the registered analysis's own, if any) and the
    analysis's description."""
    spec = app.analyses.get(str(document.get("analysis") or ""))
    return (spec.view, spec.description) if spec is not None else (None, "")


def _unreadable(entry: Entry) -> str:
    return (
        f'<section class="result" id="res-{entry.slug}"><h2>unreadable result <small>{esc(entry.relative)}</small></h2>'
        f'<p class="error">{esc(RESULT_FILE)} could not be read: {esc(entry.error)}</p></section>'
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


def find_entries(folder: Path, app: App) -> list[Entry]:
    """Every result below ``folder`` read and matched with its analysis's view, in path order
    (slugs are given in that order, so a result keeps its asset folder when others are added
    elsewhere in the tree).

    Args:
        folder: the report's folder.
        app: the registry whose analyses' views show their results.
    """
    entries = []
    taken: set[str] = set()
    for result_file in find_results(folder):
        here = result_file.parent
        relative = here.relative_to(folder).as_posix()
        relative = "" if relative == "." else relative
        entry = Entry(_slug(relative or "result", taken), relative, here)
        try:
            document = json.loads(result_file.read_text(encoding="utf-8"))
            if not isinstance(document, dict):
                raise ValueError("it is not a JSON object")
        except (OSError, ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
            entry.error = error
        else:
            entry.document = document
            entry.view, entry.description = _view(document, app)
        entries.append(entry)
    return entries


def build_page(folder: Path, app: App) -> tuple[str, int]:
    """The report's HTML over every result below ``folder`` and the number of results shown.

    Args:
        folder: the report's folder.
        app: the registry whose analyses' views show their results.
    """
    entries = paper_order(find_entries(folder, app))
    sections, toc = [], []
    views: list[ReportView] = []  # those with a result on the page, in order: their css and js go in once
    for entry in entries:
        toc.append(_toc_entry(entry))
        if entry.document is None:
            sections.append(_unreadable(entry))
            continue
        if entry.view is not None and all(entry.view is not seen for seen in views):
            views.append(entry.view)
        html = render_result(entry.document, entry.here, folder, entry.slug, entry.view, entry.description)
        sections.append(f'<section class="result" id="res-{entry.slug}">{html}</section>')
    prune_assets(folder, {entry.slug for entry in entries})
    count = sum(1 for entry in entries if entry.document is not None)
    return _page(folder, count, toc, _gallery(entries), sections, views), count


def _page(folder: Path, count: int, toc: list[str], gallery: str, sections: list[str], views: list[ReportView]) -> str:
    """The whole page around the results' sections: head, style, table of contents, front page, script."""
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = gallery + "".join(sections) or (
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
