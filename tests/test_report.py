"""``vizkit report``: each built-in analysis's summary rendered for people (tables, rounded
numbers, label lists; never raw JSON), a readable fallback for unknown analyses, escaping of
hostile strings, empty and broken folders, and the top9 unit browser's pictures drawn from a real
run's arrays."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import vizkit
from helpers import assert_no_hooks
from vizkit.app.cli import main
from vizkit.app.report import write_report
from vizkit.framework.report_view import ASSETS, MANIFEST
from vizkit.toolkit.report_values import format_number, render_value

MODEL = {"spec": "zfnet-compact", "class": "ZFNet", "weights": "/x/zf.pt", "weights_sha256": "ab" * 32}
INPUTS = {
    "images": ["/data/val/n01/a.jpg", "/data/val/n02/b.jpg"],
    "data": None,
    "preprocess": {"resize": 160, "crop": 144, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}


def write_result(folder: Path, analysis: str, summary: dict[str, Any], figures: list[str] = (), **extra) -> Path:
    """A result folder as Result.save writes it (result.json and optional PNG figures)."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "analysis": analysis,
        "vizkit_version": "0.1.0",
        "model": MODEL,
        "params": extra.pop("params", {"seed": 0, "device": "cpu"}),
        "inputs": extra.pop("inputs", INPUTS),
        "seconds": 1.23456,
        **summary,
        "files": {"arrays": None, "figures": list(figures)},
    }
    for name in figures:
        Image.new("RGB", (40, 20), (200, 30, 30)).save(folder / name)
    (folder / "result.json").write_text(json.dumps(document))
    return folder


