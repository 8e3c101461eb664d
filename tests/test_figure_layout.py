"""Figure geometry: pixel sizes are capped, tile blocks are near-square, silent maps are drawn as
silent, and no text (titles, tags, row labels) covers another text or a neighbouring panel.
Text extents are measured with matplotlib's own renderer."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from matplotlib.image import AxesImage
from PIL import Image

import vizkit
from helpers import assert_no_hooks
from vizkit.toolkit.figures import (
    MAX_FIGURE_INCHES,
    grid_shape,
    new_figure,
    overlapping_texts,
    projections_beside_patches,
    shorten,
    tile_mosaic,
)
from vizkit_plugins.evolution.figures import evolution_figure
from vizkit_plugins.top9.figures import figure_pages

MAX_PIXELS = int(MAX_FIGURE_INCHES * 100)


def png_size(figure) -> tuple[int, int]:
    """The pixel size of the PNG ``Result.save`` writes for ``figure``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.get_dpi(), bbox_inches="tight")
    return Image.open(io.BytesIO(buffer.getvalue())).size


def texts(figure) -> list[str]:
    return [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text")) if t.get_text().strip()]


def test_overlap_check_sees_overlaps():
    figure = new_figure(3, 2)
    figure.text(0.2, 0.5, "first label")
    figure.text(0.22, 0.5, "second label")
    figure.text(0.2, 0.1, "alone")
    assert overlapping_texts(figure) == [("first label", "second label")]


def test_grid_and_mosaic_shapes():
    assert grid_shape(9) == (3, 3) and grid_shape(16) == (4, 4) and grid_shape(5) == (2, 3)
    assert grid_shape(64, max_columns=4) == (16, 4)
    tiles = np.zeros((3, 8, 8, 3), dtype=np.float32)
    assert tile_mosaic(tiles, rows=2, columns=2, gap=2).shape == (18, 18, 3)  # a fixed 2x2 grid for 3 tiles
    with pytest.raises(ValueError, match="cannot hold"):
        tile_mosaic(np.zeros((5, 8, 8, 3)), rows=2, columns=2)


def _synthetic(count: int, size: int = 64) -> tuple[torch.Tensor, list[torch.Tensor], list[tuple[int, int, int, int]]]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, size, size, generator=generator)
    projections = [torch.rand(3, size, size, generator=generator) for _ in range(count)]
    # receptive fields clipped at the image border share its top-left corner, as at conv5
    boxes = [(0, 0, 20 + (i * 7) % 44, 24 + (i * 5) % 40) for i in range(count)]
    return image, projections, boxes


def test_box_tags_sharing_a_corner_do_not_overlap():
    image, projections, boxes = _synthetic(16)
    titles = [f"map {100 + i}: {2.5 - i / 10:.3g} @0,0" for i in range(16)]
    figure = projections_beside_patches(image, "input", projections, boxes, titles, "sixteen maps", note="a note")
    assert overlapping_texts(figure) == []
    tags = [t for t in figure.axes[0].texts if t.get_text().isdigit()]
    assert sorted(int(t.get_text()) for t in tags) == list(range(1, 17))  # every box kept its tag
    assert len(figure.axes) == 1 + 2 * 16
    width, height = png_size(figure)
    assert width <= MAX_PIXELS and height <= MAX_PIXELS


def test_many_maps_on_one_figure_stay_within_the_cap():
    image, projections, boxes = _synthetic(64)
    figure = projections_beside_patches(image, "input", projections, boxes, [f"map {i}" for i in range(64)], "all")
    width, height = png_size(figure)
    assert width <= MAX_PIXELS and height <= MAX_PIXELS


def test_silent_tiles_say_so_and_have_no_box():
    image, projections, boxes = _synthetic(4)
    silent = [False, True, False, True]
    titles = ["map 1: 2 @1,2", "map 2: silent", "map 3: 1 @0,0", "map 4: silent"]
    figure = projections_beside_patches(image, "input", projections, boxes, titles, "x", silent=silent)
    assert len(figure.axes) == 1 + 2 * 2 + 2  # a silent map gets one panel, not a projection and a patch
    assert len(figure.axes[0].patches) == 2  # boxes only for the maps that fired
    words = texts(figure)
    assert sum("does not fire" in w for w in words) == 2
    assert "2. map 2: silent" in words and not any("@" in w and "silent" in w for w in words)
    assert overlapping_texts(figure) == []


