"""Result objects and writing them to disk atomically.

A saved result is a folder with ``result.json``, ``arrays.npz``, PNG figures and, for analyses
that make one picture per unit (featvis), PNG pictures that may sit in a subfolder. Each file is
written to a temporary name and renamed into place, and ``result.json`` is written last, so a
folder with a ``result.json`` always holds a complete result and an interrupted run never leaves
a truncated file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vizkit.errors import UsageError, VizkitError
from vizkit.version import __version__

RESULT_FILE = "result.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
ARRAYS_FILE = "arrays.npz"

# how a Result shows itself in a notebook (``_repr_html_``)
HTML_FIGURE_PIXELS = 1000  # a figure inlined wider (or taller than twice this) is drawn at a lower dpi
HTML_FIGURES = 12  # figures inlined at most; the rest are named
HTML_ITEMS = 40  # entries of a dict, or rows of a list of records, shown before the rest are counted
HTML_NUMBERS = 12  # a list of numbers or labels up to this long is shown whole
HTML_DEPTH = 3  # nesting shown as tables; deeper values are summarised
HTML_TEXT = 300  # characters of a string shown


@dataclass
class Result:
    """What an analysis returns: summary numbers, raw arrays and figures."""

    analysis: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure
    # name -> uint8 [H,W,3] (or [H,W]) image saved as-is as the PNG ``name`` (a relative path of
    # plain parts, e.g. "units/12.png"): pictures other results' pages show, not figures
    pictures: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # model, params, inputs, seconds
    # the run's working files (scan checkpoints, resume caches): deleted by ``save`` once the result
    # is written, so a failed save leaves them for --resume; never written into result.json
    scratch: list[Path] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        if key in self.summary:
            return self.summary[key]
        if key in self.arrays:
            return self.arrays[key]
        raise KeyError(key)

    def __repr__(self) -> str:
        """One line: the analysis, the summary's keys, the arrays' shapes and the figures' names
        (the values are in ``summary``, ``arrays`` and ``figures``; a notebook shows them all)."""
        keys = ", ".join(map(str, self.summary))
        arrays = ", ".join(f"{name} {_shape_text(value)}" for name, value in self.arrays.items())
        figures = ", ".join(map(str, self.figures))
        return f"Result({self.analysis!r}, summary: [{keys}], arrays: [{arrays}], figures: [{figures}])"

    def _repr_html_(self) -> str:
        """The result in a notebook (Jupyter calls this when a cell's value is a Result): the
        analysis, model and timing, the summary as a table, the arrays' shapes and every figure
        inline as a PNG (at most ``HTML_FIGURE_PIXELS`` wide). It never raises: a part that
        cannot be drawn says why in its place."""
        return result_html(self)

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` document: the run's record (analysis, version, model, params, inputs,
        seconds), the summary, and the files saved beside it. A summary key that would overwrite
        one of those is a VizkitError (a plugin bug)."""
        document = {
            "analysis": self.analysis,
            "vizkit_version": __version__,
            "model": self.meta.get("model"),
            "params": self.meta.get("params", {}),
            "inputs": self.meta.get("inputs", {}),
            "seconds": self.meta.get("seconds"),
        }
        clash = sorted(set(self.summary) & (set(document) | {"files"}))
        if clash:  # a plugin bug: its summary would overwrite what every result.json must hold
            raise VizkitError(
                f"analysis '{self.analysis}' uses reserved result key(s) {', '.join(clash)} in its summary"
            )
        document.update(self.summary)
        document["files"] = {
            "arrays": ARRAYS_FILE if self.arrays else None,
            "figures": [f"{name}.png" for name in self.figures],
        }
        if self.pictures:
            document["files"]["pictures"] = list(self.pictures)
        return _jsonable(document)

    def _json_text(self) -> str:
        """``result.json``'s text; a VizkitError naming the problem when the result cannot be saved."""
        for name in self.figures:
            if not isinstance(name, str) or not name or name != Path(name).name or name.startswith("."):
                raise VizkitError(f"analysis '{self.analysis}' names a figure {name!r}: use a plain file name")
        for name, picture in self.pictures.items():
            if not _picture_name_ok(name):
                raise VizkitError(
                    f"analysis '{self.analysis}' names a picture {name!r}: use a relative path of plain parts ending .png"
                )
            shape = np.shape(picture)
            if np.asarray(picture).dtype != np.uint8 or not (
                len(shape) == 2 or (len(shape) == 3 and shape[2] in (3, 4))
            ):
                raise VizkitError(
                    f"analysis '{self.analysis}' gives picture {name!r} as {np.asarray(picture).dtype} {shape}: "
                    "use uint8 [H,W], [H,W,3] or [H,W,4]"
                )
        try:
            return json.dumps(self.to_json(), indent=2, allow_nan=False)
        except (TypeError, ValueError) as error:  # e.g. a set or an object in the summary
            raise VizkitError(f"analysis '{self.analysis}' has a summary that JSON cannot hold: {error}") from None

    def save(self, out: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the result into folder ``out`` (``result.json`` last) and return it.

        Args:
            out: the result folder; created if missing.
            overwrite: replace a result already in ``out`` (its figures and arrays that this one
                does not write are removed; other files are kept); without it, such a folder is
                a UsageError. A result that cannot be saved (a VizkitError) leaves ``out`` as it was.
        """
        out = Path(out)
        check_out_dir(out, overwrite)
        # the document first: a summary that cannot be written (a reserved key, a value JSON cannot
        # hold, a bad figure name) must fail before a previous result in ``out`` is touched
        text = self._json_text()
        try:  # a full disk or a folder that refuses writes: one line naming it, not "a bug in vizkit"
            self._write(out, text, overwrite)
        except OSError as error:
            raise VizkitError(f"cannot write the result into {out}: {error.strerror or error}") from error
        for path in self.scratch:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.scratch.clear()
        return out

    def _write(self, out: Path, text: str, overwrite: bool) -> None:
        """The files of :meth:`save`, ``result.json`` (``text``) last."""
        out.mkdir(parents=True, exist_ok=True)
        previous = _result_files(out) if overwrite else set()
        if overwrite:
            (out / RESULT_FILE).unlink(missing_ok=True)  # the folder is incomplete until the end
        if self.arrays:
            write_atomic(out / ARRAYS_FILE, npz_bytes(self.arrays))
        for name, figure in self.figures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=figure.get_dpi(), bbox_inches="tight")
            write_atomic(out / f"{name}.png", buffer.getvalue())
        for name, picture in self.pictures.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(out / name, png_bytes(np.asarray(picture)))
        written = {f"{name}.png" for name in self.figures} | set(self.pictures)
        written |= {ARRAYS_FILE} if self.arrays else set()
        for stale in previous - written:  # the old result's files, never other files
            (out / stale).unlink(missing_ok=True)
        write_atomic(out / RESULT_FILE, (text + "\n").encode())


# a fixed timestamp for every member of arrays.npz (the zip format's earliest date), so that the
# same arrays always give the same bytes (np.savez_compressed stamps each member with the clock)
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz`` that ``np.load`` reads, a function of the
    arrays alone: members in the dict's order, each stamped ``ZIP_EPOCH``, without pickles.

    ``np.savez_compressed`` writes the same members but stamps them with the time of writing,
    so two runs that computed identical arrays would give different files.

    Args:
        arrays: name -> array (anything ``np.asarray`` takes); the names become ``<name>.npy``.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16  # a regular file, rw-r--r--
            with archive.open(member, "w", force_zip64=True) as stream:  # numpy always forces zip64 (gh-10776)
                np.lib.format.write_array(stream, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


def png_bytes(picture: np.ndarray) -> bytes:
    """A uint8 [H,W], [H,W,3] or [H,W,4] image as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="PNG")
    return buffer.getvalue()


def _picture_name_ok(name: object) -> bool:
    """A picture's name: a relative path of plain parts (no "..", none hidden) ending ``.png``,
    never a result file's name."""
    if not isinstance(name, str) or not name.endswith(".png") or "\\" in name:
        return False
    parts = name.split("/")
    return all(part and not part.startswith(".") for part in parts) and name not in (RESULT_FILE, ARRAYS_FILE)


def _result_files(out: Path) -> set[str]:
    """The figure, array and picture files the result saved in ``out`` lists (none if there is none)."""
    try:
        files = json.loads((out / RESULT_FILE).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return set()
    names = set(files.get("figures") or []) | ({files["arrays"]} if files.get("arrays") else set())
    plain = {name for name in names if isinstance(name, str) and "/" not in name and name != RESULT_FILE}
    pictures = files.get("pictures") or [] if isinstance(files, dict) else []
    return plain | {name for name in pictures if _picture_name_ok(name)}


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that already holds a result, unless overwriting."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if (out / RESULT_FILE).exists() and not overwrite:
        raise UsageError(f"--out {out} already holds a result; pass --overwrite or choose another folder")
    existing = out
    while not existing.exists() and existing != existing.parent:  # the folder that would hold it
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is not a folder" if not existing.is_dir() else "is not writable"
        raise UsageError(f"--out {out} cannot be created: {existing} {why}")


def keep_json_lines(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite the JSON-lines file ``path`` (atomically) with only the records ``keep`` accepts: a
    resumed run drops the metrics lines of epochs after its checkpoint (a crash between the line
    and the checkpoint leaves one). A missing file is left missing.

    Args:
        path: the ``.jsonl`` file.
        keep: a record -> whether its line stays.
    """
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and keep(json.loads(line))]
    write_atomic(path, "".join(line + "\n" for line in kept).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp's 0600 would surprise readers of results
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_torch_atomic(path: str | os.PathLike, payload: Any) -> None:
    """``torch.save`` that never leaves a truncated file (checkpoints, caches, weights).

    Args:
        path: the destination file; missing parent folders are created, an existing file replaced.
        payload: anything ``torch.save`` accepts (a state_dict, a checkpoint dict, tensors).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def load_result(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A saved result's JSON document and arrays.

    Args:
        folder: a folder :meth:`Result.save` wrote (its ``result.json``, and ``arrays.npz`` when
            the result has arrays; without one the arrays come back empty).
    """
    folder = Path(folder)
    document = json.loads((folder / RESULT_FILE).read_text())
    arrays: dict[str, np.ndarray] = {}
    if (folder / ARRAYS_FILE).exists():
        with np.load(folder / ARRAYS_FILE) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return document, arrays


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if type(value).__module__.startswith("torch") and callable(getattr(value, "tolist", None)):
        return _jsonable(value.tolist())  # a tensor (on any device, with or without grad)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------ notebook display
# (self-contained: the report's renderer, vizkit.toolkit.report_values, sits a layer above)
_CELL = 'style="text-align:left;vertical-align:top;padding:2px 8px"'
_FIGURE_STYLE = "max-width:100%;height:auto;border:1px solid #ddd"


def result_html(result: Result) -> str:
    """``result`` as one HTML fragment for a notebook: a heading, the summary table, the arrays
    and the figures inlined as base64 PNGs; see :meth:`Result._repr_html_`."""
    esc = _esc
    meta = result.meta or {}
    model = meta.get("model")
    spec = (model.get("spec") or model.get("class")) if isinstance(model, dict) else model
    facts = [f"model <code>{esc(spec)}</code>" if spec else ""]
    if isinstance(meta.get("seconds"), (int, float)):
        facts.append(f"{meta['seconds']:.3g} s")
    parts = [
        '<div class="vizkit-result">',
        f"<p><strong>vizkit result: <code>{esc(result.analysis or 'unnamed')}</code></strong> "
        + " · ".join(f for f in facts if f)
        + "</p>",
    ]
    try:
        summary = _jsonable(result.summary)
        parts.append(_html_value(summary, 0) if summary else "<p><em>no summary values</em></p>")
    except Exception as error:  # a repr must not raise: say what went wrong in its place
        parts.append(f"<p><em>the summary cannot be shown: {esc(error)}</em></p>")
    params = meta.get("params")
    if isinstance(params, dict) and params:
        parts.append(f"<details><summary>parameters</summary>{_html_value(_jsonable(params), 1)}</details>")
    if result.arrays:
        shown = [
            f"<code>{esc(name)}</code> {esc(_shape_text(value))}"
            for name, value in list(result.arrays.items())[:HTML_ITEMS]
        ]
        more = len(result.arrays) - len(shown)
        parts.append("<p>arrays: " + ", ".join(shown) + (f", and {more} more" if more > 0 else "") + "</p>")
    names = list(result.figures)
    for name in names[:HTML_FIGURES]:
        parts.append(_figure_html(name, result.figures[name]))
    if len(names) > HTML_FIGURES:
        rest = ", ".join(f"<code>{esc(n)}</code>" for n in names[HTML_FIGURES:])
        parts.append(f"<p>{len(names) - HTML_FIGURES} more figures in <code>.figures</code>: {rest}</p>")
    parts.append("</div>")
    return "\n".join(parts)


def figure_png(figure: Any, max_pixels: int = HTML_FIGURE_PIXELS) -> bytes:
    """A matplotlib Figure as PNG bytes, at its own dpi or a lower one that keeps it at most
    ``max_pixels`` wide and ``2 * max_pixels`` high (before ``bbox_inches="tight"`` trims it).

    Args:
        figure: a matplotlib Figure (on its own canvas, as analyses make them).
        max_pixels: the largest width in pixels.
    """
    width, height = figure.get_size_inches()
    dpi = min(float(figure.get_dpi()), max_pixels / max(width, 1e-3), 2 * max_pixels / max(height, 1e-3))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _figure_html(name: str, figure: Any) -> str:
    caption = f"<figcaption><code>{_esc(name)}</code></figcaption>"
    try:
        data = base64.b64encode(figure_png(figure)).decode("ascii")
    except Exception as error:  # a plugin's odd figure: name it, show the rest
        return f"<figure>{caption}<p><em>cannot be drawn: {_esc(type(error).__name__)}: {_esc(error)}</em></p></figure>"
    image = f'<img src="data:image/png;base64,{data}" alt="{_esc(name)}" style="{_FIGURE_STYLE}">'
    return f'<figure style="margin:8px 0">{image}{caption}</figure>'


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _shape_text(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None:
        return type(value).__name__
    return f"[{', '.join(str(int(d)) for d in shape)}] {dtype}"


def _scalar_html(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return _esc(text if len(text) <= HTML_TEXT else text[:HTML_TEXT] + "…")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _html_value(value: Any, depth: int) -> str:
    """A JSON value as HTML: scalars as text, short lists inline, long ones summarised, lists of
    records and dicts as tables (``HTML_DEPTH`` deep, ``HTML_ITEMS`` entries)."""
    if _is_scalar(value):
        return _scalar_html(value)
    if isinstance(value, list):
        if all(_is_scalar(v) for v in value):
            if len(value) <= HTML_NUMBERS:
                return "[" + ", ".join(_scalar_html(v) for v in value) + "]"
            numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
            first = ", ".join(_scalar_html(v) for v in value[:6])
            spread = (
                f"; {_scalar_html(min(numbers))} to {_scalar_html(max(numbers))}" if len(numbers) == len(value) else ""
            )
            return f"{len(value)} values: [{first}, …]{spread}"
        if depth >= HTML_DEPTH:
            return f"a list of {len(value)} items"
        if all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for row in value[:HTML_ITEMS] for k in row))
            head = "".join(f"<th {_CELL}>{_esc(c)}</th>" for c in columns)
            rows = [
                "<tr>" + "".join(f"<td {_CELL}>{_html_value(row.get(c), depth + 1)}</td>" for c in columns) + "</tr>"
                for row in value[:HTML_ITEMS]
            ]
            return f"<table><tr>{head}</tr>{''.join(rows)}</table>" + _more(len(value), "rows")
        items = [_html_value(v, depth + 1) for v in value[:HTML_ITEMS]]
        return "[" + ", ".join(items) + "]" + _more(len(value), "items")
    if isinstance(value, dict):
        if depth >= HTML_DEPTH:
            return f"{len(value)} entries"
        rows = [
            f"<tr><th {_CELL}>{_esc(key)}</th><td {_CELL}>{_html_value(item, depth + 1)}</td></tr>"
            for key, item in list(value.items())[:HTML_ITEMS]
        ]
        return f"<table>{''.join(rows)}</table>" + _more(len(value), "entries")
    return _scalar_html(value)


def _more(count: int, what: str) -> str:
    return f"<p><em>and {count - HTML_ITEMS} more {what}</em></p>" if count > HTML_ITEMS else ""