class Page(HTMLParser):
    """The parts of a report page the tests look at: ids, links, images, table cells, text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.cells: list[str] = []
        self.scripts = 0
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "script":
            self.scripts += 1
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def report(folder: Path) -> tuple[str, Page, int]:
    path, count = write_report(folder)
    assert path == folder / "index.html"
    text = path.read_text()
    return text, Page(text), count


def assert_no_json(text: str) -> None:
    body = text.split("<body>", 1)[1].split("<script>", 1)[0]
    assert '{"' not in body and '":' not in body and "[[" not in body, "raw JSON in the page"


# ------------------------------------------------------------------------------ number rules
@pytest.mark.parametrize(
    "value,text",
    [
        (0.123456, "0.1235"),
        (12.3456, "12.35"),
        (1234.5678, "1235"),
        (5.0, "5"),
        (0.0, "0"),
        (3, "3"),
        (149389056, "149,389,056"),
        (2.5e-7, "2.500e-07"),
        (float("nan"), "NaN"),
        (float("inf"), "∞"),
        (True, "yes"),
    ],
)
def test_numbers_are_rounded_for_reading(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(
    "value,text",
    [
        (0.99996, "0.99996"),  # a probability that is not 1 never reads as certain
        (99.99996, "99.99996"),
        (999.96, "999.96"),
        (1.00004, "1.00004"),
        (-0.99996, "-0.99996"),
        (0.9999999999999999, "1"),  # float noise stays rounded
        (0.99993, "0.9999"),
        (0.49996, "0.5"),  # four significant digits otherwise
    ],
)
def test_a_fraction_is_never_rounded_into_a_whole_number(value, text):
    assert format_number(value) == text


def test_a_probability_just_below_one_is_not_shown_as_one(tmp_path):
    summary = {"images": ["a.jpg"], "target_name": ["tench"], "target": [0], "unoccluded_probability": [0.99996]}
    write_result(tmp_path / "occ", "occlusion", summary)
    _text, page, _count = report(tmp_path)
    assert "0.99996" in page.cells and "1" not in page.cells


def test_values_take_the_shape_a_person_would_draw():
    assert "1000 values" in render_value(list(range(1000)))  # long array: length, first few, range
    assert "0, 1, 2, 3, 4, 5, …" in render_value(list(range(1000)))
    assert "max 999" in render_value(list(range(1000)))
    labels = render_value(["tench", "English springer"])
    assert labels.count("<li>") == 2 and "chips" in labels
    long_labels = render_value([f"class{i}" for i in range(100)])
    assert "<details>" in long_labels and "100 items" in long_labels and long_labels.count("<li>") == 100
    huge = render_value([f"image{i}.jpg" for i in range(5000)])
    assert "5000 items" in huge and huge.count("<li>") == 500 and "and 4500 more" in huge
    records = render_value([{"a": 1, "b": 2.5}, {"a": 3, "b": 4.25}])
    assert records.count("<tr>") == 3 and "<th>a</th>" in records
    matrix = render_value({"conv1": {"mean": 0.5, "std": 0.1}, "fc7": {"mean": 0.25, "std": 0.05}})
    assert matrix.count("<tr>") == 3 and "<th>mean</th>" in matrix  # one table, a row per key
    assert "2000×3 array" in render_value([[1.0, 2.0, 3.0]] * 2000)
    ranking = render_value([{"index": 0, "label": "tench", "probability": 0.987654}])
    assert "ranking" in ranking and "tench" in ranking and "0.9877" in ranking
    assert "path" in render_value("/some/where/image.jpg") and ">image.jpg<" in render_value("/some/where/image.jpg")
    deep: dict[str, Any] = {"x": 1}
    for _ in range(20):
        deep = {"nested": deep}
    assert "entries" in render_value(deep)  # too deep: summarised, not an endless table


# -------------------------------------------------------------------------- known analyses
def test_each_known_analysis_is_rendered_as_tables(tmp_path):
    write_result(
        tmp_path / "probes",
        "probes",
        {
            "table": {
                "conv2": {
                    "svm": {"mean": 0.5, "std": 0.0, "C": [0.001, 0.001]},
                    "softmax": {"mean": 0.54167, "std": 0.04167, "C": [0.1, 1.0]},
                },
                "fc7": {
                    "svm": {"mean": 0.875, "std": 0.04167, "C": [0.001, 0.01]},
                    "softmax": {"mean": 0.91667, "std": 0.08333, "C": [0.1, 0.001]},
                },
            },
            "layers": ["conv2", "fc7"],
            "classifiers": ["svm", "softmax"],
            "dims": {"conv2": 8192, "fc7": 512},
            "classes": ["n01440764", "n02102040", "n03000684"],
            "folds": 2,
            "train_per_class": 4,
            "seconds_extract": 3.0,
            "seconds_fit": 31.2,
        },
    )
    write_result(
        tmp_path / "correspondence",
        "correspondence",
        {
            "table": {
                "left_eye": {"conv5": {"mean": 0.1302, "std": 0.01942, "p_vs_random": 0.75}},
                "nose": {"conv5": {"mean": 0.1442, "std": 0.009034, "p_vs_random": 0.25}},
            },
            "random": {"conv5": {"mean": 0.1365, "std": 0.02883, "draw_std": 0.01}},
            "parts": ["left_eye", "nose"],
            "layers": ["conv5"],
            "pairs": {"left_eye": 10, "nose": 6, "random": 10},
            "images": ["/d/a.jpg", "/d/b.jpg"],
        },
    )
    write_result(
        tmp_path / "occlusion",
        "occlusion",
        {
            "images": ["a.jpg", "b.jpg"],
            "target": [0, 1],
            "target_name": ["tench", "English springer"],
            "unoccluded_probability": [0.99467, 0.6716],
            "min_probability": [0.4597, 0.2039],
            "strongest_map": [113, 110],
            "grid": [5, 5],
            "seconds_maps": 5.1666,
        },
        figures=["occlusion_0.png", "occlusion_1.png"],
    )
    write_result(
        tmp_path / "deconvnet",
        "deconvnet",
        {
            "layer": "conv5",
            "channels": [113, 32],
            "activations": [[5.709896, 3.06196], [0.0, 2.11855]],
            "predicted": [
                [{"index": 0, "label": "tench", "probability": 0.99467}],
                [{"index": 3, "label": "English springer", "probability": 0.6716}],
            ],
            "images": ["a.jpg", "b.jpg"],
        },
    )
    write_result(
        tmp_path / "attribution",
        "attribution",
        {
            "images": ["a.jpg", "b.jpg"],
            "target": [0, 1],
            "target_name": ["tench", "English springer"],
            "probability": [0.99, 0.67],
            "deletion_auc": {"saliency": [0.1408, 0.08349], "random": [0.3496, 0.2383]},
            "deletion_best": ["saliency", "saliency"],
            "seconds_per_method": {"saliency": 3.03},
        },
    )
    write_result(
        tmp_path / "invariance",
        "invariance",
        {
            "images": ["a.jpg", "b.jpg"],
            "target_name": ["tench", "English springer"],
            "original_probability": [0.9947, 0.6716],
            "summary": {"translate": {"layers": {"conv1": {"first_step": -30, "linearity_r2": 0.68}}}},
        },
    )
    text, page, count = report(tmp_path)
    assert count == 6
    assert_no_json(text)
    cells = page.cells
    # probes: a row per layer, accuracy as mean ± std in percent, the best layer in bold
    assert "87.5% ± 4.2" in cells and "91.7% ± 8.3" in cells and "8192" in cells
    assert '<b><span class="num">91.7% ± 8.3</span></b>' in text
    # correspondence: a row per part and one for random squares, mean ± std to the std's precision
    assert "left eye" in cells and "random squares" in cells
    assert "0.130 ± 0.019" in cells and "0.1442 ± 0.0090" in cells and "0.75" in cells
    # per-image rows, rounded numbers
    assert "0.9947" in cells and "English springer" in cells and "0.99467" not in text
    assert "activations of maps 113, 32" in cells and "5.71, 3.062" in cells
    assert re.search(r"<tr><th>saliency</th><td>[^/]*0\.1408</span></td><td>[^/]*0\.08349<", text)  # method x image
    # model and timing blocks: hash shortened, seconds with units
    assert "abababababab…" in cells and "ab" * 32 not in cells
    assert "1.235 s" in cells and "fit" in cells and "31.2 s" in cells
    # figures are there, scaled, and lead to the full image
    assert "occlusion/occlusion_0.png" in page.images and "occlusion/occlusion_0.png" in page.links


def test_results_nested_alike_are_told_apart_in_the_table_of_contents(tmp_path):
    write_result(tmp_path / "run1" / "top9", "filters", {"layer": "conv1"})
    write_result(tmp_path / "run2" / "deep" / "top9", "filters", {"layer": "conv1"})
    text, _page, count = report(tmp_path)
    toc = re.sub(r"<[^>]+>", " ", text.split('<nav class="toc">', 1)[1].split("</nav>", 1)[0])  # what shows
    assert count == 2 and "run1/top9" in toc and "run2/deep/top9" in toc


def test_images_sharing_a_file_name_are_told_apart(tmp_path):
    images = ["/photos/a/IMG_0001.jpg", "/photos/b/IMG_0001.jpg", "/photos/c.jpg"]
    summary = {"images": images, "target_name": ["tench", "dog", "cat"], "original_probability": [0.9, 0.5, 0.1]}
    write_result(tmp_path / "inv", "invariance", summary, inputs={"images": images})
    text, page, _count = report(tmp_path)
    assert {"a/IMG_0001.jpg", "b/IMG_0001.jpg", "c.jpg"} <= set(page.cells)  # rows of the per-image table
    assert text.count(">a/IMG_0001.jpg<") == 2  # the same in the chips of the inputs
    assert 'title="/photos/b/IMG_0001.jpg"' in text


def test_probes_of_a_single_fold_claim_no_spread(tmp_path):
    table = {
        "conv2": {"svm": {"mean": 0.6, "std": 0.0, "C": [0.001]}},
        "fc7": {"svm": {"mean": 0.9, "std": 0.0, "C": [0.01]}},
    }
    summary = {"table": table, "layers": ["conv2", "fc7"], "classifiers": ["svm"], "folds": 1, "train_per_class": 2}
    write_result(tmp_path / "probes", "probes", summary)
    text, page, _count = report(tmp_path)
    assert "60%" in page.cells and "90%" in page.cells and "± 0" not in text  # one fold has no std
    assert "single fold" in text and "1 folds" not in text


def test_table_of_contents_links_resolve_and_figures_are_relative(tmp_path):
    write_result(tmp_path / "a b#1", "filters", {"layer": "conv1", "filters": 64}, figures=["filters.png"])
    write_result(tmp_path / "nested" / "deeper", "filters", {"layer": "conv2"})
    text, page, count = report(tmp_path)
    assert count == 2
    anchors = {link[1:] for link in page.links if link.startswith("#")}  # contents, cards, "overview"
    assert anchors == {"overview", "res-a-b-1", "res-nested-deeper"} and anchors <= page.ids
    assert set(page.images) == {"a%20b%231/filters.png"}  # percent-encoded: resolves from file://
    assert "file://" not in text and "http" not in text.replace("http-equiv", "")  # nothing fetched


# ------------------------------------------------------------------------- unknown and broken
def test_an_unknown_analysis_gets_a_readable_generic_rendering(tmp_path):
    write_result(
        tmp_path / "mine",
        "thirdparty-saliency",
        {
            "score": 0.123456789,
            "scores": list(np.linspace(0, 1, 500)),
            "classes": ["cat", "dog"],
            "per_layer": {"conv1": {"a": 1, "b": 2}, "conv2": {"a": 3, "b": 4}},
            "nested": {"x": {"y": {"z": [1, 2, 3]}}},
            "matrix": [[1, 2], [3, 4]],
            "nothing": None,
            "mixed": [1, "two", {"three": 3}],
        },
        figures=["saliency.png"],
    )
    text, page, count = report(tmp_path)
    assert count == 1 and "thirdparty-saliency" in text
    assert_no_json(text)
    assert "0.1235" in page.cells and "500 values" in text and "<li>cat</li>" in text
    assert "mine/saliency.png" in page.images


def test_a_view_that_meets_unexpected_data_falls_back_without_crashing(tmp_path):
    write_result(tmp_path / "p", "probes", {"table": {"conv1": 5, "fc7": {"svm": "high"}}, "layers": "conv1"})
    write_result(tmp_path / "c", "correspondence", {"table": [1, 2], "random": "x"})
    write_result(tmp_path / "t", "top9", {"layer": "conv1", "channels": [0, 1]})  # no arrays.npz
    text, _page, count = report(tmp_path)
    assert count == 3
    assert "Unit browser unavailable" in text
    assert "conv1" in text


class ViewPlugin:
    """A third-party analysis with a bare render function as its view, and one whose view raises."""

    @vizkit.hookimpl
    def register_analyses(self, register):
        def shown(page):
            return f'<p class="mine-view">score {vizkit.toolkit.report.esc(page.document["score"])}</p>', {"score"}

        def broken(page):
            raise KeyError("nothing here")

        register(vizkit.Analysis("mine", "a view", lambda ctx: None, view=shown))
        register(
            vizkit.Analysis("fragile", "a failing view", lambda ctx: None, view=vizkit.framework.ReportView(broken))
        )


def test_a_plugins_view_shows_its_keys_and_a_failing_one_falls_back(tmp_path):
    write_result(tmp_path / "m", "mine", {"score": "<b>1.5</b>", "other": 2})
    write_result(tmp_path / "f", "fragile", {"score": 3})
    _path, count = write_report(tmp_path, vizkit.make_app(extra=[("views", ViewPlugin())]))
    text = (tmp_path / "index.html").read_text()
    mine = text.split('id="res-m"', 1)[1].split("</section>", 1)[0]
    assert count == 2 and '<p class="mine-view">score &lt;b&gt;1.5&lt;/b&gt;</p>' in mine
    assert "<th>score</th>" not in mine and "<th>other</th>" in mine  # the view showed score, not other
    fragile = text.split('id="res-f"', 1)[1].split("</section>", 1)[0]
    assert "The fragile view could not show this result (KeyError" in fragile and "<th>score</th>" in fragile


def test_hostile_strings_are_escaped(tmp_path):
    evil = '<script>alert("x")</script>'
    write_result(
        tmp_path / "evil",
        evil,
        {
            "classes": [evil, "ok"],
            evil: {"label": evil},
            "target_name": [evil],
            "images": [f"/tmp/{evil}.jpg"],
        },
        figures=['fig"><img src=x onerror=alert(1)>.png'],
        params={"labels": evil},
    )
    write_result(tmp_path / "occ", "occlusion", {"images": [evil], "target_name": [evil], "target": [0]})
    text, page, count = report(tmp_path)
    assert count == 2
    assert page.scripts == 1  # only the report's own script
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text
    assert "onerror=alert(1)>" not in text
    assert all(src.startswith("evil/fig%22") for src in page.images)  # the figure is still shown, encoded


def test_an_empty_folder_gives_a_page_saying_so(tmp_path, capsys):
    text, _page, count = report(tmp_path)
    assert count == 0 and "No results found" in text
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"report: 0 result(s) in {tmp_path / 'index.html'}"


def test_an_unreadable_result_is_reported_not_fatal(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{not json")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "result.json").write_text("[1, 2]")
    write_result(tmp_path / "good", "filters", {"layer": "conv1"})
    text, _page, count = report(tmp_path)
    assert count == 1
    assert text.count("could not be read") == 2


def test_hand_corrupted_results_are_reported_not_fatal(tmp_path, capsys):
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "result.json").write_text("[" * 100_000 + "]" * 100_000)  # json.loads: RecursionError
    synthetic_top9(tmp_path / "cut", [0, 1])
    (tmp_path / "cut" / "arrays.npz").write_bytes((tmp_path / "cut" / "arrays.npz").read_bytes()[:300])
    synthetic_top9(tmp_path / "far", [0, 1])
    document = json.loads((tmp_path / "far" / "result.json").read_text())
    document["files"]["arrays"] = "../cut/arrays.npz"
    (tmp_path / "far" / "result.json").write_text(json.dumps(document))
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "index.html").read_text()
    assert "result.json could not be read: maximum recursion depth" in text
    assert "Unit browser unavailable: arrays.npz could not be read" in text
    assert "Unit browser unavailable: result.json names its arrays" in text


def test_a_missing_folder_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(vizkit.UsageError, match="report folder not found"):
        write_report(tmp_path / "nothere")
    assert main(["report", str(tmp_path / "nothere")]) == 2
    err = capsys.readouterr().err  # click's own check, on one line like every vizkit error
    assert err.startswith("vizkit: error: ") and len(err.strip().splitlines()) == 1 and "does not exist" in err


# ------------------------------------------------------------------------------------- top9
def synthetic_top9(folder: Path, channels: Any, maps: int = 2, k: int = 4) -> Path:
    """A top9 result whose arrays are made up: map i's patches are filled with grey level 40 * (i + 1)."""
    write_result(folder, "top9", {"layer": "conv5", "channels": channels, "k": k, "n_images": 8})
    document = json.loads((folder / "result.json").read_text())
    document["files"]["arrays"] = "arrays.npz"
    (folder / "result.json").write_text(json.dumps(document))
    patches = (
        np.zeros((maps, k, 8, 8, 3), np.uint8)
        + (40 * np.arange(1, maps + 1, dtype=np.uint8))[:, None, None, None, None]
    )
    np.savez(
        folder / "arrays.npz",
        values=np.ones((maps, k), np.float32),
        image_index=np.zeros((maps, k), np.int64),
        projections=np.random.default_rng(0).normal(size=(maps, k, 3, 8, 8)).astype(np.float32),
        patches=patches,
    )
    return folder


