"""``vizkit demo`` (every analysis that declares a demo, then the report) and the sample images
(``vizkit.sample_images``, ``vizkit samples``), offline: photographs that ship with the
dependencies stand in for class folders, and a two-snapshot training run is made on the spot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import vizkit
import vizkit.app.cli
from helpers import IMAGENETTE, needs_shared, shipped_photos
from vizkit.app.cli import main
from vizkit.app.demo import DEMO_FILE, sample_image

BUILT_IN = ["deconvnet", "top9", "occlusion", "filters", "evolution", "train"]
BUILT_IN += ["correspondence", "invariance", "probes", "attribution"]


def photo_tree(root: Path, per_class: int) -> Path:
    """An ImageFolder tree: one class per shipped photograph, ``per_class`` crops of each."""
    for source in shipped_photos():
        image = Image.open(source).convert("RGB")
        image.thumbnail((240, 240))
        width, height = image.size
        folder = root / source.stem
        folder.mkdir(parents=True)
        for i in range(per_class):
            crop = image.crop((i * width // 12, i * height // 14, width - i * width // 16, height - i * height // 18))
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
    """Sample images from $VIZKIT_SAMPLES (a photo tree), no shared folder, a private feature
    cache; every model built during the test must be free of hooks at its end."""
    photo_tree(tmp_path / "data" / "train", 3)
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
    lines = capsys.readouterr().out.splitlines()
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
    assert len(record["data"]) == 9 and len(record["images"]) == 1  # 3 classes x 3; one image
    top9 = json.loads((out / "top9" / "result.json").read_text())["inputs"]  # which images, not null
    assert top9["data"].startswith("VIZKIT_SAMPLES=") and top9["data_images"] == 9
    assert lines[-1].startswith(f"demo: report with {len(demos)} result(s): ")
    # no hand-marked landmarks here: correspondence occluded fixed frame positions, and said so
    landmarks = json.loads((out / "landmarks.json").read_text())
    assert {"centre", "upper_left", "lower_right"} <= set(landmarks["images"][0])
    assert any("fixed frame positions" in line for line in lines)


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
