"""Figure helpers shared by analyses: matplotlib Figures built without pyplot's global state.

Every figure is a :class:`matplotlib.figure.Figure` attached to its own Agg canvas, so no
display is needed and nothing switches the backend of the program that imports vizkit (a
notebook keeps its inline or widget backend).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from torch import Tensor

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: it slows every start-up
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec
    from matplotlib.text import Text


def hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """A [3,H,W] tensor or array in [0, 1] as an [H,W,3] float array for imshow.

    Args:
        image: a [3,H,W] or [1,H,W] (greyscale, repeated to RGB) tensor or array, or one already
            [H,W,3]; values outside [0, 1] are clipped.
    """
    array = image.detach().float().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array, 0.0, 1.0)


MAX_FIGURE_INCHES = 20.0
"""The largest side, in inches, of the figures vizkit's own analyses draw (2000 px at the
default 100 dpi): a figure that would be larger pages or shrinks instead of producing a PNG of
thousands of pixels whose tiles no one can read."""


def capped_size(width: float, height: float, max_side: float = MAX_FIGURE_INCHES) -> tuple[float, float]:
    """``width`` x ``height`` scaled down (keeping the aspect ratio) so that neither side
    exceeds ``max_side``; sizes already within it are returned unchanged."""
    scale = min(1.0, max_side / width, max_side / height)
    return width * scale, height * scale


def new_figure(width: float, height: float, dpi: int = 100, max_side: float | None = None) -> Figure:
    """A ``width`` x ``height`` inch figure on its own Agg canvas (not registered with pyplot,
    so it needs no closing and is freed with its last reference).

    Args:
        width: the figure's width in inches.
        height: the figure's height in inches.
        dpi: dots per inch, which sets the saved PNG's pixel size.
        max_side: if given, the size is scaled down (aspect kept) so that neither side exceeds
            this many inches (e.g. :data:`MAX_FIGURE_INCHES`), a safety net against huge PNGs.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if max_side is not None:
        width, height = capped_size(width, height, max_side)
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def tile_mosaic(
    tiles: np.ndarray, rows: int, gap: int = 2, fill: float = 1.0, columns: int | None = None
) -> np.ndarray:
    """[n, P, P, 3] tiles in [0,1] as one image of ``rows`` x ceil(n/rows) tiles, row by row,
    with ``fill``-coloured gaps (Fig. 2 tile blocks, Fig. 4 map x epoch grids).

    Args:
        tiles: the [n, P, P, 3] square tiles, values in [0, 1].
        rows: how many rows of tiles the mosaic has.
        gap: the gap between neighbouring tiles, in pixels.
        fill: the grey level of the gaps and of unused cells (1.0: white).
        columns: how many columns; None: just enough for the tiles (ceil(n/rows)). Give it to
            keep one grid shape for blocks with fewer tiles (the empty cells are ``fill``).
    """
    n, size = tiles.shape[0], tiles.shape[1]
    if columns is None:
        columns = max(1, math.ceil(max(n, 1) / rows))
    elif rows * columns < n:
        raise ValueError(f"a {rows} x {columns} mosaic cannot hold {n} tiles")
    canvas = np.full((rows * size + (rows - 1) * gap, columns * size + (columns - 1) * gap, 3), fill, dtype=np.float32)
    for index in range(n):
        r, c = divmod(index, columns)
        canvas[r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size] = tiles[index]
    return canvas