@pytest.mark.parametrize(
    ("channels", "why"),
    [
        ([3], "lists 1 channels but arrays.npz holds 2 maps"),  # would have been shown as maps 0 and 1
        ([5, 5], "lists a channel twice"),  # map 5's pictures would have been drawn over each other
        ([1.5, 2], "not all map indices"),
    ],
)
def test_top9_channels_that_do_not_fit_the_arrays_are_reported_not_relabelled(tmp_path, channels, why):
    synthetic_top9(tmp_path / "t", channels)
    text, _page, count = report(tmp_path)
    assert count == 1 and "Unit browser unavailable" in text and why in text
    assert 'data-map="' not in text


def test_top9_cards_show_their_own_maps_pictures(tmp_path):
    synthetic_top9(tmp_path / "t", [7, 3])
    text, _page, _count = report(tmp_path)
    assert re.findall(r'data-map="(\d+)"', text) == ["7", "3"]
    for channel, grey in ((7, 40), (3, 80)):  # arrays row 0 is map 7, row 1 map 3
        picture = np.asarray(Image.open(tmp_path / ASSETS / "t" / f"map{channel:05d}_patches.png"))
        assert picture[0, 0].tolist() == [grey] * 3


@pytest.fixture(scope="module")
def top9_report(tmp_path_factory, offline_photo_list, bundled_model) -> Path:
    """A real top9 run (bundled model, 8 photographs, 12 maps of conv2) saved in a report folder."""
    root = tmp_path_factory.mktemp("report")
    listing = root / "images.txt"
    listing.write_text("\n".join(offline_photo_list.read_text().splitlines()[:8]))
    result = vizkit.run(
        "top9", bundled_model, data=str(listing), layer="conv2", channels="0-11", workers=0, patch_size=24, pages=1
    )
    assert_no_hooks(bundled_model)
    result.save(root / "runs" / "top9")
    return root


