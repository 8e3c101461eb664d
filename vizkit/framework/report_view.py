"""How an analysis shows its results in ``vizkit report``: a :class:`ReportView` (datasette's
output renderers), given to the analysis as ``Analysis(..., view=ReportView(render))``.

The report (``vizkit report DIR``) leads with a front page, one card per result showing its key
figure (:attr:`ReportView.key_figure`, by default the result's first figure), then a section per
result in the paper's order (:attr:`ReportView.paper_order`; analyses beyond the paper follow, by
name): the figures first, then what the view shows, then the summary keys the view did not show,
with the model, parameters, inputs and timing folded away. An analysis with a view gets its say
after the figures: for each of its results the report calls ``view.render(page)`` with a
:class:`ReportPage` and shows the HTML it returns; the summary keys the view names as shown are
left out of the generic key/value rendering that follows, so a key the view does not know (a
newer version's) is still shown. A view that raises is reported in its section and the generic
rendering shows everything: a report never fails because of a view. An analysis without a view,
or one whose plugin is missing or disabled, gets the generic rendering (and a place after the
paper's analyses).

A view writes HTML: every value it puts in the page goes through
:func:`vizkit.toolkit.report.esc` (or a renderer of :mod:`vizkit.toolkit.report`, which escape for
it), since results may hold any string. Pictures it draws go into :attr:`ReportPage.assets`, with
:meth:`ReportPage.reuse_assets` before drawing and :meth:`ReportPage.save_manifest` after, so that
a report reuses them, also those a nested report (one written in a folder of the tree) drew for
the same result.

Example, the per-image table of an analysis whose summary holds ``images`` and per-image
``score`` lists (an analysis beyond the paper: its section comes after the paper's)::

    from vizkit.toolkit import report

    def render(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
        return report.per_image_table(page.document, ["score"])

    vizkit.Analysis("scores", "...", run, view=vizkit.ReportView(render))
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASSETS = "report_assets"  # the folder under the report's DIR that holds pictures views draw
MANIFEST = "assets.json"  # marks a folder of report_assets as the report's own (removed with its result)


def result_digest(document: Any) -> str:
    """The sha256 of a result's ``result.json`` content (keys sorted: the same result gives the
    same digest however it was written), recorded in asset manifests."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows it (no bytes copied, nothing shared that changes:
    pictures are replaced by rename, never rewritten in place), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@dataclass(frozen=True)