class Brightness(torch.nn.Sequential):
    """Maps that fire on bright (0, 2) or on dark (1) inputs only: every map is silent on one of
    a bright and a dark image."""

    def __init__(self) -> None:
        super().__init__(
            torch.nn.Conv2d(3, 2, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(2, 3, 3, padding=1),
            torch.nn.ReLU(),
        )
        first, second = self[0], self[3]
        assert isinstance(first, torch.nn.Conv2d) and isinstance(second, torch.nn.Conv2d)
        assert first.bias is not None and second.bias is not None
        with torch.no_grad():
            first.weight.zero_()
            first.weight[0] = 0.1
            first.weight[1] = -0.1
            torch.nn.init.zeros_(first.bias)
            second.weight.zero_()
            second.weight[0, 0] = 0.1
            second.weight[1, 1] = 0.1
            second.weight[2, 0] = 0.05
            torch.nn.init.constant_(second.bias, -0.01)


def test_deconvnet_pages_and_silent_maps(tmp_path):
    model = Brightness().eval()
    images = torch.stack([torch.ones(3, 32, 32), -torch.ones(3, 32, 32)])
    result = vizkit.run("deconvnet", model, images=images, layer="4", top=3, maps_per_page=2, pages=1)
    assert_no_hooks(model)
    # the arrays keep every map; the figures draw one page of 2 per image
    assert result.arrays["projections"].shape[:2] == (2, 3)
    assert result["channels"] == [0, 2, 1]
    assert set(result.figures) == {"deconvnet_0", "deconvnet_1"}
    first, second = result.figures["deconvnet_0"], result.figures["deconvnet_1"]
    assert any("1 more maps not drawn" in w for w in texts(first))
    # maps 0 and 2 (ranked on the bright image) are silent on the dark one: no "0 @0,0" tiles
    assert not any("silent" in w for w in texts(first))
    assert "1. map 0: silent" in texts(second) and "2. map 2: silent" in texts(second)
    assert not any("@0,0" in w for w in texts(second))
    assert np.all(result.arrays["projections"][1, :2] == 0)  # the arrays are as before
    for figure in result.figures.values():
        assert overlapping_texts(figure) == []

    paged = vizkit.run("deconvnet", model, images=images[:1], layer="4", top=3, maps_per_page=2, pages=2)
    assert_no_hooks(model)
    assert list(paged.figures) == ["deconvnet_page01", "deconvnet_page02"]
    paged.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["files"]["figures"] == ["deconvnet_page01.png", "deconvnet_page02.png"]
    assert saved["channels"] == [0, 2, 1]
    for name in saved["files"]["figures"]:
        width, height = Image.open(tmp_path / "out" / name).size
        assert width <= MAX_PIXELS and height <= MAX_PIXELS


def test_deconvnet_rejects_bad_page_options():
    model = Brightness().eval()
    with pytest.raises(vizkit.UsageError, match="--maps-per-page"):
        vizkit.run("deconvnet", model, images=torch.ones(1, 3, 32, 32), layer="4", maps_per_page=0)
    assert_no_hooks(model)


def _top9_arrays(maps: int, k: int, fired: int, size: int = 16) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    values = np.sort(rng.random((maps, k)).astype(np.float32) + 0.1, axis=1)[:, ::-1].copy()
    image_index = np.tile(np.arange(k), (maps, 1))
    image_index[0, fired:] = -1  # map 0 fired on fewer images than k
    values[0, fired:] = 0
    arrays: dict[str, np.ndarray] = {
        "image_index": image_index,
        "projections": rng.normal(size=(maps, k, 3, size, size)).astype(np.float16),
        "patches": rng.integers(0, 255, size=(maps, k, size, size, 3), dtype=np.uint8),
    }
    return values, arrays


@pytest.mark.parametrize("k,grid", [(4, (2, 2)), (9, (3, 3)), (16, (4, 4)), (25, (5, 5)), (5, (2, 3))])
def test_top9_blocks_are_near_square(k, grid):
    values, arrays = _top9_arrays(maps=4, k=k, fired=max(1, k - 2))
    figures = figure_pages("conv5", [10, 11, 12, 13], values, arrays, None, maps_per_page=8, pages=1, n_images=30)
    figure = figures["top9_page01"]
    mosaics = [image for ax in figure.axes for image in ax.get_children() if isinstance(image, AxesImage)]
    assert len(mosaics) == 2 * 4  # projections and patches per map
    gap, size = 2, 16
    for mosaic in mosaics:  # one grid shape for every map, also the one with fewer winners
        shown = mosaic.get_array()
        assert shown is not None and shown.shape[:2] == (grid[0] * (size + gap) - gap, grid[1] * (size + gap) - gap)
    for ax in figure.axes:  # the block fills its panel: no narrow column in a tall cell
        box = ax.get_position()
        ratio = box.width * figure.get_figwidth() / (box.height * figure.get_figheight())
        assert ratio == pytest.approx(grid[1] / grid[0], rel=0.1)
    assert overlapping_texts(figure) == []
    width, height = png_size(figure)
    assert width <= MAX_PIXELS and height <= MAX_PIXELS


def test_top9_pages_say_what_was_left_out():
    values, arrays = _top9_arrays(maps=40, k=9, fired=9)
    figures = figure_pages("conv5", list(range(40)), values, arrays, None, maps_per_page=16, pages=2, n_images=30)
    assert list(figures) == ["top9_page01", "top9_page02"]
    for figure in figures.values():
        assert any("8 more maps not drawn" in w for w in texts(figure))
        width, height = png_size(figure)
        assert width <= MAX_PIXELS and height <= MAX_PIXELS
        assert overlapping_texts(figure) == []


@pytest.mark.parametrize(
    "maps,epochs", [(2, [1, 2]), (6, [1, 2]), (6, [1, 2, 5, 10, 20, 30, 40]), (3, list(range(1, 13)))]
)
def test_evolution_row_labels_stay_beside_their_own_block(maps, epochs):
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    rng = np.random.default_rng(0)
    channels = np.stack([rng.choice(256, maps, replace=False) for _ in layers])
    channels[0, -1] = -1  # a layer with fewer maps
    projections = rng.normal(size=(len(layers), maps, len(epochs), 3, 16, 16)).astype(np.float16)
    figure = evolution_figure(layers, channels, epochs, projections, 64)
    assert len(figure.axes) == len(layers)
    assert overlapping_texts(figure) == []
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        labels = [t for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) == int((channels[figure.axes.index(ax)] >= 0).sum())
        for label in labels:
            extent = label.get_window_extent(renderer)
            for other in figure.axes:
                if other is not ax:
                    assert not extent.overlaps(other.get_window_extent(renderer)), (label.get_text(), ax.get_title())
    width, height = png_size(figure)
    assert width <= MAX_PIXELS and height <= MAX_PIXELS


def _long_named_copies(tmp_path, count: int) -> list:
    from helpers import shipped_photos

    paths = []
    for i in range(count):
        path = tmp_path / f"ILSVRC2012_val_0000{i}_a_rather_long_file_name_{i}.jpg"
        Image.open(shipped_photos()[i % 3]).convert("RGB").save(path)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_occlusion_figure_keeps_its_size_as_images_are_added(tmp_path, bundled_model):
    """Four images: the other images' projections go to a second row, so the paper's five panels
    keep their size (in one row they shrank with every image added) and no title collides."""
    paths = _long_named_copies(tmp_path, 4)
    one = vizkit.run("occlusion", bundled_model, images=paths[:1], size=48, stride=16)
    four = vizkit.run("occlusion", bundled_model, images=paths, size=48, stride=16)
    assert_no_hooks(bundled_model)

    def panel_inches(figure) -> float:  # the width of panel (a)
        return figure.axes[0].get_position().width * figure.get_figwidth()

    for figure in four.figures.values():
        width, height = png_size(figure)
        assert panel_inches(figure) == pytest.approx(panel_inches(one.figures["occlusion"]), rel=0.02)
        assert width <= MAX_PIXELS and height <= MAX_PIXELS
        assert overlapping_texts(figure) == []
        assert sum(w.startswith("in ILSVRC2012_val") for w in texts(figure)) == 3


@pytest.mark.slow
def test_attribution_comparison_titles_do_not_collide(tmp_path, bundled_model):
    paths = _long_named_copies(tmp_path, 3)
    result = vizkit.run("attribution", bundled_model, images=paths, method="saliency,inputxgradient")
    assert_no_hooks(bundled_model)
    figure = result.figures["attribution_comparison"]
    assert overlapping_texts(figure) == []
    headings = [w for w in texts(figure) if w.startswith("ILSVRC2012_val_")]
    assert len(headings) == 3 and all("target" in w for w in headings)  # one heading per image row


@pytest.mark.parametrize(
    "text,width,expected",
    [
        ("n02085782_Japanese_spaniel", 18, "n02085782…spaniel"),  # was "n02085782_Japanese_spa"
        ("n02085782_Japanese_spaniel.jpg", 22, "n02085782…spaniel.jpg"),  # the extension stays with the tail
        ("American Staffordshire terrier", 18, "American…terrier"),
        ("Japanese-spaniel-puppy", 16, "Japanese…puppy"),
        ("garbage truck", 13, "garbage truck"),  # fits: unchanged
        ("garbage truck", 8, "garbage…"),  # no room for both ends: the first word
        ("supercalifragilisticexpialidocious", 12, "superc…cious"),  # one long word: cut inside it
    ],
)
def test_shorten_cuts_at_word_boundaries(text, width, expected):
    shortened = shorten(text, width)
    assert shortened == expected and len(shortened) <= width


def test_shorten_never_leaves_half_a_word_when_whole_words_fit():
    words = ["n01440764", "tench", "Tinca", "tinca", "garbage", "truck", "chain", "saw"]
    text = "_".join(words)
    for width in range(12, len(text)):
        head, _, tail = shorten(text, width).partition("…")
        assert len(head) + 1 + len(tail) <= width
        pieces = [p for p in head.split("_") + tail.split("_") if p]
        assert pieces and all(p in words for p in pieces), (width, head, tail)


def _two_class_brightness() -> torch.nn.Module:
    """:class:`Brightness` with a classifier on top: occlusion needs [N, classes] logits."""
    features = Brightness()
    return torch.nn.Sequential(
        *features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)
    ).eval()