def test_top9_gets_a_unit_browser_drawn_from_its_arrays(top9_report, capsys):
    _document, arrays = vizkit.load_result(top9_report / "runs" / "top9")
    assert main(["report", str(top9_report)]) == 0
    assert capsys.readouterr().out.strip() == f"report: 1 result(s) in {top9_report / 'index.html'}"
    text = (top9_report / "index.html").read_text()
    cards = re.findall(r'<div class="unit[^"]*" data-map="(\d+)" data-strength="([^"]+)" data-silent="([01])"', text)
    assert [int(c) for c, _, _ in cards] == list(range(12))
    fired = np.isfinite(arrays["values"]) & (arrays["image_index"] >= 0)
    for (_channel, strength, silent), row, values in zip(cards, fired, arrays["values"]):
        assert silent == ("0" if row.any() else "1")
        assert float(strength) == pytest.approx(values[0] if row[0] else 0.0)
    assets = top9_report / ASSETS
    pictures = sorted(assets.rglob("*.png"))
    assert len(pictures) == 2 * int(fired.any(axis=1).sum())
    k = arrays["values"].shape[1]
    side = 3 * 24 + 2 * 2  # a 3x3 mosaic of 24-pixel tiles with 2-pixel gaps, whatever fired
    assert k == 8
    for picture in pictures:
        assert Image.open(picture).size == (side, side)
        assert f'src="{picture.relative_to(top9_report).as_posix()}"' in text
    # drawn once: a second report reuses them; a changed result redraws them
    stamps = {p: p.stat().st_mtime_ns for p in pictures}
    write_report(top9_report)
    assert {p: p.stat().st_mtime_ns for p in pictures} == stamps
    manifest = next(assets.rglob(MANIFEST))
    assert json.loads(manifest.read_text())["maps"] == 12
    npz = top9_report / "runs" / "top9" / "arrays.npz"
    os.utime(npz, ns=(npz.stat().st_atime_ns, npz.stat().st_mtime_ns + 10**9))
    write_report(top9_report)
    assert all(p.stat().st_mtime_ns != stamps[p] for p in pictures)


