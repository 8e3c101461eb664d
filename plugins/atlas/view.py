"""atlas's report view: an index of every unit of every layer (one sprite of thumbnails per layer,
sortable and filterable by ``atlas.js``, styled by ``atlas.css``) and one static page per unit at a
stable address, ``report_assets/<result>/atlas/<layer>/<unit>.html``.

What is drawn, at report time, from the result's ``arrays.npz`` into the result's asset folder
(``page.assets``), layer by layer and a few units at a time (the picture arrays are read in
slices, never whole: a layer of thousands of units at a large patch size does not fill memory):

* ``atlas/<layer>/sprite.png``: a thumbnail per unit, its strongest image patch beside that
  patch's deconvnet projection (:data:`THUMB` px each), :data:`SPRITE_COLUMNS` units a row; the
  index shows each unit as a link whose background is its cell of the sprite (one request per
  layer, however many units: nothing is left out);
* ``atlas/<layer>/<unit>.png``: the unit's k exemplars, each its patch beside its projection, in
  one strip at the stored resolution; the unit page shows each cell of it in a card;
* ``atlas/<layer>/<unit>.html``: the unit's page: exemplars with their activations and image
  names, statistics (a histogram of the per-image maxima), class bars and selectivity, ablation
  effect, links to the connected units of the neighbouring layers and to the neighbouring units.

Projections are shown as everywhere in vizkit (:func:`vizkit.to_image`: zero at mid-grey, each
scaled on its own). The pictures are cached like top9's mosaics (:meth:`ReportPage.reuse_assets`
on the arrays file's path, size and modification time and :data:`ASSET_VERSION`); the pages are
rewritten only when the result's place in the report (its slug: the link back names it) or
:data:`PAGE_VERSION` changed, or a page is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import vizkit
from vizkit.framework import write_atomic
from vizkit.toolkit.report import esc, format_number, is_number, url
from vizkit_plugins.top9.view import _arrays_file

ASSET_VERSION = 1  # bump when the pictures change, so cached ones are redrawn
PAGE_VERSION = 2  # bump when the unit pages change, so they are rewritten
THUMB = 48  # side of a thumbnail's patch and of its projection in the sprite, px
GAP = 1  # white gap between a thumbnail's patch and its projection, px
CELL = (2 * THUMB + GAP, THUMB)  # a unit's cell in a layer's sprite (width, height)
SPRITE_COLUMNS = 32  # units per row of a sprite (3,104 px wide)
CHUNK_BYTES = 16 << 20  # units read and drawn at once: about this many bytes of projections as float32
CLASS_BARS = 40  # a unit page draws a bar for every class up to this many, else for the strongest ones
FOLD_CLASSES = 12  # the per-class ablation table is folded beyond this many classes
SILENT = (236, 238, 242)  # the sprite cell of a unit that never fired
NAME = "atlas"


# ------------------------------------------------------------------------------------ reading
@dataclass
class Layer:
    """One listed layer as the pages need it: the summary's facts and the small arrays (the
    picture arrays are read in slices while drawing). Arrays absent from the result are None."""

    name: str
    index: int
    folder: str  # the layer's folder under atlas/ (the name, with path separators replaced)
    units: int
    k: int
    receptive_field: int | None
    spatial: bool | None
    top_values: np.ndarray
    top_images: np.ndarray
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # the other per-unit arrays, by name
    patch: int = 0  # side of its stored patches and projections, px (0: none stored)

    def get(self, name: str) -> np.ndarray | None:
        return self.arrays.get(name)

    @cached_property
    def fired(self) -> np.ndarray:
        """[U, k] whether each slot holds a winner."""
        return (self.top_images >= 0) & np.isfinite(self.top_values)


@dataclass
class Atlas:
    """A whole atlas result: its layers, images, classes, connections and ablation record."""

    layers: list[Layer]
    images: list[str]
    classes: list[str]  # the labels shown (class_labels where given, else the class names)
    connections: dict[str, Any]
    ablation: dict[str, Any] | None
    n_images: int | None
    patch_size: int | None
    # the ablation's classes (its own data's, which may differ from the scan's) as shown, and
    # the column of each scan class among them
    ablation_classes: list[str] = field(default_factory=list)
    ablation_column: dict[int, int] = field(default_factory=dict)

    def layer(self, name: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.name == name), None)


OPTIONAL = (  # name -> its axes after [U]: "C" (classes) and "A" (the ablation's classes) are checked
    ("mean", ()),
    ("mean_max", ()),
    ("active_fraction", ()),
    ("hist_edges", ("B+1",)),
    ("hist_counts", ("B",)),
    ("class_mean", ("C",)),
    ("selectivity", ()),
    ("top_classes", (None,)),
    ("prev_units", ("m",)),
    ("prev_strength", ("m",)),
    ("next_units", ("m",)),
    ("next_strength", ("m",)),
    ("ablation_accuracy", ("A",)),  # the ablation's classes
    ("ablation_loss", ()),
)


def layer_folder(name: str, taken: set[str]) -> str:
    """The folder of layer ``name`` under ``atlas/``: the name itself (dots kept), path separators
    and other characters a file name cannot hold replaced, unique among ``taken``."""
    base = "".join("_" if ch in '/\\:*?"<>|' or ord(ch) < 32 else ch for ch in name) or "_"
    if base in (".", ".."):
        base = base.replace(".", "_")
    folder, n = base, 2
    while folder.lower() in taken:
        folder, n = f"{base}~{n}", n + 1
    taken.add(folder.lower())
    return folder


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def read_atlas(document: dict[str, Any], arrays: Path) -> Atlas:
    """The result's summary and small arrays, checked against each other (a ValueError naming
    what does not fit).

    Args:
        document: the atlas result's ``result.json``.
        arrays: its ``arrays.npz``.
    """
    names = _strings(document.get("layers"))
    if not names:
        raise ValueError("result.json lists no layers")
    names_of_classes = _strings(document.get("classes"))
    labels = _strings(document.get("class_labels"))
    classes = labels if len(labels) == len(names_of_classes) else names_of_classes
    units, rf, spatial, connections = (
        _dict(document.get(key)) for key in ("units", "receptive_field", "spatial", "connections")
    )
    ablation = _dict(document.get("ablation")) or None
    ablated_names = (_strings(ablation.get("classes")) if ablation else []) or names_of_classes
    label_of = dict(zip(names_of_classes, classes))
    ablation_classes = [label_of.get(name, name) for name in ablated_names]
    sizes = {"C": len(classes), "A": len(ablation_classes)}
    layers: list[Layer] = []
    taken: set[str] = set()
    try:
        with np.load(arrays, allow_pickle=False) as npz:
            files = set(npz.files)
            for index, name in enumerate(names):
                missing = [f"{name}/{key}" for key in ("top_values", "top_images") if f"{name}/{key}" not in files]
                if missing:
                    raise ValueError(f"{arrays.name} lacks {', '.join(missing)}")
                values = npz[f"{name}/top_values"].astype(np.float64)
                images = npz[f"{name}/top_images"].astype(np.int64)
                if values.ndim != 2 or images.shape != values.shape:
                    raise ValueError(f"{name}/top_values and top_images are not both [units, k]")
                count, k = values.shape
                declared = units.get(name)
                if is_number(declared) and int(declared) != count:
                    raise ValueError(f"result.json gives {name} {declared} units but {arrays.name} holds {count}")
                layer = Layer(
                    name,
                    index,
                    layer_folder(name, taken),
                    count,
                    k,
                    int(rf[name]) if is_number(rf.get(name)) else None,
                    bool(spatial[name]) if isinstance(spatial.get(name), bool) else None,
                    values,
                    images,
                )
                for key, tail in OPTIONAL:
                    if f"{name}/{key}" in files:
                        array = npz[f"{name}/{key}"]
                        if array.ndim != 1 + len(tail) or array.shape[0] != count:
                            raise ValueError(f"{name}/{key} has shape {list(array.shape)}, not [{count}, ...]")
                        for letter, size in sizes.items():
                            if letter in tail and array.shape[1] != size:
                                raise ValueError(f"{name}/{key} has {array.shape[1]} classes, result.json {size}")
                        layer.arrays[key] = array
                layers.append(layer)
            for layer in layers:
                if f"{layer.name}/patches" in files:
                    shape = array_shape(arrays, f"{layer.name}/patches")
                    layer.patch = int(shape[2]) if len(shape) == 5 else 0
    except (EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{arrays.name} could not be read ({error})") from None
    n_images = document.get("n_images")
    patch = document.get("patch_size")
    return Atlas(
        layers,
        _strings(document.get("images")),
        classes,
        connections,
        ablation,
        int(n_images) if is_number(n_images) else None,
        int(patch) if is_number(patch) else None,
        ablation_classes,
        {i: ablated_names.index(name) for i, name in enumerate(names_of_classes) if name in ablated_names},
    )


def _header(stream: Any) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    return None


def array_shape(arrays: Path, key: str) -> tuple[int, ...]:
    """An array's shape in an ``.npz``, from its header (the array is not read)."""
    with zipfile.ZipFile(arrays) as archive, archive.open(f"{key}.npy") as stream:
        header = _header(stream)
    if header is None:  # a newer header format: read the whole array once
        with np.load(arrays, allow_pickle=False) as npz:
            return tuple(npz[key].shape)
    return tuple(header[0])