def show(ax: Axes, image: Tensor | np.ndarray, title: str | None = None, fontsize: int = 8) -> None:
    """Draw an image on ``ax`` pixel for pixel (no smoothing, no ticks), as every figure's panels are.

    Args:
        ax: the axes to draw on.
        image: a [3,H,W] tensor or array in [0, 1] (anything :func:`hwc` accepts).
        title: the panel's title; None or empty: no title.
        fontsize: the title's font size, in points.
    """
    ax.imshow(hwc(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def shorten(text: str, width: int = 28) -> str:
    """``text`` in at most ``width`` characters, its middle replaced by an ellipsis, cut at word
    boundaries (spaces, underscores, hyphens) so that no word is left half:
    ``shorten("n02085782_Japanese_spaniel", 18) == "n02085782…spaniel"``. A file name keeps its
    extension with the tail. Where whole words would keep less than half of ``width`` (one very
    long word), the cut falls inside words instead, keeping the start and the end.

    Args:
        text: the label, e.g. an image's file name or a class name.
        width: the most characters kept, the ellipsis included (at least 5).
    """
    if len(text) <= width:
        return text
    width = max(width, 5)
    room = width - 1  # characters of text beside the ellipsis
    cuts = [i for i, char in enumerate(text) if char in _WORD_BREAKS]
    best: tuple[int, int, int, int] | None = None  # (both ends kept, kept, balance, head end): larger is better
    heads = [0, *cuts]  # a head ends before a break (0: no head)
    tails = [*(c + 1 for c in cuts), len(text)]  # a tail starts after a break (len: no tail)
    for end in heads:
        for start in tails:
            kept = end + len(text) - start
            if start <= end or kept > room or kept == 0:
                continue
            key = (int(end > 0 and start < len(text)), kept, -abs(end - (len(text) - start)), end)
            if best is None or key > best:
                best = key
    if best is not None and best[1] >= room / 2:
        end = best[3]
        start = len(text) - (best[1] - end)
        return text[:end].rstrip(_WORD_BREAKS) + "…" + text[start:].lstrip(_WORD_BREAKS)
    tail = room // 2
    return text[: room - tail] + "…" + text[len(text) - tail :]


_WORD_BREAKS = " _-"


def grid_shape(count: int, max_columns: int | None = None) -> tuple[int, int]:
    """Rows and columns of a near-square grid holding ``count`` panels (ceil(sqrt(count))
    columns, at most ``max_columns``)."""
    columns = max(1, math.ceil(math.sqrt(count)))
    if max_columns:
        columns = min(columns, max_columns)
    return max(1, math.ceil(count / columns)), columns


def overlapping_texts(figure: Figure, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """The pairs of visible, non-empty texts of ``figure`` whose rendered extents overlap by
    more than ``tolerance`` square pixels, measured with the figure's own renderer (titles,
    tick labels, annotations and tags alike): empty when no label covers another.

    Args:
        figure: a figure on an Agg canvas (e.g. from :func:`new_figure`); it is drawn once so
            that every position is final.
        tolerance: overlap area, in square pixels, still accepted (anti-aliased edges touch).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    from matplotlib.axes import Axes as AxesType

    undrawn: set[int] = set()  # labels of ticks outside their axis's view: matplotlib keeps but never draws them
    for ax in figure.findobj(AxesType):
        assert isinstance(ax, AxesType)
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = (high - low) * 1e-9
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - slack <= tick.get_loc() <= high + slack:
                    undrawn.update((id(tick.label1), id(tick.label2)))
    texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]
    extents = [t.get_window_extent(renderer) for t in texts]
    found = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            a, b = extents[i], extents[j]
            width = min(a.x1, b.x1) - max(a.x0, b.x0)
            height = min(a.y1, b.y1) - max(a.y0, b.y0)
            if width > 0 and height > 0 and width * height > tolerance:
                found.append((texts[i].get_text(), texts[j].get_text()))
    return found


def _draw_box(ax: Axes, box: Sequence[int], colour: str, linestyle: str = "-") -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box
    ax.add_patch(
        Rectangle(
            (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.2, linestyle=linestyle
        )
    )


def _tag_anchors(
    left: float, top: float, right: float, bottom: float, width: float, height: float
) -> list[tuple[float, float]]:
    """Top-left corners (display pixels, y up) for a ``width`` x ``height`` tag inside a box,
    in order of preference: its top-left corner, then along the top edge, down the left edge,
    down the right edge and along the bottom edge."""
    step_x, step_y = width + 3, height + 3
    inner_right = right - width - 1
    anchors = [(left + 1, top - 1)]
    x = left + 1 + step_x
    while x <= inner_right:
        anchors.append((x, top - 1))
        x += step_x
    y = top - 1 - step_y
    while y - height >= bottom:
        anchors.append((left + 1, y))
        y -= step_y
    y = top - 1
    while y - height >= bottom:
        anchors.append((inner_right, y))
        y -= step_y
    x = left + 1
    while x <= inner_right:
        anchors.append((x, bottom + height + 1))
        x += step_x
    return anchors


def place_box_tags(
    ax: Axes, boxes: Sequence[Sequence[int]], labels: Sequence[str], colours: Sequence[str], fontsize: float = 7
) -> list[Text | None]:
    """Draw one coloured tag per box on an image panel so that no two tags overlap.

    Each tag goes to the first free spot inside its own box (top-left corner first, then along
    the box's edges), measured with the figure's renderer; boxes that share a corner (e.g.
    several receptive fields clipped at the image border) thus get tags side by side instead
    of stacked on one another. A tag with no free spot inside its box and the panel is left out
    (None in the returned list): the box keeps its colour, which the caller's titles repeat.
    Call it after the figure's layout is final (axes added, no later ``tight_layout``).

    Args:
        ax: the image panel the boxes are drawn on (data coordinates = image pixels).
        boxes: one (x0, y0, x1, y1) box per tag, exclusive ends, in image pixels.
        labels: the text of each tag.
        colours: each tag's background colour (its box's colour).
        fontsize: the tags' font size, in points.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = ax.get_figure(root=True)
    if not isinstance(figure, Figure):
        raise ValueError("the axes must belong to a figure")
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    renderer = canvas.get_renderer()
    ax.apply_aspect()
    panel = ax.get_window_extent(renderer)
    to_data = ax.transData.inverted()
    placed: list = []
    tags: list[Text | None] = []
    for box, label, colour in zip(boxes, labels, colours):
        tag = ax.text(
            0,
            0,
            label,
            color="white",
            fontsize=fontsize,
            ha="left",
            va="top",
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8},
            clip_on=False,
        )
        x0, y0, x1, y1 = box
        (left, top), (right, bottom) = ax.transData.transform([(x0 - 0.5, y0 - 0.5), (x1 - 0.5, y1 - 0.5)])
        left, right = sorted((left, right))
        bottom, top = sorted((bottom, top))
        tag.set_position(tuple(to_data.transform((left + 1, top - 1))))
        size = tag.get_window_extent(renderer)
        chosen = None
        for anchor in _tag_anchors(left, top, right, bottom, size.width + 2, size.height + 2):
            tag.set_position(tuple(to_data.transform(anchor)))
            extent = tag.get_window_extent(renderer).padded(1.5)
            inside = (
                extent.x0 >= panel.x0 - 0.5
                and extent.x1 <= panel.x1 + 0.5
                and extent.y0 >= panel.y0 - 0.5
                and extent.y1 <= panel.y1 + 0.5
            )
            if inside and not any(extent.overlaps(other) for other in placed):
                chosen = extent
                break
        if chosen is None:
            tag.remove()
            tags.append(None)
            continue
        placed.append(chosen)
        tags.append(tag)
    return tags


BOX_COLOURS = (
    "tab:red",
    "tab:blue",
    "tab:green",
    "tab:orange",
    "tab:purple",
    "tab:cyan",
    "tab:pink",
    "tab:olive",
    "tab:brown",
    "tab:gray",
)

LABEL_COLOURS = (
    "#AA4499",  # purple
    "#DDCC77",  # sand
    "#117733",  # green
    "#88CCEE",  # cyan
    "#CC6677",  # rose
    "#332288",  # indigo
    "#44AA99",  # teal
    "#882255",  # wine
    "#999933",  # olive
)
"""The colours of class labels (occlusion's top-label map, invariance's top-1 bands) and of other
named series (attribution's methods, invariance's images), in this order: Paul Tol's
colour-blind-safe 'muted' scheme, all nine colours, ordered so that neighbours differ in hue and in
lightness. Neighbours are at least 26.9 apart in CIEDE2000 with normal vision (39) and under
simulated deuteranopia (the least), protanopia and tritanopia (Machado et al. 2009), and at least
18.5 apart in CIELAB lightness L* (normal vision, deuteranopia, protanopia);
``tests/test_palette.py`` checks it. matplotlib's tab20, used before, paired each colour with its
own lighter tint (neighbours 12 apart with normal vision, 8.7 under protanopia, 1.9 in L*); tab10's
neighbours are 1.3 apart under protanopia."""

OTHER_COLOUR = "#DDDDDD"
"""The colour the classes beyond :data:`LABEL_COLOURS` share (Tol's pale grey): legends name it
"other (n labels)"."""


def label_colours(count: int) -> list[str]:
    """Colours for ``count`` classes ranked most important (e.g. most frequent) first: the first
    ``len(LABEL_COLOURS)`` take :data:`LABEL_COLOURS` in order; the rest share
    :data:`OTHER_COLOUR` (more hues could not be told apart, least of all by colour-blind readers),
    which a legend names "other" (:class:`LabelKey` does both)."""
    return [LABEL_COLOURS[k] if k < len(LABEL_COLOURS) else OTHER_COLOUR for k in range(max(0, count))]


def text_colour(colour: Any) -> str:
    """``"black"`` or ``"white"``, whichever contrasts more with ``colour`` (WCAG relative
    luminance): the colour of text written on a coloured band or tag."""
    from matplotlib.colors import to_rgb

    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


@dataclass(frozen=True)
class LabelKey:
    """The colours of the class labels an array of labels holds, most frequent first
    (:func:`label_key`): what an image of the labels (``codes`` with ``imshow_args``) and its
    legend (``legend_handles``: every colour shown, the shared grey as "other") need."""

    labels: tuple[int, ...]  # the distinct labels, most frequent first (ties: smaller label first)
    counts: tuple[int, ...]  # how often each occurs
    colours: tuple[str, ...]  # each label's colour (:func:`label_colours`)

    @property
    def other(self) -> int:
        """How many labels share :data:`OTHER_COLOUR`."""
        return max(0, len(self.labels) - len(LABEL_COLOURS))

    def colour(self, label: int) -> str:
        """The colour of ``label``."""
        return self.colours[self.labels.index(int(label))]

    def codes(self, values: np.ndarray) -> np.ndarray:
        """``values`` (labels) as indices into ``colours``, for ``imshow(codes, **imshow_args())``."""
        lookup = {label: k for k, label in enumerate(self.labels)}
        flat = np.asarray(values).ravel()
        return np.array([lookup[int(v)] for v in flat], dtype=np.int64).reshape(np.shape(values))

    def imshow_args(self) -> dict[str, Any]:
        """``cmap``, ``vmin`` and ``vmax`` that draw :meth:`codes` in their colours."""
        from matplotlib.colors import ListedColormap

        return {
            "cmap": ListedColormap(list(self.colours) or [OTHER_COLOUR]),
            "vmin": -0.5,
            "vmax": max(1, len(self.labels)) - 0.5,
        }

    def legend_handles(self, name: Callable[[int], str], counted: str = "", width: int = 24) -> list[Any]:
        """One legend entry per colour shown: each palette label by ``name(label)`` (shortened to
        ``width``, :func:`shorten`), then the shared grey as "other (n labels)".

        Args:
            name: a label's name (e.g. ``ctx.label``).
            counted: if given, each entry ends with its count, e.g. ``"positions"`` gives "(12)";
                the count is also what "other" sums.
            width: the most characters of a name.
        """
        from matplotlib.patches import Patch

        palette = len(LABEL_COLOURS)
        handles = []
        for label, count, colour in zip(self.labels[:palette], self.counts[:palette], self.colours[:palette]):
            text = shorten(name(label), width) + (f" ({count})" if counted else "")
            handles.append(Patch(facecolor=colour, edgecolor="0.4", linewidth=0.4, label=text))
        if self.other:
            rest = sum(self.counts[palette:])
            many = f"{self.other} label{'s' if self.other > 1 else ''}"
            text = f"other ({many}" + (f", {rest} {counted})" if counted else ")")
            handles.append(Patch(facecolor=OTHER_COLOUR, edgecolor="0.4", linewidth=0.4, label=text))
        return handles


def label_key(values: np.ndarray) -> LabelKey:
    """The :class:`LabelKey` of an array of integer class labels: its distinct labels, most
    frequent first, coloured by :func:`label_colours`."""
    labels, counts = np.unique(np.asarray(values).ravel().astype(np.int64), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return LabelKey(
        labels=tuple(int(v) for v in labels[order]),
        counts=tuple(int(c) for c in counts[order]),
        colours=tuple(label_colours(len(labels))),
    )


SILENT_TEXT = "silent: this map does not fire\non this image (max activation 0),\nso there is nothing to project"
"""What a silent panel says (:func:`silent_panel`) when the caller gives no shorter text."""

SILENT_FACE = "0.93"  # the face of a silent panel or tile
SILENT_INK = "0.35"  # its text


def silent_panel(
    ax: Axes,
    text: str = SILENT_TEXT,
    title: str | None = None,
    colour: str | None = None,
    fontsize: float = 7,
    title_fontsize: float | None = None,
    aspect: float | None = None,
    title_loc: Literal["left", "center", "right"] = "left",
) -> None:
    """Draw ``ax`` as the grey panel that stands for a map that does not fire on an image (its
    strongest activation is 0, so its projection, activity or attribution is all zero): the
    deconvnet figure's silent tiles, and every other figure's panel of a silent map, instead of
    an unexplained empty panel.

    Args:
        ax: the panel (its ticks are removed).
        text: what the panel says, centred (:data:`SILENT_TEXT`, or a shorter line that starts
            with "silent" for a small panel).
        title: the panel's title, left-aligned; None: keep the title it has.
        colour: the title's and the dashed frame's colour (e.g. the map's box colour); None: grey.
        fontsize: the text's size, in points.
        title_fontsize: the title's size; None: ``fontsize``.
        aspect: the panel's height / width, e.g. that of the image panels beside it (they keep
            their images' aspect); None: the whole cell.
        title_loc: where the title goes, as for ``Axes.set_title`` (the panels beside it may
            centre theirs).
    """
    if aspect is not None:
        ax.set_box_aspect(aspect)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor(SILENT_FACE)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=fontsize, color=SILENT_INK, transform=ax.transAxes)
    edge = colour or SILENT_INK
    if title is not None:
        ax.set_title(title, fontsize=title_fontsize or fontsize, loc=title_loc, color=colour or "black")
    for spine in ax.spines.values():
        spine.set_edgecolor(edge)
        spine.set_linestyle("--")


def mark_silent_tile(ax: Axes, x: float, y: float, fontsize: float = 6) -> None:
    """Write "silent" centred at ``(x, y)`` (data coordinates) on a tile of a mosaic whose map did
    not fire there (the tile itself should be :data:`SILENT_FACE`, not the mid-grey of an
    all-zero projection)."""
    ax.text(x, y, "silent", ha="center", va="center", fontsize=fontsize, color=SILENT_INK, clip_on=True)


def projections_beside_patches(
    image: Tensor,
    image_title: str,
    projections: Sequence[Tensor],
    boxes: Sequence[Sequence[int]],
    titles: Sequence[str],
    suptitle: str,
    panel_size: float = 1.6,
    silent: Sequence[bool] | None = None,
    note: str | None = None,
    first_number: int = 1,
) -> Figure:
    """The input with each projection's support boxed and numbered, and for each projection the
    projection cropped to its box beside the image patch under it (the layout of paper Fig. 2).

    The projections are laid out as a near-square grid of (projection, patch) pairs, at most 4
    pairs wide, and the figure is kept within :data:`MAX_FIGURE_INCHES` on each side (the panels
    shrink beyond that), so callers page long lists (16 pairs fit at the default panel size).
    The box tags on the input never overlap (:func:`place_box_tags`).

    Args:
        image: the input image, [3,H,W] in [0, 1] (denormalised).
        image_title: the title over the input image.
        projections: one displayable [3,H,W] projection in [0, 1] per box (e.g. from :func:`to_image`).
        boxes: one (x0, y0, x1, y1) box per projection, exclusive ends, in input pixels.
        titles: one title per projection, shown numbered in its box's colour.
        suptitle: the figure's overall title.
        panel_size: the side of one small panel, in inches (the figure's size follows from it).
        silent: per projection, True when its map does not fire on this image: it gets no box,
            and one grey panel saying so instead of an empty projection and an arbitrary patch.
        note: a line under the overall title (e.g. which page this is, what was left out).
        first_number: the number of the first projection (pages after the first continue the
            numbering of the one before).
    """
    count = len(projections)
    silent = list(silent) if silent is not None else [False] * count
    if not (len(boxes) == len(titles) == len(silent) == count):
        raise ValueError("projections, boxes, titles and silent must have one entry each per projection")
    rows, pairs = grid_shape(max(count, 1), max_columns=4)
    figure, outer = _pairs_figure(rows, pairs, panel_size, note)
    height = figure.get_figheight()
    left = figure.add_subplot(outer[0])
    show(left, image, image_title, fontsize=9)
    inner = outer[1].subgridspec(rows, 2 * pairs, wspace=0.04, hspace=0.32)
    tag_boxes, tag_labels, tag_colours = [], [], []
    for index, (projection, box, title, quiet) in enumerate(zip(projections, boxes, titles, silent)):
        number = first_number + index
        colour = BOX_COLOURS[(number - 1) % len(BOX_COLOURS)]
        row, pair = divmod(index, pairs)
        if quiet:
            silent_panel(
                figure.add_subplot(inner[row, 2 * pair : 2 * pair + 2]), title=f"{number}. {title}", colour=colour
            )
            continue
        _draw_box(left, box, colour)
        tag_boxes.append(box)
        tag_labels.append(str(number))
        tag_colours.append(colour)
        ax_projection = figure.add_subplot(inner[row, 2 * pair])
        ax_patch = figure.add_subplot(inner[row, 2 * pair + 1])
        _projection_and_patch(ax_projection, ax_patch, projection, image, box, f"{number}. {title}", colour)
    figure.suptitle(suptitle, fontsize=10, y=1 - 0.1 / height, va="top")
    if note:
        figure.text(0.5, 1 - 0.4 / height, note, ha="center", va="top", fontsize=8, color="0.3")
    place_box_tags(left, tag_boxes, tag_labels, tag_colours)
    return figure


def _pairs_figure(rows: int, pairs: int, panel_size: float, note: str | None) -> tuple[Figure, GridSpec]:
    """The figure of :func:`projections_beside_patches`, sized for ``rows`` rows of ``pairs``
    (projection, patch) pairs beside the input and kept within :data:`MAX_FIGURE_INCHES`, with
    its outer grid: the input's cell, then the pairs' cell."""
    side = max(2, rows)
    top_gap = 0.75 + (0.25 if note else 0.0)  # suptitle, note, the first row's titles
    header = top_gap + 0.3
    across = (side + 2 * pairs) * 1.06  # panels side by side, with the gaps between them
    down = max(2.0, 1.32 * rows - 0.32)  # rows of panels with the room for their titles (hspace)
    panel_size = min(panel_size, (MAX_FIGURE_INCHES - 0.6) / across, (MAX_FIGURE_INCHES - header) / down)
    figure = new_figure(panel_size * across + 0.6, panel_size * down + header)
    height = figure.get_figheight()
    figure.subplots_adjust(top=1 - top_gap / height, bottom=0.3 / height, left=0.02, right=0.98)
    return figure, figure.add_gridspec(1, 2, width_ratios=[side, 2 * pairs], wspace=0.04)


def _projection_and_patch(
    ax_projection: Axes,
    ax_patch: Axes,
    projection: Tensor,
    image: Tensor,
    box: Sequence[int],
    title: str,
    colour: str,
) -> None:
    """The projection cropped to its box beside the image patch under it, framed in the box's colour."""
    x0, y0, x1, y1 = box
    show(ax_projection, projection[:, y0:y1, x0:x1])
    show(ax_patch, image[:, y0:y1, x0:x1])
    ax_projection.set_title(title, fontsize=7, loc="left", color=colour)
    for spine in (*ax_projection.spines.values(), *ax_patch.spines.values()):
        spine.set_edgecolor(colour)