def test_asset_folders_of_removed_results_are_pruned(tmp_path):
    stale = tmp_path / ASSETS / "gone"
    stale.mkdir(parents=True)
    (stale / MANIFEST).write_text("{}")
    foreign = tmp_path / ASSETS / "users-own"
    foreign.mkdir()
    write_report(tmp_path)
    assert not stale.exists() and foreign.exists()  # only the report's own folders are removed


def test_a_label_with_a_slash_is_shown_whole_not_as_a_path():
    """ "AC/DC" was taken for a path and shown as "DC": a class misnamed on the page."""
    from vizkit.toolkit.report_values import render_text

    for label in ("AC/DC", "n/a", "1/2", "imagenette/val"):
        assert render_text(label) == label
    for path, shown in (("a/photo.jpg", "photo.jpg"), ("/data/val/x", "x"), ("./runs/top9/", "top9")):
        assert f">{shown}</span>" in render_text(path) and f'title="{path}"' in render_text(path)


# ---------------------------------------------------------------- front page, order, folding
def section_ids(text: str) -> list[str]:
    return re.findall(r'<section class="result" id="res-([^"]+)"', text)


def card_links(text: str) -> list[str]:
    gallery = text.split('<ol class="gallery">', 1)[1].split("</ol>", 1)[0]
    return re.findall(r'<a class="card" href="#res-([^"]+)"', gallery)


