"""``vizkit report``: one static HTML page over every result saved below a folder."""

from __future__ import annotations

import html
import json
from pathlib import Path

from vizkit.framework.results import RESULT_FILE, write_atomic

_SKIP = {"analysis", "vizkit_version", "model", "params", "inputs", "files", "seconds"}


def _summary(document: dict) -> str:
    rows = []
    for key, value in document.items():
        if key in _SKIP:
            continue
        text = json.dumps(value)
        if len(text) > 300:
            text = text[:300] + " ..."
        rows.append(f"<tr><th>{html.escape(key)}</th><td><code>{html.escape(text)}</code></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def write_report(folder: Path) -> tuple[Path, int]:
    """Write ``folder/index.html``; return its path and the number of results shown."""
    sections = []
    for result_file in sorted(folder.rglob(RESULT_FILE)):
        document = json.loads(result_file.read_text())
        here = result_file.parent
        relative = here.relative_to(folder).as_posix() or "."
        model = document.get("model") or {}
        figures = "".join(
            f'<figure><img src="{html.escape(relative)}/{html.escape(name)}" loading="lazy">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
            for name in (document.get("files") or {}).get("figures", [])
            if (here / name).exists()
        )
        sections.append(
            f"<section><h2>{html.escape(document.get('analysis', '?'))} "
            f"<small>{html.escape(relative)}</small></h2>"
            f"<p>model <code>{html.escape(str(model.get('spec')))}</code>, "
            f"{document.get('seconds')} s, vizkit {html.escape(str(document.get('vizkit_version')))}</p>"
            f"{_summary(document)}{figures}</section>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>vizkit report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1400px}img{max-width:100%;border:1px solid #ccc}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ddd;padding:4px 8px;"
        "text-align:left;vertical-align:top}section{margin-bottom:3em}small{color:#888}"
        "</style></head><body><h1>vizkit report</h1>"
        + ("".join(sections) or "<p>No results found.</p>")
        + "</body></html>\n"
    )
    path = folder / "index.html"
    write_atomic(path, page.encode())
    return path, len(sections)
