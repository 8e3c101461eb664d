"""top9's report view: a unit browser, one card per feature map (NetDissect style) with its top-k
deconvnet projections and image patches as 3x3 mosaics and its strength, and controls to sort,
filter and page through the cards (``browser.js``, styled by ``browser.css``).

Where the pictures come from: the per-map mosaics are drawn at report time from the result's
``arrays.npz`` (``projections``, ``patches``, ``values``, ``image_index``) into the result's
asset folder (``DIR/report_assets/<result>/``), not cropped out of the ``top9_page*.png``
figures. The figures show only ``--maps-per-page x --pages`` maps (64 by default) in a layout
that depends on options (a filter column for the first layer, empty panels for silent maps), so
cropping them would be brittle and would miss most maps; the arrays hold every map at its stored
resolution. The drawn mosaics are cached: a result whose ``arrays.npz`` has not changed (size and
modification time, recorded in the asset folder's manifest) is not drawn again, and a report over
a tree whose sub-folders hold their own reports takes their mosaics (``ReportPage.reuse_assets``).
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vizkit
from vizkit.framework import write_atomic
from vizkit.toolkit.figures import tile_mosaic
from vizkit.toolkit.report import esc, format_number, is_number, url

ASSET_VERSION = 1  # bump when the drawing changes, so cached pictures are redrawn
MAX_UNITS = 1024  # cards per result at most (the strongest maps), so a wide layer stays browsable
PAGE_SIZES = (12, 24, 48, 96)
DEFAULT_PAGE_SIZE = 24


@dataclass(frozen=True)
class Unit:
    """One feature map's card: its index, strength (top activation), mean of its winners, how
    many winners fired, and its pictures (paths relative to the report, None for a silent map)."""

    channel: int
    strength: float
    mean: float
    fired: int
    projections: str | None
    patches: str | None


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def mosaic(tiles: np.ndarray, rows: int, slots: int) -> np.ndarray:
    """``tiles`` [n, P, P, 3] in a grid of ``rows`` x ceil(slots / rows) cells, blank cells
    padding a map with fewer winners, so every card's mosaic has the same shape."""
    columns = max(1, math.ceil(slots / rows))
    blank = np.ones((rows * columns - len(tiles), *tiles.shape[1:]), dtype=np.float32)
    return tile_mosaic(np.concatenate([tiles.astype(np.float32), blank]) if len(blank) else tiles, rows=rows)