class ReportPage:
    """One result as a view sees it.

    Attributes:
        document: the result's ``result.json``, as read (any JSON: check before trusting a shape).
        folder: the result's folder (``arrays.npz`` and the figures are there).
        root: the report's folder, the one ``index.html`` is written to: links and picture
            sources in the HTML are relative to it.
        slug: the result's unique name in the report (its section's anchor is ``res-<slug>``).
    """

    document: dict[str, Any]
    folder: Path
    root: Path
    slug: str

    @property
    def assets(self) -> Path:
        """The folder for pictures this view draws for this result, ``root/report_assets/<slug>``
        (not created: :meth:`reuse_assets` creates it). A view that uses it writes :attr:`manifest`
        there too (:meth:`save_manifest`): the report then removes the folder once the result is
        gone, and never touches a folder without one."""
        return self.root / ASSETS / self.slug

    @property
    def manifest(self) -> Path:
        """The file that marks :attr:`assets` as the report's own."""
        return self.assets / MANIFEST

    def related(self, analysis: str) -> list[tuple[Path, dict[str, Any]]]:
        """The results of ``analysis`` in this report other than this one: every ``result.json``
        below :attr:`root` (hidden folders and the report's asset folder skipped) whose
        ``analysis`` it is, as (its folder, its document), in path order; unreadable ones are left
        out. A view shows what another analysis found with it (the atlas, featvis's pictures).

        Args:
            analysis: the analysis name to look for.
        """
        found: list[tuple[Path, dict[str, Any]]] = []
        own = self.folder.resolve()
        for folder, names, files in os.walk(self.root):
            here = Path(folder)
            names[:] = sorted(n for n in names if not n.startswith(".") and not (here == self.root and n == ASSETS))
            if "result.json" not in files or here.resolve() == own:
                continue
            document = _read_manifest(here / "result.json")  # any JSON object, or None
            if document is not None and document.get("analysis") == analysis:
                found.append((here, document))
        return found

    def asset_path(self, name: str) -> str:
        """The path of the picture ``name`` in :attr:`assets` relative to the report's folder, with
        forward slashes (percent-encode it and escape it for an ``src``/``href``:
        :func:`vizkit.toolkit.report.url`).

        Args:
            name: the file's name inside :attr:`assets`.
        """
        return f"{ASSETS}/{self.slug}/{name}"

    @staticmethod
    def _matches(manifest: dict[str, Any] | None, source: Any, digest: str) -> bool:
        return manifest is not None and manifest.get("source") == source and manifest.get("result") == digest

    def _other_asset_folders(self) -> Iterator[Path]:
        """Asset folders that may hold this result's pictures: this report's other ones (the
        result's slug changed), then those of reports written in the result's folder and each
        folder above it (a nested report's, or an enclosing one's), nearest first."""
        own = self.assets.resolve()
        root = self.root.resolve()
        places = [root] + [p for p in (self.folder.resolve(), *self.folder.resolve().parents) if p != root]
        for place in places:
            assets = place / ASSETS
            if not assets.is_dir():
                continue
            try:
                folders = sorted(assets.iterdir())
            except OSError:
                continue
            for folder in folders:
                if folder.is_dir() and folder.resolve() != own:
                    yield folder

    def reuse_assets(self, source: Any) -> bool:
        """Whether :attr:`assets` holds the pictures drawn from ``source`` for this result (same
        ``source`` and same ``result.json`` content in its manifest); call it before drawing.

        Pictures this report drew before count, and so do those another report drew for the same
        result: one written in a folder of the tree (``vizkit report`` run on a sub-folder
        before, or the ``vizkit demo``'s own report) or around it. Those are hard-linked (copied
        where links are not possible) into :attr:`assets`, so nothing is drawn twice and this
        report does not depend on the other staying. When nothing fits, :attr:`assets` is
        emptied and created for a new drawing; draw the pictures that are missing, then call
        :meth:`save_manifest`. Write each picture whole by replacing the file
        (:func:`vizkit.framework.write_atomic`), never by rewriting it in place: a linked
        picture is shared with the report it came from.

        Args:
            source: what the pictures are drawn from, as JSON (e.g. the arrays file's path, size
                and modification time, and a version of the drawing code).
        """
        source = json.loads(json.dumps(source))  # tuples become lists, as read back from a manifest
        digest = result_digest(self.document)
        if self._matches(_read_manifest(self.manifest), source, digest):
            return True
        for folder in self._other_asset_folders():
            if self._matches(_read_manifest(folder / MANIFEST), source, digest):
                if self.assets.exists():
                    shutil.rmtree(self.assets)
                self.assets.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copytree(folder, self.assets, copy_function=_link_or_copy)
                except OSError:  # vanished or unreadable meanwhile: draw instead
                    shutil.rmtree(self.assets, ignore_errors=True)
                    break
                return True
        if self.assets.exists():
            shutil.rmtree(self.assets)
        self.assets.mkdir(parents=True)
        return False

    def save_manifest(self, source: Any, **extra: Any) -> None:
        """Write :attr:`manifest` after drawing: ``source`` (as given to :meth:`reuse_assets`), the
        result's digest, and ``extra`` (any JSON: what a view wants to remember)."""
        from vizkit.framework.results import write_atomic  # numpy-heavy module: only when drawing

        document = {"source": source, "result": result_digest(self.document), **extra}
        write_atomic(self.manifest, (json.dumps(document, indent=1) + "\n").encode())


def _no_render(page: ReportPage) -> tuple[str, set[str]]:
    """The render of a view that only places its analysis (paper order, key figure)."""
    return "", set()


@dataclass(frozen=True)
class ReportView:
    """How the report shows an analysis's results: ``Analysis(..., view=ReportView(render))``.

    Attributes:
        render: called once per result of the analysis with its :class:`ReportPage`; returns the
            HTML to show after the figures (headings ``<h3>`` and below, tables, pictures) and the
            summary keys that HTML shows, which the generic rendering then leaves out. It may
            raise on data it does not expect: the report says so and shows the values as they are.
            Left out: the generic rendering alone (a view that only sets the fields below).
        css: style rules the view's HTML needs, added once to the page's style sheet when a result
            of the analysis is shown (prefix the class names with the analysis's, they share the
            page; the page must not scroll sideways at 420 px: let grids wrap, tables scroll).
        js: a script the view's HTML needs, added once to the page when a result of the analysis
            is shown: self-contained (wrap it in a function), run after the page has loaded, and
            the page must read fine without it. Nothing may be fetched from the network: the report
            works opened from disk.
        paper: what of Zeiler & Fergus the analysis reproduces, as a reader cites it (``"Fig. 2"``,
            ``"Fig. 8, Table 1"``), shown on its card and section; empty: an analysis beyond the paper.
        paper_order: where its sections go: the report sorts by it, by convention the number of
            the first figure of the paper it reproduces (deconvnet 1, top9 2, evolution 4,
            invariance 5, filters 6, occlusion 7, correspondence 8; a table numbers as the figures
            around it, probes' Table 7 is 9.5). None: after the paper's analyses, by name.
        key_figure: the figure of a result that stands for it on the report's front page and
            leads its section: a figure's file name, with or without ``.png``, or a shell pattern
            (``top9_page*``). Empty, or no figure of the result matches: its first figure.
    """

    render: Callable[[ReportPage], tuple[str, set[str]]] = _no_render
    css: str = ""
    js: str = ""
    paper: str = ""
    paper_order: float | None = None
    key_figure: str = ""
