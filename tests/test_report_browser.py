"""The report in a real browser: headless Chromium (Debian's ``chromium`` package, driven by
Playwright pointed at the system binary) opens ``index.html`` from ``file://`` over small real
results and checks that it works there: no console errors, every image loaded, every
table-of-contents link lands on a section, the lightbox opens, and the top9 unit browser's
controls change what is shown; and, at 1400 px and on a 420 px phone, that the page never
scrolls sideways (also with every fold opened), leads with a front page of one card per result in
the paper's order, and folds the settings until asked. Skipped when no Chromium binary or no Playwright is installed
(``apt-get install -y chromium``; ``pip install playwright``: its own browser download is not
needed)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import vizkit
from helpers import assert_no_hooks
from vizkit.app.report import write_report

SCREENSHOT_COPY = Path("/tmp/report_screenshot.png")  # for a person to look at, outside CI
LONG_WORD = "x" * 300  # a value with nowhere to break


def chromium_binary() -> str | None:
    """``$VIZKIT_CHROMIUM``, else the first of chromium / chromium-browser / google-chrome found."""
    given = os.environ.get("VIZKIT_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="module")
def browser():
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


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory, offline_photo_list, bundled_model) -> Path:
    """Real results of the bundled model on shipped photographs: deconvnet and occlusion on two
    images, top9 over eight (16 maps of conv2), a third-party result with wide values (a 40-column
    table, a 300-character word), and the report over them."""
    root = tmp_path_factory.mktemp("browser-report")
    photos = offline_photo_list.read_text().splitlines()
    listing = root / "images.txt"
    listing.write_text("\n".join(photos[:8]))
    images = [photos[0], photos[9]]
    runs = {
        "deconvnet": dict(images=images, layer="conv5", top=2),
        "occlusion": dict(images=images[:1], size=48, stride=48),
        "top9": dict(data=str(listing), layer="conv2", channels="0-15", workers=0, patch_size=24, pages=1),
    }
    for name, options in runs.items():
        vizkit.run(name, bundled_model, **options).save(root / "results" / name)
        assert_no_hooks(bundled_model)
    wide = root / "results" / "wide"
    wide.mkdir()
    document = {
        "analysis": "wide-thing",
        "params": {"note": LONG_WORD},
        "matrix": {f"row{r}": {f"column_{c}": r * c + 0.5 for c in range(40)} for r in range(8)},
        "word": LONG_WORD,
        "files": {"figures": []},
    }
    (wide / "result.json").write_text(json.dumps(document))
    _path, count = write_report(root)
    assert count == 4
    return root


def visible_maps(page) -> list[int]:
    return page.eval_on_selector_all(
        ".unit-browser .unit:not([hidden])", "cards => cards.map(c => parseInt(c.dataset.map, 10))"
    )


def test_the_report_works_opened_from_disk(browser, report_folder):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.goto((report_folder / "index.html").as_uri(), wait_until="load")

    # every image (figures and unit mosaics) loaded
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert len(images) > 10
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert not broken, broken

    # every table-of-contents link lands on an element
    targets = page.eval_on_selector_all("nav.toc a", "links => links.map(a => a.getAttribute('href'))")
    assert len(targets) == 4
    for href in targets:
        assert href.startswith("#") and page.evaluate("id => !!document.getElementById(id)", href[1:]), href
    page.click(f"nav.toc a[href='{targets[-1]}']")
    assert page.evaluate("() => location.hash") == targets[-1]

    # a figure opens in the lightbox and Escape closes it
    page.click(".figures a.zoom")
    page.wait_for_selector("#lightbox img")
    page.wait_for_function("() => document.querySelector('#lightbox img').naturalWidth > 0")
    page.keyboard.press("Escape")
    assert page.query_selector("#lightbox") is None

    # the unit browser: 16 cards, sort by strength, filter, page
    strengths = dict(
        page.eval_on_selector_all(
            ".unit-browser .unit",
            "cards => cards.map(c => [parseInt(c.dataset.map, 10), parseFloat(c.dataset.strength)])",
        )
    )
    assert sorted(strengths) == list(range(16))
    assert visible_maps(page) == list(range(16))  # map index order, one page of 24
    page.select_option("[data-role=sort]", "strength")
    by_strength = visible_maps(page)
    assert by_strength == sorted(strengths, key=lambda m: (-strengths[m], m))
    assert by_strength[0] != 0 or max(strengths.values()) == strengths[0]
    page.select_option("[data-role=sort]", "weakest")
    assert visible_maps(page)[0] == min(strengths, key=lambda m: (strengths[m], m))
    page.select_option("[data-role=sort]", "index")

    page.fill("[data-role=filter]", "3, 5-7")
    assert visible_maps(page) == [3, 5, 6, 7]
    page.fill("[data-role=filter]", "nonsense")
    assert page.eval_on_selector("[data-role=filter]", "el => el.classList.contains('bad')")
    page.fill("[data-role=filter]", "")

    page.select_option("[data-role=page-size]", "12")
    assert visible_maps(page) == list(range(12))
    assert "of 16" in page.inner_text("[data-role=status]")
    page.click("[data-role=next]")
    assert visible_maps(page) == [12, 13, 14, 15]
    assert page.is_disabled("[data-role=next]") and not page.is_disabled("[data-role=prev]")
    page.click("[data-role=prev]")
    assert visible_maps(page) == list(range(12))

    silent = [m for m, s in strengths.items() if s == 0]
    page.select_option("[data-role=page-size]", "0")
    page.check("[data-role=hide-silent]")
    assert visible_maps(page) == [m for m in range(16) if m not in silent]
    page.uncheck("[data-role=hide-silent]")

    # a mosaic enlarges too
    page.click(".unit-browser a.zoom")
    page.wait_for_function(
        "() => document.querySelector('#lightbox img') && document.querySelector('#lightbox img').naturalWidth > 0"
    )
    page.click("#lightbox")
    assert page.query_selector("#lightbox") is None

    page.evaluate("() => window.scrollTo(0, 0)")
    shot = report_folder / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    if os.environ.get("CI") != "true":
        shutil.copyfile(shot, SCREENSHOT_COPY)
    assert not problems, problems
    page.close()


PAPER_ORDER = ["deconvnet", "top9", "occlusion", "wide-thing"]  # Fig. 1, Fig. 2, Fig. 7, beyond the paper


@pytest.mark.parametrize("width", [1400, 420])
def test_the_report_leads_with_pictures_and_fits_the_screen(browser, report_folder, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto((report_folder / "index.html").as_uri(), wait_until="load")

    def overflow() -> int:
        return page.evaluate("() => document.documentElement.scrollWidth") - width

    assert overflow() <= 0  # no sideways scroll
    broken = page.eval_on_selector_all(
        "img", "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'))"
    )
    assert not broken and page.eval_on_selector_all("img", "imgs => imgs.length") > 10

    # the front page: one card per result, in the paper's order, the first one in the first screen
    cards = page.eval_on_selector_all("ol.gallery a.card", "cards => cards.map(c => c.getAttribute('href'))")
    sections = page.eval_on_selector_all("section.result", "sections => sections.map(s => '#' + s.id)")
    assert cards == sections and len(cards) == 4
    names = page.eval_on_selector_all("ol.gallery .card-title b", "names => names.map(b => b.textContent)")
    assert names == PAPER_ORDER
    assert page.eval_on_selector("ol.gallery a.card img", "img => img.getBoundingClientRect().top") < 900
    first = page.eval_on_selector("section.result", "s => s.querySelector('img, details').tagName")
    assert first == "IMG"  # a section shows its figures before anything folded
    page.click(f"ol.gallery a.card[href='{cards[1]}']")
    assert page.evaluate("() => location.hash") == cards[1]

    # the unit browser's controls wrap on screen, none cut off
    rights = page.eval_on_selector_all(
        ".unit-controls > *", "els => els.map(e => e.getBoundingClientRect().right + window.scrollX)"
    )
    assert rights and max(rights) <= width

    # settings are folded: opening them shows the parameters
    meta = page.locator("section.result details.fold:has(.meta)").first
    assert meta.evaluate("d => !d.open") and not meta.locator(".meta").is_visible()
    meta.locator("summary").click()
    assert meta.evaluate("d => d.open") and meta.locator(".meta").is_visible()

    # every fold opened, wide tables and long words included: still no sideways scroll
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    assert overflow() <= 0
    page.evaluate("() => window.scrollTo(0, 0)")
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = false; })")
    shot = report_folder / f"report-{width}.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("CI") != "true":
        shutil.copyfile(shot, SCREENSHOT_COPY.with_name(f"report_screenshot_{width}.png"))
    page.close()
