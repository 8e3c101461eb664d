"""The atlas's report view (plugins/atlas/view.py) over synthetic results in the exact saved
format (/work/notes/atlas_format.md): ``vizkit report`` builds, every unit of every layer gets its
page at ``report_assets/<result>/atlas/<layer>/<unit>.html``, every link and picture of the index
and of every unit page resolves, a page shows its unit's own numbers, pictures are cached, and in
headless Chromium the index's controls sort and filter and a unit page loads (skipped, saying why,
where no Chromium or Playwright is installed, as the report's own browser test is)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

import vizkit
from vizkit.app.cli import main
from vizkit.app.report import write_report
from vizkit.framework.report_view import ASSETS
from vizkit_plugins.atlas import view
from vizkit_plugins.atlas.view import report_view

CLASSES = ["n01", "n02", "n03"]
LABELS = ["tench", "cassette & <player>", "golf ball"]
IMAGES = [f"/data/val/{c}/img{i}.JPEG" for c in CLASSES for i in range(3)]
K, P, BINS, M = 3, 8, 8, 2
# layer -> (units, spatial, receptive field); dots in a name are kept in its folder
LAYERS = {"conv1": (4, True, 11), "features.3": (6, True, 43), "fc": (3, False, 144)}
SCREENSHOTS = Path("/tmp")  # where a person outside CI finds the browser's screenshots


class Plugin:
    """Registers an ``atlas`` analysis carrying the view under test (nothing else: the registry
    under test holds only it, whatever state the analysis's own package is in)."""

    @vizkit.hookimpl
    def register_analyses(self, register) -> None:
        register(vizkit.Analysis("atlas", "unit atlas (view under test)", lambda ctx: None, view=report_view()))


@pytest.fixture(scope="module")
def app() -> vizkit.App:
    return vizkit.make_app(entry_point_group=None, extra=[("atlas-view", Plugin())])


def layer_arrays(name: str, rng: np.random.Generator, classes: bool, ablated: bool) -> dict[str, np.ndarray]:
    """A layer's arrays in the saved format: unit u's patches are a flat colour (red 30 * (u + 1),
    green 40 * slot); unit 0 of conv1 never fired, unit 1 of every layer fired on k - 1 images."""
    units = LAYERS[name][0]
    values = np.sort(rng.uniform(1, 9, (units, K)), axis=1)[:, ::-1].astype(np.float32)
    images = rng.integers(0, len(IMAGES), (units, K)).astype(np.int64)
    values[1, -1], images[1, -1] = np.nan, -1
    if name == "conv1":
        values[0], images[0] = np.nan, -1
    patches = np.zeros((units, K, P, P, 3), np.uint8)
    patches[..., 0] = (30 * (np.arange(units) + 1))[:, None, None, None]
    patches[..., 1] = (40 * np.arange(K))[None, :, None, None]
    projections = rng.normal(size=(units, K, 3, P, P))
    projections /= np.abs(projections).max(axis=(2, 3, 4), keepdims=True)
    projections[images < 0] = 0
    edges = np.stack([np.linspace(-8, 8, BINS + 1)] * units).astype(np.float32)
    counts = rng.integers(0, 5, (units, BINS)).astype(np.int64)
    counts[:, : BINS // 2] = 0  # a ReLU's maxima are never negative
    out = {
        "top_values": values,
        "top_images": images,
        "projections": projections.astype(np.float16),
        "patches": patches,
        "mean": rng.uniform(0, 1, units).astype(np.float32),
        "mean_max": rng.uniform(1, 5, units).astype(np.float32),
        "active_fraction": rng.uniform(0, 1, units).astype(np.float32),
        "hist_edges": edges,
        "hist_counts": counts,
    }
    if classes:
        class_mean = rng.uniform(0, 4, (units, len(CLASSES))).astype(np.float32)
        class_mean[2, 1] = np.nan  # a class without images
        out["class_mean"] = class_mean
        selectivity = rng.permutation(units).astype(np.float32) / units
        selectivity[-1] = np.nan  # undefined
        out["selectivity"] = selectivity
        out["top_classes"] = np.argsort(-np.nan_to_num(class_mean, nan=-1), axis=1).astype(np.int64)
    if ablated:
        out["ablation_accuracy"] = rng.uniform(0, 1, (units, len(CLASSES))).astype(np.float32)
        out["ablation_loss"] = rng.uniform(0.5, 1.5, units).astype(np.float32)
    return out


def write_atlas(folder: Path, classes: bool = True, ablation: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """An atlas result saved in ``folder``: conv1, features.3 and fc (fc without class statistics),
    weights between conv1 and features.3, correlation between features.3 and fc, features.3 ablated."""
    rng = np.random.default_rng(seed)
    names = list(LAYERS)
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        ablated = ablation and name == "features.3"
        for key, value in layer_arrays(name, rng, classes and name != "fc", ablated).items():
            arrays[f"{name}/{key}"] = value
    kinds = {("conv1", "features.3"): "weights", ("features.3", "fc"): "correlation"}
    connections: dict[str, Any] = {name: {"prev": None, "next": None} for name in names}
    for (below, above), kind in kinds.items():
        connections[below]["next"] = {"layer": above, "kind": kind}
        connections[above]["prev"] = {"layer": below, "kind": kind}
        up = np.stack([rng.permutation(LAYERS[below][0])[:M] for _ in range(LAYERS[above][0])])
        down = np.stack([rng.permutation(LAYERS[above][0])[:M] for _ in range(LAYERS[below][0])])
        arrays[f"{above}/prev_units"] = up.astype(np.int64)
        arrays[f"{above}/prev_strength"] = np.sort(rng.uniform(-1, 1, (LAYERS[above][0], M)))[:, ::-1].astype(
            np.float32
        )
        arrays[f"{below}/next_units"] = down.astype(np.int64)
        arrays[f"{below}/next_strength"] = np.sort(rng.uniform(0, 2, (LAYERS[below][0], M)))[:, ::-1].astype(np.float32)
    summary = {
        "layers": names,
        "units": {name: LAYERS[name][0] for name in names},
        "spatial": {name: LAYERS[name][1] for name in names},
        "receptive_field": {name: LAYERS[name][2] for name in names},
        "images": IMAGES,
        "classes": CLASSES if classes else [],
        "class_labels": LABELS if classes else [],
        "k": K,
        "n_images": len(IMAGES),
        "connections": connections,
        "ablation": (
            {
                "images": 30,
                "layers": ["features.3"],
                "classes": CLASSES,
                "base_accuracy": [0.8, None, 0.5],
                "base_loss": 0.9,
                "base_accuracy_mean": 0.65,
            }
            if ablation
            else None
        ),
        "seconds_scan": 1.0,
        "seconds_project": 2.0,
        "seconds_ablation": 3.0,
        "patch_size": P,
    }
    vizkit.Result(analysis="atlas", summary=summary, arrays=arrays).save(folder)
    return arrays


@pytest.fixture(scope="module")
def report_root(tmp_path_factory, app) -> Path:
    """A report over two atlas results: ``full`` (classes, ablation) and ``plain`` (neither)."""
    root = tmp_path_factory.mktemp("atlas-report")
    write_atlas(root / "full")
    write_atlas(root / "plain", classes=False, ablation=False, seed=1)
    _path, count = write_report(root, app)
    assert count == 2
    return root


def unit_page(root: Path, slug: str, layer: str, unit: int) -> Path:
    return root / ASSETS / slug / "atlas" / layer / f"{unit}.html"


def section(text: str, slug: str) -> str:
    return text.split(f'id="res-{slug}"', 1)[1].split("</section>", 1)[0]


class Links(HTMLParser):
    """Every link, picture and CSS ``url(...)`` of a page, and its element ids."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.links.append(value)
            if name == "id":
                self.ids.add(value)
            if name == "style":
                self.links.extend(re.findall(r"url\('([^']*)'\)", value))


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def unresolved(path: Path) -> list[str]:
    """The links of the page at ``path`` whose file (and anchor in it) does not exist."""
    bad = []
    for link in parse(path).links:
        parts = urlsplit(link)
        if parts.scheme or link.startswith("data:"):
            continue
        target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if not target.is_file() or (parts.fragment and parts.fragment not in parse(target).ids):
            bad.append(link)
    return bad


# ------------------------------------------------------------------------------------ pages
def test_the_report_has_a_page_for_every_unit_of_every_layer(report_root):
    text = (report_root / "index.html").read_text()
    for slug in ("full", "plain"):
        placed = section(text, slug)
        assert "Unit atlas" in placed and "unavailable" not in placed and "could not show" not in placed
        for layer, (units, _spatial, _rf) in LAYERS.items():
            for u in range(units):
                assert unit_page(report_root, slug, layer, u).is_file(), (slug, layer, u)
            assert not unit_page(report_root, slug, layer, units).exists()
            assert (report_root / ASSETS / slug / "atlas" / layer / "sprite.png").is_file()
            thumbs = re.findall(rf'href="{ASSETS}/{slug}/atlas/{re.escape(layer)}/(\d+)\.html"', placed)
            assert thumbs == [str(u) for u in range(units)]  # every unit, in unit order without the script


def test_every_link_and_picture_resolves(report_root):
    index = report_root / "index.html"
    assert not unresolved(index)
    pages = sorted((report_root / ASSETS).rglob("*.html"))
    assert len(pages) == 2 * sum(units for units, _s, _r in LAYERS.values())
    for page in pages:
        assert not unresolved(page), page
    links = parse(unit_page(report_root, "full", "features.3", 2)).links
    assert "../../../../index.html#res-full" in links and "../../../../index.html#atlas-full-1" in links
    assert "1.html" in links and "3.html" in links  # the neighbouring units
    assert "2.png" in links  # the exemplars' strip


def test_a_unit_page_shows_its_own_numbers(report_root):
    root = report_root / "full"
    with np.load(root / "arrays.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    layer, u = "features.3", 3
    text = unit_page(report_root, "full", layer, u).read_text()
    assert "<title>features.3 unit 3</title>" in text and "<h1>features.3 unit 3</h1>" in text
    top = int(arrays[f"{layer}/top_classes"][u, 0])
    assert f"<dt>top class</dt><dd>{view.esc(LABELS[top])}</dd>" in text
    selectivity = float(arrays[f"{layer}/selectivity"][u])
    assert f"<dt>selectivity</dt><dd>{vizkit.toolkit.report.format_number(selectivity)}</dd>" in text
    mean_max = float(arrays[f"{layer}/mean_max"][u])
    assert f"<dd>{vizkit.toolkit.report.format_number(mean_max)}</dd>" in text
    assert "cassette &amp; &lt;player&gt;" in text and "<player>" not in text  # labels escaped
    # exemplars: each winner's activation and image file name
    for slot in range(K):
        value = float(arrays[f"{layer}/top_values"][u, slot])
        name = Path(IMAGES[arrays[f"{layer}/top_images"][u, slot]]).name
        assert f"<b>#{slot + 1}</b>activation {vizkit.toolkit.report.format_number(value)} · " in text
        assert f">{name}</span>" in text
    # connections: links to the previous layer's units by weights, the next layer's by correlation
    for direction, other in (("prev", "conv1"), ("next", "fc")):
        for slot, v in enumerate(arrays[f"{layer}/{direction}_units"][u]):
            strength = vizkit.toolkit.report.format_number(float(arrays[f"{layer}/{direction}_strength"][u, slot]))
            kind = "weights" if other == "conv1" else "correlation"
            link = f'<a class="conn" href="../{other}/{v}.html"'
            assert link in text, link
            assert f"<span>unit {v}</span><span>{kind} {strength}</span>" in text
    assert "L2 norm of the weights" in text and "Pearson r" in text
    # ablation: loss change and the top class's accuracy drop
    loss = float(arrays[f"{layer}/ablation_loss"][u])
    assert f"loss 0.9 → {vizkit.toolkit.report.format_number(loss)}" in text
    if top != 1:  # class 1 has no base accuracy
        after = float(arrays[f"{layer}/ablation_accuracy"][u, top])
        change = 100 * (after - [0.8, None, 0.5][top])
        assert f"{'+' if change > 0 else '−'}{vizkit.toolkit.report.format_number(abs(change))} pts" in text
    # the histogram: an SVG with its axes labelled
    assert "<svg" in text and ">images</text>" in text and "maximum over an image</text>" in text


def test_pages_of_layers_without_classes_ablation_or_winners(report_root):
    fc = unit_page(report_root, "full", "fc", 0).read_text()
    assert "no class statistics for this layer" in fc and "this layer was not ablated" in fc
    assert "no next layer in this atlas" in fc
    plain = unit_page(report_root, "plain", "features.3", 0).read_text()
    assert "Classes" not in plain and "not measured: run the atlas with --ablation N" in plain
    silent = unit_page(report_root, "full", "conv1", 0).read_text()
    assert (
        "no image of the scan activated this unit (all 3 slots are empty)" in silent and "no previous layer" in silent
    )
    assert "all in one picture" not in silent
    partly = unit_page(report_root, "full", "conv1", 1).read_text()
    assert "1 of the 3 slots are empty: no further image" in partly and partly.count("<figure>") == K - 1
    text = (report_root / "index.html").read_text()
    assert 'data-role="atlas-class"' in section(text, "full") and 'data-role="atlas-class"' not in section(
        text, "plain"
    )
    assert 'value="ablation"' in section(text, "full") and 'value="ablation"' not in section(text, "plain")


def test_the_index_carries_each_units_numbers_for_the_script(report_root):
    with np.load(report_root / "full" / "arrays.npz") as npz:
        selectivity, active = npz["features.3/selectivity"], npz["features.3/active_fraction"]
        top = npz["features.3/top_classes"]
    placed = section((report_root / "index.html").read_text(), "full")
    layer = placed.split('data-layer="features.3"', 1)[1].split('class="atlas-layer"', 1)[0]
    units = re.findall(r'<a class="atlas-unit[^"]*" href="[^"]+" title="([^"]+)"([^>]+)>', layer)
    assert len(units) == LAYERS["features.3"][0]
    for u, (title, attributes) in enumerate(units):
        data = dict(re.findall(r'data-([a-z]+)="([^"]*)"', attributes))
        assert int(data["unit"]) == u and int(data["class"]) == top[u, 0]
        if math.isfinite(selectivity[u]):
            assert float(data["selectivity"]) == pytest.approx(selectivity[u], rel=1e-5)
        else:
            assert data["selectivity"] == "" and "selectivity undefined" in title
        assert float(data["active"]) == pytest.approx(active[u], rel=1e-5)
        assert data["ablation"] != "" or top[u, 0] == 1  # class 1 has no base accuracy
        assert f"top class {view.esc(LABELS[top[u, 0]])}" in title


def test_the_pictures_are_the_units_own(report_root):
    folder = report_root / ASSETS / "full" / "atlas" / "conv1"
    sprite = np.asarray(Image.open(folder / "sprite.png").convert("RGB"))
    width, height = view.CELL
    assert sprite.shape == (height, 4 * width, 3)  # four units in one row
    assert sprite[10, 10].tolist() == list(view.SILENT)  # unit 0 never fired
    assert sprite[10, width + 10].tolist() == [60, 0, 0]  # unit 1's strongest patch: red 60, slot 0
    strip = np.asarray(Image.open(folder / "2.png").convert("RGB"))
    assert strip.shape == (P, K * (2 * P + view.GAP), 3)
    for slot in range(K):
        assert strip[2, slot * (2 * P + view.GAP) + 2].tolist() == [90, 40 * slot, 0]
    projection = strip[:, P + view.GAP : 2 * P + view.GAP].astype(int)
    assert projection.std() > 10  # a projection, not a blank


def test_a_second_report_draws_nothing_and_a_changed_result_is_redrawn(tmp_path, app, monkeypatch):
    write_atlas(tmp_path / "a")
    write_report(tmp_path, app)
    sprite = tmp_path / ASSETS / "a" / "atlas" / "conv1" / "sprite.png"
    page = unit_page(tmp_path, "a", "conv1", 2)
    before = (sprite.stat().st_mtime_ns, page.stat().st_mtime_ns)
    manifest = json.loads((tmp_path / ASSETS / "a" / "assets.json").read_text())
    assert manifest["pages"] == {"slug": "a", "version": view.PAGE_VERSION, "featvis": []}  # no featvis result here
    drawn: list[str] = []
    real_draw = view.draw_layer
    monkeypatch.setattr(view, "draw_layer", lambda arrays, layer, folder: drawn.append(layer.name))
    write_report(tmp_path, app)
    assert drawn == [] and (sprite.stat().st_mtime_ns, page.stat().st_mtime_ns) == before
    # a unit's picture lost: its layer is drawn again, the others are not
    (sprite.parent / "1.png").unlink()
    monkeypatch.setattr(view, "draw_layer", lambda *args: (drawn.append(args[1].name), real_draw(*args)))
    write_report(tmp_path, app)
    assert drawn == ["conv1"] and (sprite.parent / "1.png").is_file()
    # the result moved (another slug): pictures reused from nowhere else, pages written anew
    shutil.move(tmp_path / "a", tmp_path / "b")
    drawn.clear()
    write_report(tmp_path, app)
    assert drawn == list(LAYERS)
    assert "../../../../index.html#res-b" in unit_page(tmp_path, "b", "conv1", 2).read_text()
    assert not (tmp_path / ASSETS / "a").exists()


def test_a_nested_reports_pictures_are_taken_and_its_pages_rewritten(tmp_path, app, monkeypatch):
    write_atlas(tmp_path / "sub" / "r")
    write_report(tmp_path / "sub", app)
    assert "#res-r" in unit_page(tmp_path / "sub", "r", "fc", 1).read_text()
    drawn: list[str] = []
    monkeypatch.setattr(view, "draw_layer", lambda arrays, layer, folder: drawn.append(layer.name))
    write_report(tmp_path, app)
    assert drawn == []  # the sub-report's pictures were taken
    assert "#res-sub-r" in unit_page(tmp_path, "sub-r", "fc", 1).read_text()  # the link back names this report's anchor
    assert not unresolved(unit_page(tmp_path, "sub-r", "fc", 1))
    assert "#res-r" in unit_page(tmp_path / "sub", "r", "fc", 1).read_text()  # the sub-report's own pages kept


def test_a_broken_result_is_said_not_raised(tmp_path, app):
    arrays = write_atlas(tmp_path / "a")
    del arrays["features.3/top_images"]
    np.savez(tmp_path / "a" / "arrays.npz", **arrays)
    text = (write_report(tmp_path, app)[0]).read_text()
    assert "Unit atlas unavailable: arrays.npz lacks features.3/top_images" in text


def test_layer_folders_keep_dots_and_stay_inside_the_atlas():
    taken: set[str] = set()
    assert view.layer_folder("features.12", taken) == "features.12"
    assert view.layer_folder("a/b", taken) == "a_b" and view.layer_folder("a\\b", taken) == "a_b~2"
    assert view.layer_folder("Features.12", taken) == "Features.12~2"  # case-insensitive file systems


def test_picture_arrays_are_read_in_slices(tmp_path):
    array = np.arange(5 * 3 * 2, dtype=np.float16).reshape(5, 3, 2)
    vizkit.Result(analysis="x", arrays={"l.1/projections": array}).save(tmp_path)
    slices = list(view.read_rows(tmp_path / "arrays.npz", "l.1/projections", 2))
    assert [len(s) for s in slices] == [2, 2, 1] and np.array_equal(np.concatenate(slices), array)
    assert view.array_shape(tmp_path / "arrays.npz", "l.1/projections") == (5, 3, 2)


def test_vizkit_report_uses_the_installed_atlas_view(tmp_path):
    """``vizkit report DIR`` on the command line, with the installed plugins: the atlas is shown
    by this view (skipped while the installed ``atlas`` analysis carries another)."""
    analysis = vizkit.make_app().analyses.get("atlas")
    if analysis is None or analysis.view is None or analysis.view.render.__module__ != view.__name__:
        pytest.skip("the installed atlas analysis does not carry this view")
    write_atlas(tmp_path / "atlas")
    assert main(["report", str(tmp_path)]) == 0
    assert "Unit atlas" in (tmp_path / "index.html").read_text()
    assert unit_page(tmp_path, "atlas", "features.3", 5).is_file()


# ------------------------------------------------------------------------------ the browser
@pytest.fixture(scope="module")
def browser():
    from test_report_browser import chromium_binary

    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary found (apt-get install -y chromium, or set VIZKIT_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, path: Path, width: int):
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.goto(path.as_uri(), wait_until="load")
    return page, problems


def grid_units(page, layer: str, slug: str = "full") -> list[tuple[int, bool]]:
    """The thumbnails of a layer of a result in their order on the page: (unit, shown)."""
    return page.eval_on_selector_all(
        f'#res-{slug} .atlas-layer[data-layer="{layer}"] .atlas-unit',
        "units => units.map(u => [parseInt(u.dataset.unit, 10), !u.hidden && u.offsetParent !== null])",
    )


def test_the_atlas_index_sorts_and_filters_in_the_browser(browser, report_root):
    with np.load(report_root / "full" / "arrays.npz") as npz:
        selectivity = npz["features.3/selectivity"].astype(float)
        active = npz["conv1/active_fraction"].astype(float)
        top = npz["features.3/top_classes"][:, 0]
    page, problems = open_page(browser, report_root / "index.html", 1280)
    box = page.locator("#res-full .atlas")
    assert box.locator(".atlas-controls").is_visible()  # the script shows the controls
    assert [u for u, shown in grid_units(page, "features.3") if shown] == list(range(6))
    # the sprite's cell of each thumbnail is drawn (a background image, loaded)
    loaded = page.evaluate(
        """() => Promise.all([...document.querySelectorAll('#res-full .atlas-grid')].map(g => new Promise(done => {
            const src = getComputedStyle(g.querySelector('.atlas-unit:not(.atlas-silent) .atlas-thumb')).backgroundImage.slice(5, -2);
            const img = new Image(); img.onload = () => done(img.naturalWidth); img.onerror = () => done(0); img.src = src;
        })))"""
    )
    assert len(loaded) == 3 and all(width > 0 for width in loaded)

    box.locator("[data-role=atlas-sort]").select_option("selectivity")
    expected = sorted(range(6), key=lambda u: (math.isnan(selectivity[u]), -np.nan_to_num(selectivity[u]), u))
    assert [u for u, _shown in grid_units(page, "features.3")] == expected
    box.locator("[data-role=atlas-sort]").select_option("active")
    assert [u for u, _shown in grid_units(page, "conv1")] == sorted(range(4), key=lambda u: (-active[u], u))

    box.locator("[data-role=atlas-class]").select_option("2")
    shown = [u for u, visible in grid_units(page, "features.3") if visible]
    assert shown and sorted(shown) == sorted(int(u) for u in np.flatnonzero(top == 2))
    assert all(not visible for _u, visible in grid_units(page, "fc"))  # fc has no classes
    assert "have this top class" in box.locator("[data-role=atlas-status]").inner_text()
    box.locator("[data-role=atlas-class]").select_option("")
    assert all(visible for _u, visible in grid_units(page, "features.3"))

    # a thumbnail opens its unit's page
    page.click('#res-full .atlas-layer[data-layer="features.3"] .atlas-unit[data-unit="4"]')
    page.wait_for_load_state("load")
    assert page.title() == "features.3 unit 4"
    assert not problems, problems
    page.close()


@pytest.mark.parametrize("width", [1280, 420])
def test_the_index_and_a_unit_page_fit_the_screen(browser, report_root, width):
    for path, name in (
        (report_root / "index.html", "index"),
        (unit_page(report_root, "full", "features.3", 2), "unit"),
    ):
        page, problems = open_page(browser, path, width)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width, (name, width)
        if name == "unit":
            assert page.title() == "features.3 unit 2"
            sizes = page.eval_on_selector_all(".ex .pic", "els => els.map(e => e.getBoundingClientRect().width)")
            assert len(sizes) == K and min(sizes) > 100
            page.click("a[rel=next]")
            page.wait_for_load_state("load")
            assert page.title() == "features.3 unit 3"
        shot = path.parent / f"screenshot-{name}-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("CI") != "true":
            shutil.copyfile(shot, SCREENSHOTS / f"atlas_test_{name}_{width}.png")
        assert not problems, (name, width, problems)
        page.close()