def test_sections_follow_the_papers_order_with_a_card_each_on_the_front_page(tmp_path):
    """Path order (a_probes, b_attribution, ...) is not the paper's: the page is in the paper's
    order (Fig. 1 deconvnet ... Table 7 probes), analyses beyond the paper after it by name, an
    unreadable result last; the front page has one card per result in the same order."""
    write_result(tmp_path / "a_probes", "probes", {"layers": ["conv2", "fc7"]}, figures=["probes.png"])
    write_result(tmp_path / "b_attribution", "attribution", {"layer": "conv5"}, figures=["attribution.png"])
    write_result(
        tmp_path / "c_correspondence",
        "correspondence",
        {"layers": ["conv5"]},
        figures=["correspondence_occlusions.png", "correspondence_table.png"],
    )
    write_result(tmp_path / "d_deconvnet", "deconvnet", {"layer": "conv5"}, figures=["deconvnet.png"])
    write_result(tmp_path / "e_mine", "aaa-third-party", {"score": 1})  # beyond the paper, no figure
    write_result(tmp_path / "f_occlusion", "occlusion", {}, figures=["occlusion.png"])
    write_result(tmp_path / "g_filters", "filters", {"layer": "conv1"}, figures=["filters.png"])
    write_result(tmp_path / "h_invariance", "invariance", {"layers": ["conv1", "fc7"]}, figures=["invariance.png"])
    synthetic_top9(tmp_path / "i_top9", [0, 1])
    (tmp_path / "j_broken").mkdir()
    (tmp_path / "j_broken" / "result.json").write_text("{not json")
    text, page, count = report(tmp_path)
    assert count == 9
    order = [
        "d-deconvnet",  # Fig. 1
        "i-top9",  # Fig. 2
        "h-invariance",  # Fig. 5
        "g-filters",  # Fig. 6
        "f-occlusion",  # Fig. 7
        "c-correspondence",  # Fig. 8, Table 1
        "a-probes",  # Table 7
        "e-mine",  # beyond the paper: aaa-third-party before attribution, by name
        "b-attribution",
        "j-broken",  # unreadable
    ]
    assert section_ids(text) == order
    assert card_links(text) == order
    assert text.index('id="overview"') < text.index('<section class="result"')  # the front page leads
    # a card names the analysis, the paper's figure, the layer and the folder; shows the key figure
    gallery = text.split('<ol class="gallery">', 1)[1].split("</ol>", 1)[0]
    cards = dict(zip(card_links(text), re.split(r'<a class="card" ', gallery)[1:]))
    assert 'src="c_correspondence/correspondence_table.png"' in cards["c-correspondence"]  # its key figure
    assert ">Fig. 8, Table 1<" in cards["c-correspondence"] and "conv5 · c_correspondence" in cards["c-correspondence"]
    assert ">Fig. 1<" in cards["d-deconvnet"] and ">Table 7<" in cards["a-probes"] and ">Fig. 2<" in cards["i-top9"]
    assert "conv1, fc7 · h_invariance" in cards["h-invariance"]
    assert "no figure" in cards["e-mine"] and 'class="paper"' not in cards["b-attribution"]
    # the section leads with the key figure too, before the view's tables
    section = text.split('id="res-c-correspondence"', 1)[1].split("</section>", 1)[0]
    figures = re.findall(r'<img src="c_correspondence/([^"]+)"', section)
    assert figures == ["correspondence_table.png", "correspondence_occlusions.png"]
    assert {f"res-{slug}" for slug in order} <= page.ids


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("", "a.png"),
        ("table", "table.png"),
        ("table.png", "table.png"),
        ("top9_page*", "top9_page01.png"),
        ("nothing-like-it", "a.png"),  # no match: the first figure
    ],
)
def test_a_key_figure_is_the_views_choice_else_the_first(pattern, expected):
    from vizkit.app.report import key_figure

    assert key_figure(["a.png", "table.png", "top9_page01.png", "top9_page02.png"], pattern) == expected
    assert key_figure([], pattern) is None