def test_occlusion_draws_silent_maps_as_silent_panels():
    """The bright image's strongest map does not fire on the dark image, and nothing fires on a
    black one: those panels say "silent" (as the deconvnet figure does), not an empty grey."""
    model = _two_class_brightness()
    images = torch.stack([torch.ones(3, 32, 32), -torch.ones(3, 32, 32), torch.zeros(3, 32, 32)])
    result = vizkit.run("occlusion", model, images=images, layer="4", size=8, stride=8)
    assert_no_hooks(model)
    bright, dark, black = (result.figures[f"occlusion_{i}"] for i in range(3))
    strongest = result["strongest_map"]
    # the bright image's map, projected in the dark and the black image: two silent panels
    assert sum(w.startswith(f"silent: map {strongest[0]} does not") for w in texts(bright)) == 2
    # on the black image every map is silent: its activity (b) and its projection (c) say so
    assert any(w.startswith("(b) total activity") for w in texts(black))
    assert sum(w.startswith(f"silent: map {strongest[2]} does not") for w in texts(black)) >= 2
    # the dark image's own map fires on it: silent only in the other two images
    assert sum(w.startswith(f"silent: map {strongest[1]} does not") for w in texts(dark)) == 2
    for index, figure in enumerate((bright, dark, black)):
        assert overlapping_texts(figure) == []
        (panel,) = [ax for ax in figure.axes if ax.get_title().startswith("(e)")]
        legend = panel.get_legend()  # one entry per colour shown
        assert legend is not None and len(legend.get_texts()) == len(np.unique(result["top_label"][index]))


def test_top9_and_evolution_say_silent():
    values, arrays = _top9_arrays(maps=2, k=4, fired=0)  # map 0 never fired
    figure = figure_pages("conv5", [10, 11], values, arrays, None, maps_per_page=2, pages=1, n_images=30)["top9_page01"]
    assert any(w.startswith("silent: map 10 never fired on these 30 images") for w in texts(figure))
    assert overlapping_texts(figure) == []

    layers, epochs = ["conv1", "conv2"], [1, 2, 5]
    channels = np.array([[3, 4], [-1, -1]])  # conv2: no active map
    rng = np.random.default_rng(0)
    projections = rng.normal(size=(2, 2, 3, 3, 16, 16)).astype(np.float16)
    strength = np.full((2, 2, 3), np.nan, dtype=np.float32)
    strength[0] = [[0.0, 1.0, 2.0], [0.5, 1.0, 2.0]]  # map 3 silent at epoch 1
    figure = evolution_figure(layers, channels, epochs, projections, 64, values=strength)
    assert texts(figure).count("silent") == 1
    assert any(w.startswith("silent: no map") for w in texts(figure))
    assert overlapping_texts(figure) == []
