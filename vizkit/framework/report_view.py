"""How an analysis shows its results in ``vizkit report``: a :class:`ReportView` (datasette's
output renderers), given to the analysis as ``Analysis(..., view=ReportView(render))``.

The report (``vizkit report DIR``) draws every result's section the same way: the analysis and
model, parameters, inputs and timing, then the summary, the figures and links to the raw files.
An analysis with a view gets its say in the middle: for each of its results the report calls
``view.render(page)`` with a :class:`ReportPage` and shows the HTML it returns; the summary keys
the view names as shown are left out of the generic key/value rendering that follows, so a key
the view does not know (a newer version's) is still shown. A view that raises is reported in its
section and the generic rendering shows everything: a report never fails because of a view.
An analysis without a view, or one whose plugin is missing or disabled, gets the generic rendering.

A view writes HTML: every value it puts in the page goes through
:func:`vizkit.toolkit.report.esc` (or a renderer of :mod:`vizkit.toolkit.report`, which escape for
it), since results may hold any string. Pictures it draws go into :attr:`ReportPage.assets`.

Example, the per-image table of an analysis whose summary holds ``images`` and per-image
``score`` lists::

    from vizkit.toolkit import report

    def render(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
        return report.per_image_table(page.document, ["score"])

    vizkit.Analysis("scores", "...", run, view=vizkit.ReportView(render))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASSETS = "report_assets"  # the folder under the report's DIR that holds pictures views draw
MANIFEST = "assets.json"  # marks a folder of report_assets as the report's own (removed with its result)


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
        (not created). A view that uses it writes :attr:`manifest` there too (any JSON, e.g. what
        it drew from, to reuse the pictures next time): the report then removes the folder once
        the result is gone, and never touches a folder without one."""
        return self.root / ASSETS / self.slug

    @property
    def manifest(self) -> Path:
        """The file that marks :attr:`assets` as the report's own."""
        return self.assets / MANIFEST

    def asset_path(self, name: str) -> str:
        """The path of the picture ``name`` in :attr:`assets` relative to the report's folder, with
        forward slashes (percent-encode it and escape it for an ``src``/``href``:
        :func:`vizkit.toolkit.report.url`).

        Args:
            name: the file's name inside :attr:`assets`.
        """
        return f"{ASSETS}/{self.slug}/{name}"


@dataclass(frozen=True)
class ReportView:
    """How the report shows an analysis's results: ``Analysis(..., view=ReportView(render))``.

    Attributes:
        render: called once per result of the analysis with its :class:`ReportPage`; returns the
            HTML to show (headings ``<h3>`` and below, tables, pictures) and the summary keys that
            HTML shows, which the generic rendering then leaves out. It may raise on data it does
            not expect: the report says so and shows the values as they are.
        css: style rules the view's HTML needs, added once to the page's style sheet when a result
            of the analysis is shown (prefix the class names with the analysis's, they share the page).
        js: a script the view's HTML needs, added once to the page when a result of the analysis
            is shown: self-contained (wrap it in a function), run after the page has loaded, and
            the page must read fine without it. Nothing may be fetched from the network: the report
            works opened from disk.
    """

    render: Callable[[ReportPage], tuple[str, set[str]]]
    css: str = ""
    js: str = ""