class PlacedPlugin:
    """A third-party analysis that places itself after the paper's Fig. 5 and picks its key figure,
    with no render of its own."""

    @vizkit.hookimpl
    def register_analyses(self, register):
        view = vizkit.ReportView(paper="Fig. 5 (b)", paper_order=5.5, key_figure="second")
        register(vizkit.Analysis("placed", "a placed analysis", lambda ctx: vizkit.Result(), view=view))


def test_a_third_party_view_can_place_its_analysis_in_the_papers_order(tmp_path):
    write_result(tmp_path / "a", "placed", {"score": 2}, figures=["first.png", "second.png"])
    write_result(tmp_path / "b", "filters", {"layer": "conv1"})  # Fig. 6
    write_result(tmp_path / "c", "invariance", {})  # Fig. 5
    app = vizkit.make_app(extra=[("placed", PlacedPlugin())])
    _path, count = write_report(tmp_path, app)
    text = (tmp_path / "index.html").read_text()
    assert count == 3 and section_ids(text) == ["c", "a", "b"]
    placed = text.split('id="res-a"', 1)[1].split("</section>", 1)[0]
    assert re.findall(r'<img src="a/([^"]+)"', placed) == ["second.png", "first.png"]
    assert "<th>score</th>" in placed and "a placed analysis" in placed  # generic rendering, description
    assert ">Fig. 5 (b)<" in placed