def read_rows(arrays: Path, key: str, rows: int) -> Iterator[np.ndarray]:
    """The array ``key`` of an ``.npz`` in consecutive slices of ``rows`` along its first axis,
    read from the archive one slice at a time (deflated or stored alike)."""
    with zipfile.ZipFile(arrays) as archive, archive.open(f"{key}.npy") as stream:
        header = _header(stream)
        if header is None or header[1] or header[2].hasobject:  # rare layouts: read it whole
            whole = None
        else:
            shape, _fortran, dtype = header
            size = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for start in range(0, shape[0], rows):
                n = min(rows, shape[0] - start)
                data = stream.read(n * size)
                if len(data) != n * size:
                    raise ValueError(f"{arrays.name}: {key} is truncated")
                yield np.frombuffer(data, dtype=dtype).reshape((n, *shape[1:]))
            return
    if whole is None:
        with np.load(arrays, allow_pickle=False) as npz:
            array = npz[key]
        for start in range(0, array.shape[0], rows):
            yield array[start : start + rows]


# ------------------------------------------------------------------------------------ drawing
def _replace(path: Path, data: bytes) -> None:
    """Write a file whole through a temporary file and a rename (a linked file, shared with the
    report it was taken from, is replaced, never rewritten), without :func:`write_atomic`'s
    fsync: a layer writes thousands of these, and a report redraws what its manifest lacks."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _png(picture: np.ndarray) -> bytes:
    """A uint8 [H, W, 3] picture as PNG bytes (zlib level 3: thousands of pictures a layer, a
    sixth larger than level 6 and half the time)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _resize(tile: np.ndarray, side: int) -> np.ndarray:
    """A [P, P, 3] uint8 tile as [side, side, 3]: pixels kept sharp when enlarged by a whole
    factor, smoothed otherwise."""
    p = tile.shape[0]
    if p == side:
        return tile
    method = Image.Resampling.NEAREST if side % p == 0 else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(tile).resize((side, side), method))


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def draw_layer(arrays: Path, layer: Layer, folder: Path) -> None:
    """Draw a layer's sprite and every unit's exemplar strip into ``folder`` (the layer's folder
    in the assets), reading its picture arrays a few units at a time.

    Args:
        arrays: the result's ``arrays.npz``.
        layer: the layer, as :func:`read_atlas` gives it.
        folder: where its pictures go (created).
    """
    units, k = layer.units, layer.k
    patches_key, projections_key = f"{layer.name}/patches", f"{layer.name}/projections"
    patch_shape, projection_shape = array_shape(arrays, patches_key), array_shape(arrays, projections_key)
    p = patch_shape[2] if len(patch_shape) == 5 else -1
    if patch_shape != (units, k, p, p, 3) or projection_shape != (units, k, 3, p, p):
        raise ValueError(
            f"{layer.name}: patches {list(patch_shape)} and projections {list(projection_shape)} "
            f"are not [{units}, {k}, P, P, 3] and [{units}, {k}, 3, P, P]"
        )
    folder.mkdir(parents=True, exist_ok=True)
    fired = layer.fired
    columns = max(1, min(units, SPRITE_COLUMNS))
    rows = max(1, math.ceil(units / columns))
    sprite = np.full((rows * CELL[1], columns * CELL[0], 3), 255, np.uint8)
    rows_at_once = max(1, CHUNK_BYTES // max(1, k * 3 * p * p * 4))
    chunks = zip(read_rows(arrays, patches_key, rows_at_once), read_rows(arrays, projections_key, rows_at_once))
    start = 0
    for patches, projections in chunks:
        shown = vizkit.to_image(torch.from_numpy(projections.astype(np.float32)), channels_last=False)
        shown_projections = _to_uint8(shown.permute(0, 1, 3, 4, 2).numpy())
        for offset in range(len(patches)):
            u = start + offset
            strip = np.full((p, k * (2 * p + GAP), 3), 255, np.uint8)
            for slot in np.flatnonzero(fired[u]):
                at = int(slot) * (2 * p + GAP)
                strip[:, at : at + p] = patches[offset, slot]
                strip[:, at + p + GAP : at + 2 * p + GAP] = shown_projections[offset, slot]
            _replace(folder / f"{u}.png", _png(strip))
            r, c = divmod(u, columns)
            y, x = r * CELL[1], c * CELL[0]
            cell = sprite[y : y + CELL[1], x : x + CELL[0]]
            if fired[u].any():
                first = int(np.flatnonzero(fired[u])[0])
                cell[:, :THUMB] = _resize(np.ascontiguousarray(patches[offset, first]), THUMB)
                cell[:, THUMB + GAP :] = _resize(shown_projections[offset, first], THUMB)
            else:
                cell[:] = SILENT
        start += len(patches)
    write_atomic(folder / "sprite.png", _png(sprite))


def _sprite_position(unit: int, units: int) -> str:
    columns = max(1, min(units, SPRITE_COLUMNS))
    r, c = divmod(unit, columns)
    return f"-{c * CELL[0]}px -{r * CELL[1]}px"


# ------------------------------------------------------------------------------ unit numbers
def _clean(value: float) -> float:
    """A number stored as float32 as its shortest decimal (0.42, not 0.41999998688697815, which
    the report's rule would show as 41.999999%)."""
    return float(f"{value:.7g}")


def _value(array: np.ndarray | None, *index: int) -> float | None:
    """A finite number of an array, or None (missing array, NaN)."""
    if array is None:
        return None
    value = float(array[index])
    return _clean(value) if math.isfinite(value) else None


def _top_classes(layer: Layer, unit: int, classes: list[str]) -> list[int]:
    top = layer.get("top_classes")
    if top is None:
        return []
    return [int(c) for c in top[unit] if 0 <= int(c) < len(classes)]


def _base_accuracy(atlas: Atlas) -> list[float | None]:
    base = atlas.ablation.get("base_accuracy") if atlas.ablation else None
    if not isinstance(base, list):
        return []
    return [_clean(float(v)) if is_number(v) and math.isfinite(v) else None for v in base]


def _base_loss(atlas: Atlas) -> float | None:
    loss = atlas.ablation.get("base_loss") if atlas.ablation else None
    return _clean(float(loss)) if is_number(loss) and math.isfinite(loss) else None


def accuracy_drop(atlas: Atlas, layer: Layer, unit: int) -> float | None:
    """How much zeroing the unit lowers the accuracy of its top class (a fraction; negative: it
    rises), or None (no ablation of this layer, no top class, or none of its held-out images)."""
    ablated = layer.get("ablation_accuracy")
    top = _top_classes(layer, unit, atlas.classes)
    column = atlas.ablation_column.get(top[0]) if top else None
    base = _base_accuracy(atlas)
    if ablated is None or column is None or column >= len(base) or base[column] is None:
        return None
    after = _value(ablated, unit, column)
    before = base[column]
    return None if after is None or before is None else before - after


def loss_increase(atlas: Atlas, layer: Layer, unit: int) -> float | None:
    """How much zeroing the unit raises the mean cross-entropy, or None."""
    after = _value(layer.get("ablation_loss"), unit)
    base = _base_loss(atlas)
    return None if after is None or base is None else after - base


def _data(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{format_number(float(f'{100 * value:.4g}'))}%"


def _signed(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "—"
    text = format_number(float(f"{abs(100 * value if percent else value):.4g}"))
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    return f"{sign}{text}{' pts' if percent else ''}"


# ---------------------------------------------------------------------------------- the index
SORTS = (
    ("unit", "unit index"),
    ("selectivity", "class selectivity"),
    ("active", "activity: active fraction"),
    ("meanmax", "activity: mean of per-image max"),
    ("ablation", "ablation: top-class accuracy drop"),
    ("loss", "ablation: loss increase"),
)


def _unit_title(atlas: Atlas, layer: Layer, unit: int) -> str:
    parts = [f"{layer.name} unit {unit}"]
    top = _top_classes(layer, unit, atlas.classes)
    if top:
        parts.append(f"top class {atlas.classes[top[0]]}")
    selectivity = _value(layer.get("selectivity"), unit)
    if layer.get("selectivity") is not None:
        parts.append(f"selectivity {format_number(selectivity) if selectivity is not None else 'undefined'}")
    active = _value(layer.get("active_fraction"), unit)
    if active is not None:
        parts.append(f"active on {_percent(active)} of images")
    if not layer.fired[unit].any():
        parts.append("never fired")
    return " · ".join(parts)


def _thumb(atlas: Atlas, layer: Layer, unit: int, page: vizkit.framework.ReportPage) -> str:
    top = _top_classes(layer, unit, atlas.classes)
    fired = bool(layer.fired[unit].any())
    data = {
        "unit": str(unit),
        "selectivity": _data(_value(layer.get("selectivity"), unit)),
        "active": _data(_value(layer.get("active_fraction"), unit)),
        "meanmax": _data(_value(layer.get("mean_max"), unit)),
        "ablation": _data(accuracy_drop(atlas, layer, unit)),
        "loss": _data(loss_increase(atlas, layer, unit)),
        "class": str(top[0]) if top else "",
    }
    attributes = "".join(f' data-{key}="{value}"' for key, value in data.items())
    href = url(page.asset_path(f"atlas/{layer.folder}/{unit}.html"))
    return (
        f'<a class="atlas-unit{"" if fired else " atlas-silent"}" href="{href}" title="{esc(_unit_title(atlas, layer, unit))}"'
        f'{attributes}><span class="atlas-thumb" style="background-position:{_sprite_position(unit, layer.units)}">'
        f"</span><b>{unit}</b></a>"
    )


def _layer_block(atlas: Atlas, layer: Layer, page: vizkit.framework.ReportPage) -> str:
    facts = [f"{layer.units} unit{'s' if layer.units != 1 else ''}"]
    if layer.receptive_field is not None:
        facts.append(
            f"receptive field {layer.receptive_field} px" + (" (linear layer)" if layer.spatial is False else "")
        )
    silent = int((~layer.fired.any(axis=1)).sum())
    if silent:
        facts.append(f"{silent} never fired")
    if atlas.classes and layer.get("selectivity") is None:
        facts.append("no class statistics")
    if layer.get("ablation_loss") is not None or layer.get("ablation_accuracy") is not None:
        facts.append("ablated")
    sprite = url(page.asset_path(f"atlas/{layer.folder}/sprite.png"))
    thumbs = "".join(_thumb(atlas, layer, u, page) for u in range(layer.units))
    return (
        f'<div class="atlas-layer" id="atlas-{page.slug}-{layer.index}" data-layer="{esc(layer.name)}">'
        f"<h4>{esc(layer.name)} <small>{esc(' · '.join(facts))}</small>"
        f' <small class="atlas-shown" data-role="atlas-shown"></small></h4>'
        f'<div class="atlas-grid" style="--atlas-sprite:url(\'{sprite}\')">{thumbs}</div></div>'
    )


def render_index(atlas: Atlas, page: vizkit.framework.ReportPage) -> str:
    """The atlas's section: what it holds, the controls (shown by the script), a block per layer."""
    total = sum(layer.units for layer in atlas.layers)
    k = max((layer.k for layer in atlas.layers), default=0)
    has = {
        "selectivity": any(layer.get("selectivity") is not None for layer in atlas.layers),
        "active": any(layer.get("active_fraction") is not None for layer in atlas.layers),
        "meanmax": any(layer.get("mean_max") is not None for layer in atlas.layers),
        "ablation": any(layer.get("ablation_accuracy") is not None for layer in atlas.layers) and bool(atlas.ablation),
        "loss": any(layer.get("ablation_loss") is not None for layer in atlas.layers) and bool(atlas.ablation),
    }
    sorts = "".join(f'<option value="{key}">{esc(text)}</option>' for key, text in SORTS if has.get(key, True))
    controls = f'<label>sort by <select data-role="atlas-sort">{sorts}</select></label>'
    if atlas.classes:
        options = "".join(f'<option value="{i}">{esc(name)}</option>' for i, name in enumerate(atlas.classes))
        controls += (
            f'<label>top class <select data-role="atlas-class"><option value="">any</option>{options}</select></label>'
        )
    controls += '<span class="atlas-status" data-role="atlas-status"></span>'
    scanned = f" of {atlas.n_images} images" if atlas.n_images is not None else ""
    patch = f", patches of {atlas.patch_size} px" if atlas.patch_size else ""
    contents = ["activity statistics"]
    contents += ["class bars"] if has["selectivity"] else []
    contents += ["ablation effect"] if has["ablation"] or has["loss"] else []
    contents += ["connected units"] if any(layer.get("prev_units") is not None for layer in atlas.layers) else []
    lines = [
        f"Every unit of {len(atlas.layers)} layer{'s' if len(atlas.layers) != 1 else ''}, {total} in all: "
        f"each thumbnail is a unit's strongest image patch (left) and its deconvnet projection (right); it links "
        f"to the unit's page (its top {k}{scanned}{patch}, {', '.join(contents)})."
    ]
    if atlas.ablation:
        ablation = atlas.ablation
        layers = ", ".join(_strings(ablation.get("layers"))) or "none"
        mean = ablation.get("base_accuracy_mean")
        loss = _base_loss(atlas)
        lines.append(
            f"Ablation: each unit of {layers} zeroed in turn on {ablation.get('images', '?')} held-out images "
            f"(without ablation: accuracy {_percent(float(mean)) if is_number(mean) else '—'} in the mean over "
            f"classes, loss {format_number(loss) if loss is not None else '—'})."
        )
    head = f"<h3>Unit atlas <small>{total} units</small></h3>" + "".join(
        f'<p class="atlas-note">{esc(line)}</p>' for line in lines
    )
    toc = " · ".join(f'<a href="#atlas-{page.slug}-{layer.index}">{esc(layer.name)}</a>' for layer in atlas.layers)
    blocks = "".join(_layer_block(atlas, layer, page) for layer in atlas.layers)
    return (
        f'<div class="atlas" data-atlas>{head}<p class="atlas-note">layers: {toc}</p>'
        f'<div class="atlas-controls" hidden>{controls}</div>{blocks}</div>'
    )


# ---------------------------------------------------------------------------------- unit pages
PAGE_CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#d9dee7;--accent:#2f6fdb;--top:#e8590c}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:12px 16px 40px}
a{color:var(--accent)}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:14px;margin-bottom:6px}
h1{font-size:24px;margin:4px 0}h1 small,h2 small{color:var(--muted);font-weight:400;font-size:14px}
h2{font-size:17px;margin:0 0 8px}
.sub{color:var(--muted);margin:0 0 10px;overflow-wrap:anywhere}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:12px 0}
.facts{display:flex;flex-wrap:wrap;gap:6px 22px;margin:0}.facts div{min-width:0}
.facts dt{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}.facts dd{margin:0;font-weight:600}
.legend{color:var(--muted);font-size:13px;margin:0 0 8px}
.ex{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(230px,100%),1fr));gap:10px}
@media (max-width:600px){.ex{grid-template-columns:repeat(auto-fill,minmax(150px,1fr))}}
.ex figure{margin:0;min-width:0}
.ex .pic{display:block;width:100%;background-repeat:no-repeat;image-rendering:pixelated;border:1px solid var(--line)}
.ex figcaption{font-size:13px;overflow-wrap:anywhere}.ex figcaption b{margin-right:4px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(420px,100%),1fr));gap:0 14px}
svg{width:100%;height:auto;display:block}svg text{font:11px system-ui,sans-serif;fill:#475467}
.bars{display:grid;grid-template-columns:minmax(0,max-content) minmax(60px,1fr) auto;gap:3px 8px;align-items:center;font-size:13px}
.bars .label{overflow-wrap:anywhere}.bars .top{font-weight:700;color:var(--top)}.bars .ranked{font-weight:700}
.bars .track{position:relative;height:12px;background:#eef1f5;border-radius:2px}
.bars .track i{position:absolute;top:0;bottom:0;background:var(--accent);border-radius:2px}
.bars .top+.track i{background:var(--top)}.bars .zero{position:absolute;top:-2px;bottom:-2px;width:1px;background:#475467}
.bars .num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:var(--muted);font-size:14px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid var(--line);text-align:right}
td:first-child,th:first-child{text-align:left}tr.top td{font-weight:700;color:var(--top)}
.conns{display:flex;flex-wrap:wrap;gap:8px}
.conn{display:flex;flex-direction:column;align-items:flex-start;font-size:13px;text-decoration:none;color:var(--fg);
 border:1px solid var(--line);border-radius:6px;padding:4px;background:#fff}
.conn:hover,.conn:focus{border-color:var(--accent)}
.th{display:block;width:97px;height:48px;background-repeat:no-repeat}
.th.silent{background:#eceef2}
.fvs{display:flex;flex-wrap:wrap;gap:12px}.fv{margin:0;width:194px;max-width:100%}
.fv img{display:block;width:192px;max-width:100%;height:auto;border:1px solid var(--line)}.fv figcaption{font-size:13px;color:var(--muted)}
"""


def _relative(layer: Layer, unit: int, here: Layer | None = None) -> str:
    """The path of a unit's page relative to a unit page (``here``'s layer folder, or its own)."""
    if here is not None and here.folder == layer.folder:
        return url(f"{unit}.html")
    return url("..", layer.folder, f"{unit}.html")


def _exemplars(atlas: Atlas, layer: Layer, unit: int) -> str:
    fired = layer.fired[unit]
    k = layer.k
    strip = url(f"{unit}.png")
    aspect = f"aspect-ratio:{2 * layer.patch + GAP}/{layer.patch}" if layer.patch else "aspect-ratio:2/1"
    cards = []
    for slot in np.flatnonzero(fired):
        image = int(layer.top_images[unit, slot])
        path = atlas.images[image] if 0 <= image < len(atlas.images) else f"image {image}"
        position = f"{100 * slot / (k - 1):.4f}%" if k > 1 else "0"
        cards.append(
            f'<figure><span class="pic" role="img" aria-label="exemplar {slot + 1}: patch and projection" '
            f"style=\"{aspect};background-image:url('{strip}');background-size:{100 * k}% 100%;"
            f'background-position:{position} 0"></span>'
            f"<figcaption><b>#{slot + 1}</b>activation {esc(format_number(_clean(layer.top_values[unit, slot])))} · "
            f'<span title="{esc(path)}">{esc(Path(path).name or path)}</span></figcaption></figure>'
        )
    count = int(fired.sum())
    if not count:
        return (
            '<section><h2>Exemplars</h2><p class="note">none: no image of the scan activated this unit '
            f"(all {k} slots are empty)</p></section>"
        )
    short = (
        f'<p class="note">{k - count} of the {k} slots are empty: no further image of the scan activated this unit</p>'
        if count < k
        else ""
    )
    return (
        f"<section><h2>Exemplars <small>the {count} image{'s' if count != 1 else ''} of the scan that activated it most"
        "</small></h2>"
        f'<p class="legend">each: the image patch under the unit\'s receptive field (left) and the deconvnet projection '
        f'of the unit\'s activation in it (right; grey is zero) · <a href="{strip}">all in one picture</a></p>'
        f'<div class="ex">{"".join(cards)}</div>{short}</section>'
    )


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (multiples of 1, 2 or 5 times a power of ten) from ``lo`` to
    ``hi``, the ends themselves where fewer than two round values fall between them."""
    span = hi - lo
    if not span > 0 or not math.isfinite(span):
        return [lo]
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = [n * step for n in range(first, math.floor(hi / step + 1e-9) + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks] if len(ticks) >= 2 else [lo, hi]


def histogram_svg(edges: np.ndarray, counts: np.ndarray, marker: float | None = None) -> str:
    """An SVG bar chart of a histogram (``edges`` [B+1], ``counts`` [B]), empty bins at both ends
    left out, with the value axis and the count axis labelled; ``marker``: a value marked on the
    value axis (the mean of the per-image maxima)."""
    counts = np.asarray(counts, dtype=np.int64)
    edges = np.asarray(edges, dtype=np.float64)
    used = np.flatnonzero(counts > 0)
    if not len(used) or len(edges) != len(counts) + 1 or not np.isfinite(edges).all():
        return '<p class="note">no histogram: no image was scanned</p>'
    first, last = int(used[0]), int(used[-1])
    lo, hi = float(edges[first]), float(edges[last + 1])
    if hi <= lo:
        hi = lo + 1.0
    top = int(counts[first : last + 1].max())
    width, height, left, right, upper, lower = 420, 180, 44, 12, 20, 40
    plot_w, plot_h = width - left - right, height - upper - lower
    x = lambda v: left + (v - lo) / (hi - lo) * plot_w
    y = lambda c: upper + plot_h - max(c / top * plot_h, 1.5)  # a bar of one image still shows
    bars = []
    for b in range(first, last + 1):
        if counts[b] <= 0:
            continue
        x0, x1 = x(edges[b]), x(edges[b + 1])
        bars.append(
            f'<rect x="{x0:.2f}" y="{y(counts[b]):.2f}" width="{max(0.8, x1 - x0 - 0.6):.2f}" '
            f'height="{plot_h + upper - y(counts[b]):.2f}" fill="#2f6fdb"><title>{esc(format_number(edges[b]))} to '
            f"{esc(format_number(edges[b + 1]))}: {int(counts[b])} images</title></rect>"
        )
    axis_y = upper + plot_h
    labels = []
    for value in nice_ticks(lo, hi):
        anchor = "start" if x(value) < left + 12 else "end" if x(value) > left + plot_w - 12 else "middle"
        labels.append(
            f'<line x1="{x(value):.2f}" x2="{x(value):.2f}" y1="{axis_y}" y2="{axis_y + 4}" stroke="#475467"/>'
            f'<text x="{x(value):.2f}" y="{axis_y + 16}" text-anchor="{anchor}">{esc(format_number(value))}</text>'
        )
    if marker is not None and lo <= marker <= hi:
        at = x(marker)  # the label above the plot, beside its line, on the side with room
        anchor, dx = ("start", -2) if at < left + plot_w * 0.6 else ("end", 2)
        labels.append(
            f'<line x1="{at:.2f}" x2="{at:.2f}" y1="{upper - 6}" y2="{axis_y}" stroke="#e8590c" stroke-dasharray="4 3"/>'
            f'<text x="{at + dx:.2f}" y="{upper - 9}" fill="#e8590c" text-anchor="{anchor}">'
            f"mean {esc(format_number(marker))}</text>"
        )
    return (
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="histogram of the per-image maxima">'
        f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#475467"/>'
        f'<line x1="{left}" x2="{left}" y1="{upper}" y2="{axis_y}" stroke="#475467"/>'
        f'<text x="{left - 4}" y="{upper + 8}" text-anchor="end">{top}</text>'
        f'<text x="{left - 4}" y="{axis_y}" text-anchor="end">0</text>'
        f'<text x="12" y="{upper + plot_h / 2:.1f}" text-anchor="middle" transform="rotate(-90 12 {upper + plot_h / 2:.1f})">images</text>'
        f"{''.join(bars)}{''.join(labels)}"
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">the unit\'s maximum over an image</text>'
        "</svg>"
    )


def _statistics(layer: Layer, unit: int) -> str:
    edges, counts = layer.get("hist_edges"), layer.get("hist_counts")
    mean_max = _value(layer.get("mean_max"), unit)
    picture = (
        histogram_svg(edges[unit], counts[unit], mean_max)
        if edges is not None and counts is not None
        else '<p class="note">no histogram in this result</p>'
    )
    return (
        f"<section><h2>Activity <small>how strongly it responds over the scanned images</small></h2>{picture}</section>"
    )


def class_bars(values: np.ndarray, labels: list[str], top: list[int], limit: int = CLASS_BARS) -> str:
    """Bars of a unit's per-class values (``values`` [C], NaN: no images of the class), the
    ``top`` classes marked; every class when there are at most ``limit`` of them (in class
    order), else the ``limit`` strongest (strongest first), said in a note."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return '<p class="note">no class had images</p>'
    lo, hi = min(0.0, float(finite.min())), max(0.0, float(finite.max()))
    span = (hi - lo) or 1.0
    zero = -lo / span * 100
    order = list(range(len(values)))
    note = ""
    if len(values) > limit:
        order = sorted(order, key=lambda c: -values[c] if math.isfinite(values[c]) else math.inf)[:limit]
        note = f'<p class="note">the {limit} highest of {len(values)} classes (arrays.npz holds them all)</p>'
    rows = []
    for c in order:
        v = float(values[c])
        rank = top.index(c) + 1 if c in top else 0
        label = esc(labels[c]) + (f" <small>#{rank}</small>" if rank else "")
        if math.isfinite(v):
            start, size = (zero, v / span * 100) if v >= 0 else (zero + v / span * 100, -v / span * 100)
            bar = f'<i style="left:{start:.2f}%;width:{size:.2f}%"></i>'
            number = esc(format_number(_clean(v)))
        else:
            bar, number = "", "no images"
        marker = f'<span class="zero" style="left:{zero:.2f}%"></span>' if lo < 0 else ""
        rows.append(
            f'<span class="label{" top" if rank == 1 else " ranked" if rank else ""}">{label}</span>'
            f'<span class="track">{bar}{marker}</span>'
            f'<span class="num">{number}</span>'
        )
    return f'{note}<div class="bars">{"".join(rows)}</div>'


def _classes(atlas: Atlas, layer: Layer, unit: int) -> str:
    class_mean = layer.get("class_mean")
    if not atlas.classes:
        return ""
    if class_mean is None:
        return '<section><h2>Classes</h2><p class="note">this result holds no class statistics for this layer</p></section>'
    top = _top_classes(layer, unit, atlas.classes)
    selectivity = _value(layer.get("selectivity"), unit)
    tops = ", ".join(esc(atlas.classes[c]) for c in top) or "—"
    return (
        "<section><h2>Classes <small>mean of the per-image maximum over each class's images</small></h2>"
        f'<p class="legend">top classes: {tops} · class selectivity '
        f"<b>{esc(format_number(selectivity)) if selectivity is not None else 'undefined'}</b> "
        "(μ<sub>max</sub> − μ<sub>rest</sub>) / (μ<sub>max</sub> + μ<sub>rest</sub>): 0 alike for every class, "
        "1 only one class</p>"
        f"{class_bars(class_mean[unit], atlas.classes, top)}</section>"
    )


def _ablation(atlas: Atlas, layer: Layer, unit: int) -> str:
    ablated, loss = layer.get("ablation_accuracy"), layer.get("ablation_loss")
    if not atlas.ablation:
        return '<section><h2>Ablation</h2><p class="note">not measured: run the atlas with --ablation N</p></section>'
    if ablated is None and loss is None:
        return '<section><h2>Ablation</h2><p class="note">this layer was not ablated in this run</p></section>'
    base = _base_accuracy(atlas)
    top = _top_classes(layer, unit, atlas.classes)
    parts = []
    base_loss, after_loss = _base_loss(atlas), _value(loss, unit)
    if after_loss is not None:
        parts.append(
            f"loss {esc(format_number(base_loss)) if base_loss is not None else '—'} → "
            f"{esc(format_number(after_loss))} ({esc(_signed(loss_increase(atlas, layer, unit)))})"
        )
    drop = accuracy_drop(atlas, layer, unit)
    if drop is not None:
        parts.append(f"top class {esc(atlas.classes[top[0]])}: accuracy {esc(_signed(-drop, percent=True))}")
    table = ""
    if ablated is not None and atlas.ablation_classes:
        marked = {atlas.ablation_column[c] for c in top[:1] if c in atlas.ablation_column}
        rows = []
        changes = []
        for c, label in enumerate(atlas.ablation_classes):
            before = base[c] if c < len(base) else None
            after = _value(ablated, unit, c)
            change = after - before if after is not None and before is not None else None
            if change is not None:
                changes.append((change, c))
            rows.append(
                f"<tr{' class=top' if c in marked else ''}><td>{esc(label)}</td><td>{_percent(before)}</td>"
                f"<td>{_percent(after)}</td><td>{esc(_signed(change, percent=True))}</td></tr>"
            )
        if changes and min(changes)[0] < 0:
            worst = min(changes)
            parts.append(
                f"largest drop: {esc(atlas.ablation_classes[worst[1]])} {esc(_signed(worst[0], percent=True))}"
            )
        table = (
            f"<details{' open' if len(atlas.ablation_classes) <= FOLD_CLASSES else ''}><summary>accuracy per class"
            f"{' (the top class marked)' if marked else ''}</summary>"
            '<div class="scroll"><table><tr><th>class</th><th>base</th><th>unit zeroed</th><th>change</th></tr>'
            f"{''.join(rows)}</table></div></details>"
        )
    images = atlas.ablation.get("images")
    return (
        f"<section><h2>Ablation <small>the unit's map zeroed on {esc(images if images is not None else '?')} "
        f"held-out images</small></h2><p>{' · '.join(parts) or 'no values for this unit'}</p>{table}</section>"
    )


def _connection_list(atlas: Atlas, layer: Layer, unit: int, direction: str) -> str:
    record = (atlas.connections.get(layer.name) or {}).get(direction) if isinstance(atlas.connections, dict) else None
    units, strength = layer.get(f"{direction}_units"), layer.get(f"{direction}_strength")
    other = atlas.layer(str(record.get("layer"))) if isinstance(record, dict) else None
    if other is None:
        index = layer.index + (-1 if direction == "prev" else 1)
        other = atlas.layers[index] if 0 <= index < len(atlas.layers) and units is not None else None
    word = "previous" if direction == "prev" else "next"
    if other is None or units is None:
        return f'<p class="note">no {word} layer in this atlas</p>' if other is None else ""
    kind = str(record.get("kind")) if isinstance(record, dict) else ""
    how = {
        "weights": "by the L2 norm of the weights connecting them",
        "correlation": "by the correlation (Pearson r) of their per-image maxima",
    }.get(kind, "by strength")
    sprite = url("..", other.folder, "sprite.png")
    links = []
    for slot, v in enumerate(units[unit]):
        v = int(v)
        if not 0 <= v < other.units:
            continue
        value = _value(strength, unit, slot) if strength is not None else None
        fired = bool(other.fired[v].any())
        style = (
            f" style=\"background-image:url('{sprite}');background-position:{_sprite_position(v, other.units)}\""
            if fired
            else ""
        )
        links.append(
            f'<a class="conn" href="{_relative(other, v)}" title="{esc(_unit_title(atlas, other, v))}">'
            f'<span class="th{"" if fired else " silent"}"{style}></span>'
            f"<span>unit {v}</span><span>{kind or 'strength'} {esc(format_number(value)) if value is not None else '—'}</span></a>"
        )
    return (
        f"<h3>{word.capitalize()} layer, {esc(other.name)} <small>{esc(how)}, strongest first</small></h3>"
        f'<div class="conns">{"".join(links) or "<span class=note>none</span>"}</div>'
    )


def _connections(atlas: Atlas, layer: Layer, unit: int) -> str:
    return (
        "<section><h2>Connected units</h2>"
        f"{_connection_list(atlas, layer, unit, 'prev')}{_connection_list(atlas, layer, unit, 'next')}</section>"
    )


@dataclass
class Pictures:
    """A featvis result's picture of one unit, for its atlas page (issue 29)."""

    src: str  # relative to the report's folder
    record: dict[str, Any]  # the unit's entry of the result's per_unit
    how: str  # the objective and parametrisation, for the caption
    digest: str  # of the featvis result.json: the pages are rewritten when it changes


def featvis_pictures(page: vizkit.framework.ReportPage, layer: str) -> dict[int, list[Pictures]]:
    """Per unit of ``layer``, the pictures featvis results in the report made of it with the same
    model (read from their result.json and ``units/<unit>.png``; featvis's own code not needed)."""
    model = _dict(page.document.get("model"))
    found: dict[int, list[Pictures]] = {}
    root = page.root.resolve()
    for folder, document in page.related("featvis"):
        theirs = _dict(document.get("model"))
        if theirs.get("spec") != model.get("spec") or theirs.get("weights_sha256") != model.get("weights_sha256"):
            continue
        if document.get("layer") != layer or not isinstance(document.get("per_unit"), list):
            continue
        listed = set(_strings(_dict(document.get("files")).get("pictures")))
        relative = folder.resolve().relative_to(root).as_posix()
        how = f"{document.get('objective')} objective, {document.get('param')} parametrisation, {document.get('steps')} steps"
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        for record in document["per_unit"]:
            unit = record.get("unit") if isinstance(record, dict) else None
            if isinstance(unit, int) and f"units/{unit}.png" in listed:
                src = "/".join(p for p in (relative, "units", f"{unit}.png") if p and p != ".")
                found.setdefault(unit, []).append(Pictures(src, record, how, digest))
    return found


def _featvis(pictures: list[Pictures]) -> str:
    if not pictures:
        return ""
    figures = []
    for picture in pictures:
        record = picture.record
        ratio = (record.get("ratio") or [None])[0] if isinstance(record.get("ratio"), list) else None
        rank = (record.get("rank") or [None])[0] if isinstance(record.get("rank"), list) else None
        facts = []
        if isinstance(ratio, (int, float)):
            facts.append(f"reaches {format_number(ratio)}x the best natural exemplar")
        if isinstance(rank, int):
            facts.append(f"rank {rank} among the layer's units on it")
        src = url("..", "..", "..", "..", *picture.src.split("/"))
        figures.append(
            f'<figure class="fv"><img src="{src}" alt="synthetic picture"><figcaption>{esc(picture.how)}'
            f"{'<br>' + esc(' · '.join(facts)) if facts else ''}</figcaption></figure>"
        )
    return (
        "<section><h2>Feature visualization <small>the image optimised to drive this unit (featvis); "
        "trust it as far as the natural exemplars above agree</small></h2>"
        f'<div class="fvs">{"".join(figures)}</div></section>'
    )


def unit_page(
    atlas: Atlas, layer: Layer, unit: int, slug: str, model: str, pictures: list[Pictures] | None = None
) -> str:
    """The whole static page of a unit (written at ``atlas/<layer>/<unit>.html`` in the assets)."""
    back = url("..", "..", "..", "..", "index.html")
    nav = [
        f'<a href="{back}#res-{slug}">← report</a>',
        f'<a href="{back}#atlas-{slug}-{layer.index}">all {layer.units} units of {esc(layer.name)}</a>',
    ]
    if unit > 0:
        nav.append(f'<a href="{_relative(layer, unit - 1, layer)}" rel="prev">‹ unit {unit - 1}</a>')
    if unit < layer.units - 1:
        nav.append(f'<a href="{_relative(layer, unit + 1, layer)}" rel="next">unit {unit + 1} ›</a>')
    facts: list[tuple[str, str]] = []
    top = _top_classes(layer, unit, atlas.classes)
    if top:
        facts.append(("top class", atlas.classes[top[0]]))
    if layer.get("selectivity") is not None:
        selectivity = _value(layer.get("selectivity"), unit)
        facts.append(("selectivity", format_number(selectivity) if selectivity is not None else "undefined"))
    for key, text, percent in (
        ("mean_max", "mean of per-image max", False),
        ("active_fraction", "active on", True),
        ("mean", "mean activation", False),
    ):
        value = _value(layer.get(key), unit)
        if layer.get(key) is not None:
            facts.append(
                (
                    text,
                    (f"{_percent(value)} of images" if percent else format_number(value)) if value is not None else "—",
                )
            )
    if layer.receptive_field is not None:
        facts.append(("receptive field", f"{layer.receptive_field} px"))
    drop = accuracy_drop(atlas, layer, unit)
    if drop is not None:
        facts.append(("zeroed: top-class accuracy", _signed(-drop, percent=True)))
    dl = "".join(f"<div><dt>{esc(name)}</dt><dd>{esc(value)}</dd></div>" for name, value in facts)
    title = f"{layer.name} unit {unit}"
    scanned = f"{atlas.n_images} images" if atlas.n_images is not None else "the scanned images"
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>"
        f"<title>{esc(title)}</title><style>{PAGE_CSS}</style></head><body><main>"
        f"<nav>{''.join(nav)}</nav><h1>{esc(title)}</h1>"
        f'<p class="sub">unit atlas of {esc(model or "a model")} over {esc(scanned)}</p>'
        f'<dl class="facts">{dl}</dl>'
        f"{_exemplars(atlas, layer, unit)}{_featvis(pictures or [])}"
        f'<div class="cols">{_statistics(layer, unit)}{_classes(atlas, layer, unit)}</div>'
        f"{_ablation(atlas, layer, unit)}{_connections(atlas, layer, unit)}"
        "</main></body></html>\n"
    )


# ---------------------------------------------------------------------------------- the view
def _source_key(arrays: Path) -> dict[str, int | str]:
    stat = arrays.stat()
    return {
        "view": NAME,
        "version": ASSET_VERSION,
        "arrays": str(arrays.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _manifest(page: vizkit.framework.ReportPage) -> dict[str, Any]:
    try:
        value = json.loads(page.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _model_name(document: dict[str, Any]) -> str:
    model = document.get("model")
    return str(model.get("spec") or "") if isinstance(model, dict) else ""


def build(page: vizkit.framework.ReportPage) -> Atlas:
    """Draw (or reuse) every layer's pictures and write (or keep) every unit's page in the
    result's asset folder; the atlas as read.

    Args:
        page: the atlas result as the report gives it to its view.
    """
    arrays = _arrays_file(page)
    atlas = read_atlas(page.document, arrays)
    key = _source_key(arrays)
    cached = page.reuse_assets(key)
    root = page.assets / "atlas"
    drawn = False
    for layer in atlas.layers:
        folder = root / layer.folder
        complete = (folder / "sprite.png").is_file() and all(
            (folder / f"{u}.png").is_file() for u in range(layer.units)
        )
        if not (cached and complete):
            draw_layer(arrays, layer, folder)
            drawn = True
    synthetic = {layer.name: featvis_pictures(page, layer.name) for layer in atlas.layers}
    pages = {
        "slug": page.slug,
        "version": PAGE_VERSION,
        "featvis": sorted({f"{p.src} {p.digest}" for found in synthetic.values() for ps in found.values() for p in ps}),
    }
    written = cached and not drawn and _manifest(page).get("pages") == pages
    if written:
        written = all(
            (root / layer.folder / f"{u}.html").is_file() for layer in atlas.layers for u in range(layer.units)
        )
    if not written:
        model = _model_name(page.document)
        for layer in atlas.layers:
            for u in range(layer.units):
                html = unit_page(atlas, layer, u, page.slug, model, synthetic[layer.name].get(u))
                _replace(root / layer.folder / f"{u}.html", html.encode())
    if drawn or not written or not cached:
        page.save_manifest(key, pages=pages, units=sum(layer.units for layer in atlas.layers))
    return atlas


SHOWN = {
    "layers",
    "units",
    "spatial",
    "receptive_field",
    "images",
    "classes",
    "class_labels",
    "k",
    "n_images",
    "connections",
    "ablation",
    "patch_size",
}


def render(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """The atlas index (the pages and pictures written into the assets); the summary keys it shows."""
    try:
        atlas = build(page)
    except (OSError, ValueError) as error:
        return f'<p class="note">Unit atlas unavailable: {esc(error)}</p>', set()
    return render_index(atlas, page), set(SHOWN)


def report_view() -> vizkit.ReportView:
    """atlas's view, with the index's style sheet and script (package data beside this module)."""
    here = resources.files(__package__ or "vizkit_plugins.atlas")
    return vizkit.ReportView(
        render,
        css=here.joinpath("atlas.css").read_text(encoding="utf-8"),
        js=here.joinpath("atlas.js").read_text(encoding="utf-8"),
        paper="",
        paper_order=None,
        key_figure="atlas*",
    )