def _source_key(arrays: Path) -> dict[str, int | str]:
    stat = arrays.stat()
    return {
        "version": ASSET_VERSION,
        "arrays": str(arrays.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


PICTURES = ("projections", "patches")  # the large arrays: read only when a mosaic must be drawn


def _shape(archive: zipfile.ZipFile, key: str) -> tuple[int, ...]:
    """An array's shape in an ``.npz``, read from its header (the array itself is not read)."""
    with archive.open(f"{key}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return tuple(np.lib.format.read_array_header_1_0(stream)[0])
        if version == (2, 0):
            return tuple(np.lib.format.read_array_header_2_0(stream)[0])
    with archive.open(f"{key}.npy") as stream:  # a newer header format: read the array
        return tuple(np.lib.format.read_array(stream, allow_pickle=False).shape)


def _load(arrays: Path, channels: list[int] | None) -> tuple[list[int], dict[str, np.ndarray]]:
    """The small arrays the browser needs (``values``, ``image_index``), the large ones
    (:data:`PICTURES`) checked by their headers for the shapes top9 writes."""
    try:
        with np.load(arrays, allow_pickle=False) as npz:
            missing = {"values", "image_index", *PICTURES} - set(npz.files)
            if missing:
                raise ValueError(f"{arrays.name} lacks {', '.join(sorted(missing))}")
            data = {key: npz[key] for key in ("values", "image_index")}
        with zipfile.ZipFile(arrays) as archive:
            projections, patches = (_shape(archive, key) for key in PICTURES)
    except (EOFError, zipfile.BadZipFile, zlib.error) as error:  # truncated, or not an .npz at all
        raise ValueError(f"{arrays.name} could not be read ({error})") from None
    maps, k = data["values"].shape[:2]
    if projections[:3] != (maps, k, 3) or patches[:2] != (maps, k):
        raise ValueError(f"{arrays.name} holds arrays of unexpected shapes")
    if channels is None:  # a result that does not list its maps: they are the layer's first ones
        return list(range(maps)), data
    if len(channels) != maps:
        raise ValueError(f"result.json lists {len(channels)} channels but {arrays.name} holds {maps} maps")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in channels):
        raise ValueError("result.json's channels are not all map indices")
    if len(set(channels)) != len(channels):
        raise ValueError("result.json lists a channel twice")
    return list(channels), data


def _arrays_file(page: vizkit.framework.ReportPage) -> Path:
    document = page.document
    arrays_name = str((document.get("files") or {}).get("arrays") or "arrays.npz")
    if "/" in arrays_name or "\\" in arrays_name or arrays_name in (".", ".."):
        raise ValueError(f"result.json names its arrays {arrays_name!r}, not a file beside it")
    arrays = page.folder / arrays_name
    if not arrays.is_file():
        raise FileNotFoundError(f"no {arrays_name} beside result.json")
    return arrays


def draw_units(page: vizkit.framework.ReportPage) -> tuple[list[Unit], int]:
    """Draw (or reuse) every shown map's projection and patch mosaics into the result's asset
    folder (``page.assets``) and return the cards' data and the number of maps in the result.

    Args:
        page: the top9 result as the report gives it to its view.
    """
    document = page.document
    arrays = _arrays_file(page)
    channels, data = _load(arrays, document.get("channels") if isinstance(document.get("channels"), list) else None)
    values = data["values"].astype(np.float64)
    fired = np.isfinite(values) & (data["image_index"] >= 0)
    maps, k = values.shape
    strength = np.where(fired[:, 0], values[:, 0], 0.0) if k else np.zeros(maps)
    order = np.argsort(-strength, kind="stable")[:MAX_UNITS]
    shown = sorted(int(m) for m in order)
    rows = max(1, math.ceil(math.sqrt(k)))

    folder, key = page.assets, _source_key(arrays)
    cached = page.reuse_assets(key)  # drawn before, by this report or a nested one
    pictures: dict[str, np.ndarray] = {}  # the large arrays, read at the first mosaic to draw
    units = []
    for m in shown:
        count = int(fired[m].sum())
        names: list[str | None] = [None, None]
        if count:
            valid = np.flatnonzero(fired[m])
            for slot, kind in enumerate(("projections", "patches")):
                name = f"map{channels[m]:05d}_{kind}.png"
                names[slot] = page.asset_path(name)
                if cached and (folder / name).is_file():
                    continue
                if not pictures:
                    with np.load(arrays, allow_pickle=False) as npz:
                        pictures.update((part, npz[part]) for part in PICTURES)
                if kind == "projections":
                    tensor = torch.from_numpy(pictures["projections"][m, valid].astype(np.float32))
                    tiles = vizkit.to_image(tensor, channels_last=False).permute(0, 2, 3, 1).numpy()
                else:
                    tiles = pictures["patches"][m, valid].astype(np.float32) / 255
                write_atomic(folder / name, _png(mosaic(tiles, rows, k)))
        mean = float(values[m][fired[m]].mean()) if count else 0.0
        units.append(Unit(channels[m], float(strength[m]), mean, count, names[0], names[1]))
    if not cached:
        page.save_manifest(key, maps=len(units))
    return units, maps


def _img(src: str, caption: str, alt: str) -> str:
    link = url(src)
    return (
        f'<figure><a class="zoom" href="{link}" title="{esc(alt)}: click to enlarge">'
        f'<img class="mosaic" src="{link}" alt="{esc(alt)}"></a><figcaption>{esc(caption)}</figcaption></figure>'
    )


def _card(u: Unit, peak: float, n_images: int | None) -> str:
    width = max(0.0, min(100.0, 100 * u.strength / peak))
    if u.fired and u.projections and u.patches:
        pictures = _img(u.projections, "projections", f"map {u.channel} projections") + _img(
            u.patches, "patches", f"map {u.channel} patches"
        )
        detail = f"max {format_number(u.strength)} · mean {format_number(u.mean)} over {u.fired}"
    else:
        seen = f"these {n_images} images" if n_images else "these images"
        pictures = f'<p class="silent-note">never fired on {esc(seen)}</p>'
        detail = "silent"
    return (
        f'<div class="unit{" silent" if not u.fired else ""}" data-map="{u.channel}" '
        f'data-strength="{u.strength!r}" data-silent="{0 if u.fired else 1}">'
        f'<div class="unit-head"><b>map {u.channel}</b><span>{esc(detail)}</span></div>'
        f'<div class="strength" title="strength relative to the strongest map"><span style="width:{width:.1f}%"></span></div>'
        f'<div class="unit-pics">{pictures}</div></div>'
    )


def render_browser(units: list[Unit], total_maps: int, k: int, layer: str, n_images: int | None) -> str:
    """The unit browser's HTML: controls, then a card per map (all in the page; the script
    sorts, filters and pages them, and without script every card shows)."""
    if not units:
        return '<p class="note">This result holds no feature maps.</p>'
    peak = max((u.strength for u in units), default=0.0) or 1.0
    cards = [_card(u, peak, n_images) for u in units]
    sizes = "".join(
        f'<option value="{n}"{" selected" if n == DEFAULT_PAGE_SIZE else ""}>{n}</option>' for n in PAGE_SIZES
    )
    capped = (
        f'<p class="note">Showing the {len(units)} strongest of {total_maps} maps (arrays.npz holds them all).</p>'
        if len(units) < total_maps
        else ""
    )
    silent = sum(1 for u in units if not u.fired)
    return (
        f'<div class="unit-browser" data-count="{len(units)}">'
        f"<h3>Unit browser <small>{len(units)} maps of {esc(layer)}, top {k} each"
        f"{f', {silent} silent' if silent else ''}</small></h3>{capped}"
        '<div class="unit-controls">'
        '<label>sort <select data-role="sort"><option value="index">map index</option>'
        '<option value="strength">strongest first</option><option value="weakest">weakest first</option></select></label>'
        '<label>maps <input data-role="filter" type="text" size="14" placeholder="e.g. 3,7,10-20"></label>'
        '<label><input data-role="hide-silent" type="checkbox"> hide silent maps</label>'
        f'<label>per page <select data-role="page-size">{sizes}<option value="0">all</option></select></label>'
        '<button type="button" data-role="prev">‹ prev</button>'
        '<span data-role="status" class="status"></span>'
        '<button type="button" data-role="next">next ›</button>'
        "</div>"
        f'<div class="unit-grid">{"".join(cards)}</div></div>'
    )


def render(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """The unit browser over every map's card (the summary's keys stay in the generic table)."""
    document = page.document
    try:
        units, total = draw_units(page)
    except (OSError, ValueError) as error:
        return f'<p class="note">Unit browser unavailable: {esc(error)}</p>', set()
    k = document.get("k")
    n_images = document.get("n_images")
    html = render_browser(
        units,
        total,
        int(k) if is_number(k) else 0,
        str(document.get("layer", "?")),
        int(n_images) if is_number(n_images) else None,
    )
    return html, set()


def report_view() -> vizkit.ReportView:
    """top9's view, with the unit browser's style sheet and script (package data beside this module)."""
    here = resources.files(__package__ or "vizkit_plugins.top9")
    return vizkit.ReportView(
        render,
        css=here.joinpath("browser.css").read_text(encoding="utf-8"),
        js=here.joinpath("browser.js").read_text(encoding="utf-8"),
        paper="Fig. 2",
        paper_order=2,
        key_figure="top9_page*",
    )