def test_figures_come_first_and_settings_and_long_tables_are_folded(tmp_path):
    many = [f"/data/val/img{i:02d}.jpg" for i in range(20)]
    write_result(
        tmp_path / "occ",
        "occlusion",
        {"images": many, "target_name": ["tench"] * 20, "target": [0] * 20, "extra": {str(i): i for i in range(30)}},
        figures=["occlusion.png"],
        inputs={"images": many},
    )
    write_result(tmp_path / "fil", "filters", {"layer": "conv1", "dead": 0})
    text, _page, _count = report(tmp_path)
    occ = text.split('id="res-occ"', 1)[1].split("</section>", 1)[0]
    # figures, then the view's (folded: 20 rows) per-image table, then the rest, then the settings
    assert occ.index("<img") < occ.index("Per image") < occ.index("More of the summary") < occ.index("Parameters")
    folds = re.findall(r'<details class="fold"( open)?><summary><h3>([^<]+)', occ)
    assert folds == [("", "Per image "), ("", "More of the summary "), ("", "Model, parameters, inputs, timing ")]
    fil = text.split('id="res-fil"', 1)[1].split("</section>", 1)[0]
    folds = re.findall(r'<details class="fold"( open)?><summary><h3>([^<]+)', fil)
    assert folds == [(" open", "Summary "), ("", "Model, parameters, inputs, timing ")]  # a short summary stays open
    assert "<th>dead</th>" in fil


# ------------------------------------------------------------------------ nested reports
def test_a_nested_reports_pictures_are_reused_not_redrawn(tmp_path, monkeypatch):
    """`vizkit report .` over folders that have their own reports takes their unit mosaics (hard
    links or copies) instead of drawing them again; a result that changed is drawn anew."""
    view = pytest.importorskip("vizkit_plugins.top9.view")
    synthetic_top9(tmp_path / "a" / "t", [0, 1])
    synthetic_top9(tmp_path / "b" / "t", [2, 3])
    write_report(tmp_path / "a")
    write_report(tmp_path / "b")
    drawn: list[int] = []
    real_mosaic = view.mosaic

    def counted(*args):
        drawn.append(1)
        return real_mosaic(*args)

    monkeypatch.setattr(view, "mosaic", counted)
    _text, _page, count = report(tmp_path)
    assert count == 2 and drawn == []  # nothing drawn: both sub-reports' pictures were taken
    for sub, channel in (("a", 0), ("b", 3)):
        mine = tmp_path / ASSETS / f"{sub}-t" / f"map{channel:05d}_patches.png"
        theirs = tmp_path / sub / ASSETS / "t" / mine.name
        assert mine.read_bytes() == theirs.read_bytes()
        assert f'src="{ASSETS}/{sub}-t/{mine.name}"' in _text  # the page refers to its own copy
    # the other way round: a sub-folder's report takes the enclosing report's pictures
    shutil.rmtree(tmp_path / "a" / ASSETS)
    write_report(tmp_path / "a")
    assert drawn == []
    # a changed result (same arrays, other result.json) is drawn again, and the parent's copies
    # do not change the sub-report's pictures
    document = json.loads((tmp_path / "b" / "t" / "result.json").read_text())
    document["n_images"] = 9
    (tmp_path / "b" / "t" / "result.json").write_text(json.dumps(document))
    before = (tmp_path / "b" / ASSETS / "t" / "map00002_patches.png").stat().st_mtime_ns
    write_report(tmp_path)
    assert len(drawn) == 4  # 2 maps x (projections, patches) of b/t only
    assert (tmp_path / "b" / ASSETS / "t" / "map00002_patches.png").stat().st_mtime_ns == before


def test_a_view_finds_the_reports_other_results_of_an_analysis(tmp_path):
    """ReportPage.related: every other result of that analysis below the report's folder, the
    report's own asset folder and hidden folders skipped, this one left out."""
    from vizkit.framework import ReportPage

    def write(folder, analysis):
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"analysis": analysis, "n": folder.name}))

    write(tmp_path / "a", "featvis")
    write(tmp_path / "b" / "c", "featvis")
    write(tmp_path / "d", "top9")
    write(tmp_path / "report_assets" / "x", "featvis")
    write(tmp_path / ".hidden", "featvis")
    write(tmp_path / "self", "featvis")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "result.json").write_text("{not json")
    page = ReportPage({"analysis": "featvis"}, tmp_path / "self", tmp_path, "self")
    found = page.related("featvis")
    assert [(folder.relative_to(tmp_path).as_posix(), document["n"]) for folder, document in found] == [
        ("a", "a"),
        ("b/c", "c"),
    ]
    assert [folder.name for folder, _ in page.related("top9")] == ["d"]
