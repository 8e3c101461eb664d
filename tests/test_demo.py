"""``vizkit demo`` (every analysis that declares a demo, then the report) and the sample images
(``vizkit.sample_images``, ``vizkit samples``), offline: photographs that ship with the
dependencies stand in for class folders, and a two-snapshot training run is made on the spot."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from PIL import Image

import vizkit
import vizkit.app.cli
from helpers import IMAGENETTE, needs_shared, shipped_photos
from vizkit.app import demo, downloads
from vizkit.app.cli import main
from vizkit.app.demo import DEMO_FILE, sample_image
from vizkit.app.downloads import Archive

BUILT_IN = ["deconvnet", "top9", "occlusion", "filters", "evolution", "train"]
BUILT_IN += ["correspondence", "invariance", "probes", "attribution", "sanity", "atlas", "featvis"]


# folders named as Imagenette's (the bundled model's classes), and the names the model gives them
WNIDS = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player"}


def photo_tree(root: Path, per_class: int, folders: list[str] | None = None) -> Path:
    """An ImageFolder tree: one class per shipped photograph (folders named after the photographs,
    or ``folders``), ``per_class`` crops of each (at most 12)."""
    for source, name in zip(shipped_photos(), folders or [p.stem for p in shipped_photos()]):
        image = Image.open(source).convert("RGB")
        image.thumbnail((240, 240))
        width, height = image.size
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            crop = image.crop((i * width // 40, i * height // 44, width - i * width // 48, height - i * height // 52))
            if i % 2:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop.save(folder / f"{source.stem}_{i}.jpg")
    return root


def training_run(folder: Path, data: Path) -> Path:
    """A `vizkit train` folder with two snapshots: initial weights (epoch 1), the bundled ones (2)."""
    folder.mkdir()
    trained = vizkit.load_model("zfnet-compact")
    torch.manual_seed(0)
    initial, _ = vizkit.build_model("zfnet-compact")
    torch.save(initial.state_dict(), folder / "weights_epoch001.pt")
    torch.save(trained.state_dict(), folder / "weights_epoch002.pt")
    vizkit.toolkit.write_run_info(folder, "zfnet-compact", data, {"epochs": 2}, vizkit.data.preprocess_for(trained))
    return folder


@pytest.fixture
def offline(tmp_path, monkeypatch, no_hooks_left):
    """Sample images from $VIZKIT_SAMPLES (a photo tree of three of the bundled model's classes,
    10 images each), no shared folder, a private feature cache; every model built during the
    test must be free of hooks at its end."""
    photo_tree(tmp_path / "data" / "train", 10, list(WNIDS))  # the quick demo's 10 a class
    monkeypatch.setenv("VIZKIT_SAMPLES", str(tmp_path / "data" / "train"))
    monkeypatch.setenv("VIZKIT_SHARED", str(tmp_path / "no-shared-here"))
    monkeypatch.setenv("VIZKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIZKIT_TRAIN_RUN", raising=False)
    monkeypatch.delenv("VIZKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./vizkit-train here
    return tmp_path


def only(monkeypatch, *names: str) -> None:
    """Disable every built-in plugin but ``names``."""
    monkeypatch.setenv("VIZKIT_DISABLE_PLUGINS", ",".join(n for n in BUILT_IN if n not in names))


@pytest.mark.slow
def test_quick_demo_runs_every_analysis_that_declares_one(offline, monkeypatch, capsys):
    monkeypatch.setenv("VIZKIT_TRAIN_RUN", str(training_run(offline / "run", offline / "data")))
    out = offline / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    demos = sorted(a.name for a in vizkit.make_app().analyses.values() if a.demo is not None)
    assert set(BUILT_IN) - {"train"} <= set(demos)
    record = json.loads((out / DEMO_FILE).read_text())
    assert record["quick"] and record["source"].startswith("VIZKIT_SAMPLES=")
    assert {name: entry["status"] for name, entry in record["analyses"].items()} == dict.fromkeys(demos, "ok")
    page = (out / "index.html").read_text()
    for name in demos:
        assert (out / name / "result.json").is_file()
        progress = [line for line in lines if line.startswith(f"demo: {name} ")]
        assert len(progress) == 1 and progress[0].endswith(str(out / name)), progress
        assert name in page
    # the data-set analyses get the whole pick, the single-image ones one image of it
    assert len(record["data"]) == 30 and len(record["images"]) == 1  # 3 classes x 10; one image
    assert lines[0].startswith("demo: zfnet-compact on 30 image(s) of 3 classes from VIZKIT_SAMPLES=")
    assert "(10 per class); the single-image analyses use 1 of them" in lines[0]
    assert not any("demo: note: only" in line for line in lines)  # the pick is whole
    top9 = json.loads((out / "top9" / "result.json").read_text())
    assert top9["inputs"]["data"].startswith("VIZKIT_SAMPLES=") and top9["inputs"]["data_images"] == 30
    assert top9["receptive_field"] < 144  # its patches are parts of the 144 px input
    # classes by the model's names, not the folders' wnids; no Caltech-101 parameter
    probes = json.loads((out / "probes" / "result.json").read_text())
    assert probes["classes"] == list(WNIDS.values()) and "exclude" not in probes["params"]
    assert [entry["class"] for entry in record["data"][::10]] == list(WNIDS.values())
    assert "at an end of the grid" not in captured.err  # a warning a demo user could not act on
    assert lines[-1].startswith(f"demo: report with {len(demos)} result(s): ")
    sanity = json.loads((out / "sanity" / "result.json").read_text())
    assert sanity["methods"] == ["deconvnet", "gradient"] and len(sanity["images"]) == 1
    # no hand-marked landmarks here: correspondence occluded fixed frame positions, and said so
    landmarks = json.loads((out / "landmarks.json").read_text())
    assert {"centre", "upper_left", "lower_right"} <= set(landmarks["images"][0])
    assert any("fixed frame positions" in line for line in lines)


@pytest.mark.slow
def test_the_full_demo_runs_sanity_on_one_of_its_images(offline, monkeypatch, capsys):
    only(monkeypatch, "sanity", "deconvnet", "attribution")  # the map methods come from these two
    out = offline / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    record = json.loads((out / DEMO_FILE).read_text())
    assert len(record["images"]) > 1 and record["analyses"]["sanity"]["status"] == "ok"
    sanity = json.loads((out / "sanity" / "result.json").read_text())
    assert len(sanity["images"]) == 1 and Path(sanity["images"][0]).name == Path(record["images"][0]).name
    assert sanity["methods"] == ["deconvnet", "guided", "gradient", "saliency", "layergradcam"]
    assert {"sanity.png", "sanity_curves.png"} <= {p.name for p in (out / "sanity").iterdir()}


def test_rerun_replaces_the_demos_results_and_drops_stale_ones(offline, monkeypatch, capsys):
    only(monkeypatch, "filters")

    def echo(ctx: vizkit.RunContext, word: str) -> vizkit.Result:
        return vizkit.Result(summary={"word": word})

    class Echo:
        @vizkit.hookimpl
        def register_analyses(self, register):
            register(
                vizkit.Analysis("echo", "repeat a word", echo, [vizkit.Option("word", str)], "none", {"word": "hi"})
            )

    out = offline / "demo"
    with_echo = vizkit.make_app(extra=[("echo", Echo())])
    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: with_echo)
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert json.loads((out / "echo" / "result.json").read_text())["word"] == "hi"
    first = (out / "filters" / "result.json").stat().st_mtime_ns
    monkeypatch.setattr(vizkit.app.cli, "make_app", vizkit.make_app)  # echo is gone
    assert main(["demo", "--quick", "--out", str(out)]) == 0  # no "already holds a result"
    assert (out / "filters" / "result.json").stat().st_mtime_ns > first
    assert not (out / "echo").exists() and "echo" not in (out / "index.html").read_text()
    assert list(json.loads((out / DEMO_FILE).read_text())["analyses"]) == ["filters"]

    foreign = offline / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vizkit: error: --out ") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["demo", "--quick", "--out", str(foreign), "--overwrite"]) == 0
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / "filters" / "result.json").is_file()


def test_a_failing_analysis_is_one_line_and_the_rest_still_run(offline, monkeypatch, capsys):
    only(monkeypatch, "filters", "evolution")

    def boom(ctx: vizkit.RunContext) -> vizkit.Result:
        raise RuntimeError("boom\nsecond line")

    class Broken:
        @vizkit.hookimpl
        def register_analyses(self, register):
            register(vizkit.Analysis("broken", "always fails", boom, inputs="none", demo={}))

    app = vizkit.make_app(extra=[("broken", Broken())])
    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: app)
    out = offline / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    broken = [line for line in lines if "broken" in line]
    assert len(broken) == 1 and broken[0].startswith("demo: broken ") and "FAILED after" in broken[0]
    assert broken[0].endswith("RuntimeError: boom second line")
    assert any(line.startswith("demo: evolution ") and "skipped: no training run at hand" in line for line in lines)
    assert (out / "filters" / "result.json").is_file() and (out / "index.html").is_file()
    assert captured.err.strip() == "vizkit: error: demo: 1 analysis(es) failed: broken"


@pytest.mark.parametrize("data", ["no/such/folder", "empty"])
def test_bad_data_is_a_one_line_usage_error(data, offline, capsys):
    (offline / "empty").mkdir()
    assert main(["demo", "--quick", "--data", data, "--out", str(offline / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vizkit: error: ") and data in err and len(err.strip().splitlines()) == 1
    assert not (offline / "demo").exists()


def test_sample_images_from_vizkit_samples(tmp_path, monkeypatch, capsys):
    root = tmp_path / "tree"
    for name in ("b_class", "a_class"):
        (root / name).mkdir(parents=True)
        for i in (3, 1, 2):
            Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(root / name / f"{i}.jpg")
    monkeypatch.setenv("VIZKIT_SAMPLES", str(root))
    picked = vizkit.sample_images(2)
    assert picked == [root / name / f"{i}.jpg" for name in ("a_class", "b_class") for i in (1, 2)]
    assert vizkit.sample_images(n_per_class=1) == [root / "a_class" / "1.jpg", root / "b_class" / "1.jpg"]
    assert len(vizkit.sample_images(5)) == 6  # every image when a class has fewer

    assert main(["samples", "--per-class", "1"]) == 0
    assert capsys.readouterr().out.split() == [str(root / "a_class" / "1.jpg"), str(root / "b_class" / "1.jpg")]
    assert main(["samples", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert not document["fallback"] and [i["class"] for i in document["images"]] == ["a_class"] * 2 + ["b_class"] * 2

    listing = tmp_path / "list.txt"  # a list file has no classes: its first 10 x n images
    listing.write_text("\n".join(str(p) for p in sorted(root.rglob("*.jpg"))))
    monkeypatch.setenv("VIZKIT_SAMPLES", str(listing))
    assert vizkit.sample_images(1) == sorted(root.rglob("*.jpg"))

    monkeypatch.setenv("VIZKIT_SAMPLES", str(tmp_path / "missing"))
    with pytest.raises(vizkit.UsageError, match="VIZKIT_SAMPLES="):
        vizkit.sample_images()
    with pytest.raises(vizkit.UsageError, match="at least 1"):
        vizkit.sample_images(0)


def test_sample_images_fall_back_to_matplotlibs_photo_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VIZKIT_SAMPLES", raising=False)
    monkeypatch.setenv("VIZKIT_SHARED", str(tmp_path / "nothing"))
    with pytest.warns(UserWarning, match="VIZKIT_SAMPLES"):
        assert vizkit.sample_images() == [sample_image()]
    assert main(["samples"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(sample_image())] and captured.err.startswith("vizkit: note: ")


def test_sample_images_from_the_shared_imagenette_val_tree(monkeypatch):
    needs_shared(IMAGENETTE / "val")
    monkeypatch.delenv("VIZKIT_SAMPLES", raising=False)
    monkeypatch.setenv("VIZKIT_SHARED", str(IMAGENETTE.parents[1]))
    picked = vizkit.sample_images(2)
    assert len(picked) == 20 and picked == vizkit.sample_images(2)  # deterministic
    assert all(sum(p.parent.name == folder for p in picked) == 2 for folder in {p.parent.name for p in picked})
    assert all(p.is_relative_to(IMAGENETTE / "val") for p in picked)  # read where they are, never copied


def test_one_image_of_one_class_says_so_and_what_correspondence_lacks(offline, monkeypatch, capsys):
    only(monkeypatch, "correspondence")
    folder = offline / "mine" / "n01440764"
    folder.mkdir(parents=True)
    Image.open(shipped_photos()[0]).convert("RGB").save(folder / "only.jpg")
    assert main(["demo", "--quick", "--data", str(offline / "mine"), "--out", str(offline / "demo")]) == 0
    out = capsys.readouterr().out
    assert "on 1 image(s) of 1 class from --data" in out  # not "1 classes"
    line = next(line for line in out.splitlines() if line.startswith("demo: correspondence"))
    assert "skipped: needs landmarks on two or more images, and has 1" in line
    assert "pass --data with more images" in line  # --data was given: "pass --data" alone would puzzle


@pytest.mark.parametrize("quick", [False, True])
def test_the_demo_layers_see_a_part_of_the_image_and_data_set_analyses_get_more_images(quick, bundled_model):
    """top9 and deconvnet project from a layer whose receptive field is a part of the 144 px input
    (conv5's is all of it: its 'patches' are whole images); the data-set analyses get many more
    images than the single-image ones."""
    app = vizkit.make_app()
    x = torch.zeros(1, 3, 144, 144)
    with vizkit.instrument(bundled_model) as im:
        for name in ("top9", "deconvnet"):
            analysis = app.analyses[name]
            options = {**(analysis.demo or {}), **((analysis.demo_quick or {}) if quick else {})}
            boxes = vizkit.engine.receptive_boxes(im, x, options["layer"])
            sides = torch.maximum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])
            # two thirds of the input at most: conv3 sees 75 px, conv4 107 px, conv5 all 144
            assert int(sides.max()) <= 144 * 2 // 3, (name, options["layer"], int(sides.max()))
    amounts = demo.QUICK if quick else demo.FULL
    assert amounts.per_class * 10 >= (100 if quick else 300) and amounts.images <= 4
    assert amounts.per_class * 10 > 20 * amounts.images


def test_probes_are_skipped_in_one_line_when_too_few_images_a_class(offline, monkeypatch, capsys):
    only(monkeypatch, "probes", "top9")
    photo_tree(offline / "few", 4, list(WNIDS))
    out = offline / "demo"
    assert main(["demo", "--quick", "--data", str(offline / "few"), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("demo: zfnet-compact on 12 image(s) of 3 classes from --data ")
    # fewer images than the demo asks for: said once, before the analyses
    assert lines[1] == (
        "demo: note: only 12 image(s) for the data-set analyses (probes, top9), fewer than the 10 a class "
        "the demo asks for; top-9 is selective only among a few hundred"
    )
    probes = [line for line in lines if line.startswith("demo: probes ")]
    assert len(probes) == 1 and len([line for line in lines if "have more than 6 images" in line]) == 1
    assert "skipped: fewer than two classes have more than 6 images (--train-per-class)" in probes[0]
    assert "has at most 4 in a class" in probes[0]
    record = json.loads((out / DEMO_FILE).read_text())
    assert record["analyses"]["probes"]["status"] == "skipped" and record["analyses"]["top9"]["status"] == "ok"
    assert not (out / "probes").exists()


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and records the method of every request (a HEAD asks, a GET downloads)."""

    methods: ClassVar[list[str]] = []

    def do_HEAD(self):
        self.methods.append("HEAD")
        super().do_HEAD()

    def do_GET(self):
        self.methods.append("GET")
        super().do_GET()

    def log_message(self, format, *args):  # silence the request log
        pass


@pytest.fixture
def no_samples(tmp_path, monkeypatch, no_hooks_left):
    """No images of the bundled model's classes anywhere: the demo falls back to one photograph."""
    monkeypatch.delenv("VIZKIT_SAMPLES", raising=False)
    monkeypatch.setenv("VIZKIT_SHARED", str(tmp_path / "no-shared-here"))
    monkeypatch.setenv("VIZKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIZKIT_TRAIN_RUN", raising=False)
    monkeypatch.chdir(tmp_path)
    only(monkeypatch, "filters")
    return tmp_path


@pytest.fixture
def archive_server(tmp_path):
    """A local HTTP server holding a stand-in for the sample archive; yields its Archive and the
    methods of the requests it got."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "imagenette2-160.tgz").write_bytes(b"not really an archive")
    RecordingHandler.methods = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RecordingHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/imagenette2-160.tgz"
    yield Archive(url, "0" * 32, "imagenette2-160/val/", "a stand-in", 1), RecordingHandler.methods
    server.shutdown()
    server.server_close()


def test_no_samples_and_a_reachable_server_the_first_line_offers_the_download(
    no_samples, archive_server, monkeypatch, capsys
):
    archive, methods = archive_server
    monkeypatch.setattr(downloads, "IMAGENETTE_160_VAL", archive)
    assert main(["demo", "--quick", "--out", str(no_samples / "demo")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == demo.DOWNLOAD_OFFER and "vizkit samples --download" in lines[0]
    assert sum("samples --download" in line for line in lines) == 1
    assert lines[1].startswith("demo: zfnet-compact on 1 image(s) from matplotlib's sample photograph")
    # asked, never fetched: one HEAD request, no GET, nothing in the cache
    assert methods == ["HEAD"] and not (no_samples / "cache" / "samples").exists()


def test_no_samples_and_no_server_no_offer_and_no_wait(no_samples, monkeypatch, capsys):
    with socket.socket() as sock:  # a port nothing listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = Archive(f"http://127.0.0.1:{port}/imagenette2-160.tgz", "0" * 32, "x/", "nowhere", 1)
    monkeypatch.setattr(downloads, "IMAGENETTE_160_VAL", closed)
    assert main(["demo", "--quick", "--out", str(no_samples / "demo")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == demo.NO_SAMPLES_NOTE and not any("--download" in line for line in lines)
    assert not (no_samples / "cache" / "samples").exists()


def test_the_reachability_check_is_bounded_and_downloads_nothing(archive_server):
    archive, methods = archive_server
    assert downloads.samples_reachable(archive) and methods == ["HEAD"]
    missing = Archive(archive.url.replace(".tgz", "-gone.tgz"), "0" * 32, "x/", "gone", 1)
    assert not downloads.samples_reachable(missing)  # a 404 is no offer
    # a server that never answers: given up after the timeout, not urllib's own (or DNS's) waits
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the connection, never answers
        mute = Archive(f"http://127.0.0.1:{silent.getsockname()[1]}/a.tgz", "0" * 32, "x/", "mute", 1)
        started = time.perf_counter()
        assert not downloads.samples_reachable(mute, timeout=0.5)
        assert time.perf_counter() - started < 1.5
