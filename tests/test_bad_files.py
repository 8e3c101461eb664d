"""Dataset scans with bad files (issue 16): an unreadable file in --data is skipped with a
warning naming it, counted in result.json (``inputs.skipped_images``), never a winner, and the
result equals a run on the readable images alone; ``--strict`` stops at the first one with a
one-line error and no result folder; a folder with no readable image is a one-line error.

Every analysis that reads --data is covered (top9, probes, filters, evolution), through the CLI
entry ``vizkit.app.cli.main``, on the bundled zfnet-compact and a handful of small images.
"""

from __future__ import annotations

import io
import os
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vizkit
import vizkit_plugins.top9.scan as top9_scan
from helpers import shipped_photos
from vizkit.app.cli import main

# sorted order: the first bad file is b_truncated.jpg; with --batch-size 2 the third batch
# (d_empty.jpg, d_text.png) holds no readable image at all
GOOD = ("a0.jpg", "a1.jpg", "c0.jpg", "e0.jpg", "e1.jpg", "g_tiny.png")
BAD = {"b_truncated.jpg": "truncated", "d_empty.jpg": "empty file", "d_text.png": "not an image"}


def _good_images() -> dict[str, Image.Image]:
    photos = [Image.open(p).convert("RGB") for p in shipped_photos()]
    images = {}
    for i, name in enumerate(GOOD[:-1]):
        photo = photos[i % len(photos)]
        width, height = photo.size
        box = (i * width // 12, i * height // 14, width - (4 - i) * width // 12, height - i * height // 16)
        images[name] = photo.crop(box).resize((120 + 10 * i, 100 + 6 * i))
    images[GOOD[-1]] = Image.new("RGB", (3, 5), (200, 40, 90))  # tiny but fine: preprocessing copes, never skipped
    return images


def _write_bad(folder: Path, good: Image.Image) -> None:
    buffer = io.BytesIO()
    good.save(buffer, "JPEG", quality=90)
    (folder / "b_truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 6 // 10])  # header decodes
    (folder / "d_empty.jpg").write_bytes(b"")
    (folder / "d_text.png").write_text("this is not a picture\n")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """``mixed``: the good images and the bad files; ``good``: the same good images alone;
    ``bad``: only bad files; ``mixed_tree`` / ``good_tree``: two-class ImageFolder trees."""
    root = tmp_path_factory.mktemp("badfiles")
    images = _good_images()
    made = {name: root / name for name in ("mixed", "good", "bad", "mixed_tree", "good_tree")}
    for name in ("mixed", "good", "bad"):
        made[name].mkdir()
    for name, image in images.items():
        image.save(made["mixed"] / name)
        image.save(made["good"] / name)
    _write_bad(made["mixed"], images["a0.jpg"])
    _write_bad(made["bad"], images["a0.jpg"])
    for tree, with_bad in (("mixed_tree", True), ("good_tree", False)):
        for c, label in enumerate(("one", "two")):
            folder = made[tree] / label
            folder.mkdir(parents=True)
            for i, (name, image) in enumerate(images.items()):
                (image if c == 0 else image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).save(folder / f"{i}_{name}")
            if with_bad:
                _write_bad(folder, images["a0.jpg"])
    return made


pytestmark = pytest.mark.usefixtures("no_hooks_left")  # every model the CLI builds: no hooks at the end


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def read(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    return vizkit.load_result(out)


def assert_skipped(document: dict, count: int = 3) -> None:
    skipped = document["inputs"]["skipped_images"]
    assert skipped["count"] == count and skipped["listed"] == count
    assert {Path(f["path"]).name: f["why"] for f in skipped["files"]} == BAD
    assert skipped["why"] == {why: 1 for why in BAD.values()}


def assert_warned(err: str) -> None:
    assert "Traceback" not in err
    for name, why in BAD.items():
        lines = [line for line in err.splitlines() if name in line]
        assert len(lines) == 1 and why in lines[0] and lines[0].startswith("vizkit: warning: "), err
    assert "skipped 3 unreadable images" in err and "g_tiny" not in err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vizkit: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------ reading
def test_each_kind_of_bad_file_is_named_and_the_tiny_image_is_read(folders):
    for name, why in BAD.items():
        with pytest.raises(vizkit.data.UnreadableImage, match=re.escape(name)) as caught:
            vizkit.load_image(folders["mixed"] / name)
        assert caught.value.why == why and isinstance(caught.value, vizkit.UsageError)
    assert vizkit.load_image(folders["mixed"] / "g_tiny.png").size == (3, 5)


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    locked = tmp_path / "locked.jpg"
    _good_images()["a0.jpg"].save(locked)

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as patch:  # what a file the user may not read gives (also as root)
        patch.setattr(vizkit.data.images.Image, "open", denied)
        item = vizkit.ImageList([locked]).read(0)
    assert isinstance(item, vizkit.data.BadImage) and item.why == "permission denied" and item.path == str(locked)
    locked.chmod(0)
    try:
        if not os.access(locked, os.R_OK):  # for real, unless running as root (which reads it anyway)
            with pytest.raises(vizkit.data.UnreadableImage, match=r"locked\.jpg") as caught:
                vizkit.load_image(locked)
            assert caught.value.why == "permission denied"
    finally:
        locked.chmod(0o644)


def _tiny(path: Path, colour=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return path


def test_hidden_folders_are_no_images_and_no_classes(tmp_path):
    """Jupyter leaves ``.ipynb_checkpoints`` beside every notebook: its copies used to be read as
    images and, at the top of a tree, as a class of their own."""
    for name in ("cat/a.jpg", "cat/B.JPG", "dog/d.png"):
        _tiny(tmp_path / name)
    _tiny(tmp_path / ".ipynb_checkpoints/x-checkpoint.jpg")
    _tiny(tmp_path / "cat/.ipynb_checkpoints/a-checkpoint.jpg")
    _tiny(tmp_path / "dog/.d.png")
    listing = vizkit.data.image_list(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in listing.paths] == ["cat/B.JPG", "cat/a.jpg", "dog/d.png"]
    assert listing.classes == ["cat", "dog"] and listing.targets == [0, 0, 1]


def test_symlinked_class_folders_are_followed_but_never_round_a_loop(tmp_path):
    """A class folder that is a symlink (datasets assembled without copying) used to be left out
    without a word; torchvision's ImageFolder follows it. A link back up the tree is not followed;
    a broken link is kept, so reading it says the file is missing."""
    tree, elsewhere = tmp_path / "tree", tmp_path / "elsewhere"
    _tiny(tree / "cat/a.jpg")
    _tiny(elsewhere / "bird/b.png")
    (tree / "bird").symlink_to(elsewhere / "bird", target_is_directory=True)
    (tree / "cat/loop").symlink_to(tree, target_is_directory=True)
    (tree / "cat/gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    listing = vizkit.data.image_list(tree)
    assert [p.relative_to(tree).as_posix() for p in listing.paths] == ["bird/b.png", "cat/a.jpg", "cat/gone.jpg"]
    assert listing.classes == ["bird", "cat"] and listing.targets == [0, 1, 1]
    item = listing.read(2)
    assert isinstance(item, vizkit.data.BadImage) and item.why == "missing"


def test_list_files_with_a_byte_order_mark_crlf_and_comments(tmp_path):
    """Windows editors start UTF-8 files with a byte-order mark: it used to stick to the first path
    (an invisible character in 'do not exist, e.g. ...') or turn a first '# comment' into a path."""
    one, two = _tiny(tmp_path / "imgs/one.jpg"), _tiny(tmp_path / "imgs/two words.jpg")
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeff# my images\r\nimgs/one.jpg\r\n\r\nimgs/two words.jpg\r\n".encode())
    assert vizkit.data.image_list(listing).paths == [one, two]
    listing.write_bytes("\ufeffimgs/one.jpg\n".encode())
    assert vizkit.data.image_list(listing).paths == [one]


def test_an_image_listed_twice_is_refused(tmp_path):
    """The same file twice is two images to a scan (it could take two of top9's places)."""
    _tiny(tmp_path / "imgs/one.jpg")
    _tiny(tmp_path / "imgs/two.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/one.jpg\nimgs/two.jpg\n# again:\n./imgs/one.jpg\n")
    with pytest.raises(vizkit.UsageError, match=r"lists the same image twice, on lines 1 and 4"):
        vizkit.data.image_list(listing)


def test_read_batches_drops_bad_items_and_a_worker_error_stays_one_line(folders):
    data = vizkit.data.image_list(folders["mixed"], vizkit.Preprocess(resize=40, crop=32))
    record = vizkit.data.SkippedImages()
    seen = [
        i for _, indices in vizkit.data.read_batches(data, record, batch_size=2, workers=0) for i in indices.tolist()
    ]
    assert [data.paths[i].name for i in seen] == list(GOOD)
    assert sorted(Path(p).name for p in record.paths) == sorted(BAD)
    # a plugin with its own DataLoader and workers: torch re-raises the worker's error from its
    # traceback text; it still arrives as one line naming the file
    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=1)
    with pytest.raises(vizkit.data.UnreadableImage) as caught:
        list(loader)
    assert str(caught.value).startswith("cannot read image ") and "b_truncated.jpg" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_many_bad_files_name_the_first_few_and_count_the_rest(capsys):
    record = vizkit.data.SkippedImages(source="DATA")
    for i in range(30):
        record.add(vizkit.data.BadImage(i, f"/d/{i:02d}.jpg", "truncated", "image file is truncated"))
        record.add(vizkit.data.BadImage(i, f"/d/{i:02d}.jpg", "truncated", "image file is truncated"))  # once per file
    record.report("top9")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == record.WARN_FIRST + 2  # the first five, "more ...", the closing count
    assert [line.split()[5] for line in lines[: record.WARN_FIRST]] == [f"/d/{i:02d}.jpg" for i in range(5)]
    assert "skipped 30 unreadable images in DATA (30 truncated)" in lines[-1]
    summary = record.summary()
    assert summary["count"] == 30 and summary["listed"] == len(summary["files"]) == record.LISTED
    with pytest.raises(vizkit.data.UnreadableImage, match=r"/d/x\.jpg"):
        vizkit.data.SkippedImages(strict=True).add(vizkit.data.BadImage(0, "/d/x.jpg", "truncated", "cut"))


# ------------------------------------------------------------------------------------ top9
TOP9 = ["--model", "zfnet-compact", "--layer", "conv2", "--channels", "0-5", "--k", "3", "--patch-size", "16"]
TOP9 += ["--pages", "1", "--batch-size", "2", "--quiet"]


def _winner_names(document: dict, arrays: dict[str, np.ndarray]) -> list[list[str]]:
    return [[Path(document["images"][i]).name for i in row] for row in arrays["image_index"]]


@pytest.fixture(scope="module")
def top9_reference(folders, tmp_path_factory) -> tuple[dict, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("top9ref") / "good"
    assert main(["run", "top9", *TOP9, "--data", str(folders["good"]), "--workers", "0", "--out", str(out)]) == 0
    return read(out)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_top9_skips_bad_files_and_matches_the_good_images(folders, tmp_path, capsys, top9_reference, workers):
    code, err = cli(capsys, "run", "top9", *TOP9, "--data", folders["mixed"], "--workers", workers, "--out", tmp_path)
    assert code == 0, err
    assert_warned(err)
    document, arrays = read(tmp_path)
    assert_skipped(document)
    reference, expected = top9_reference
    names = _winner_names(document, arrays)
    assert not {n for row in names for n in row} & set(BAD)  # an unreadable file never wins
    assert names == _winner_names(reference, expected)
    np.testing.assert_allclose(arrays["values"], expected["values"], rtol=1e-5, atol=1e-6)
    assert np.array_equal(arrays["position"], expected["position"])
    assert document["n_images"] == reference["n_images"] == len(GOOD)
    assert reference["inputs"]["skipped_images"]["count"] == 0


@pytest.mark.slow
def test_top9_interrupted_and_resumed_over_bad_files(folders, tmp_path, capsys, monkeypatch, top9_reference):
    original = top9_scan.scan_batches

    def interrupted(loader, start):
        for number, images, indices in original(loader, start):
            if number == 3:  # after the batch of only bad files
                raise KeyboardInterrupt
            yield number, images, indices

    monkeypatch.setattr(top9_scan, "scan_batches", interrupted)
    args = ["run", "top9", *TOP9, "--data", folders["mixed"], "--workers", 0, "--out", tmp_path]
    code, err = cli(capsys, *args, "--checkpoint-every", 1)
    assert code == 130 and (tmp_path / ".top9-scan.pt").exists() and not (tmp_path / "result.json").exists()
    assert "b_truncated.jpg" in err and "d_text.png" in err
    monkeypatch.setattr(top9_scan, "scan_batches", original)
    code, err = cli(capsys, *args, "--checkpoint-every", 1, "--resume")
    assert code == 0, err
    document, arrays = read(tmp_path)
    assert_skipped(document)  # also the files met before the interruption
    reference, expected = top9_reference
    assert _winner_names(document, arrays) == _winner_names(reference, expected)
    np.testing.assert_allclose(arrays["values"], expected["values"], rtol=1e-5, atol=1e-6)


def test_top9_rank_zero_learns_the_files_other_processes_skipped(folders):
    """Under torchrun each process skips the bad files of its shard; rank 0 reports them all."""
    data = vizkit.data.image_list(folders["mixed"])
    mine = vizkit.data.SkippedImages()
    first = next(i for i, p in enumerate(data.paths) if p.name in BAD)
    mine.add(data.read(first))  # rank 0 met one; the other rank met the other two
    other = torch.tensor([int(p.name in BAD and i != first) for i, p in enumerate(data.paths)], dtype=torch.int32)
    group = types.SimpleNamespace(world=2, rank=0, all_gather=lambda mask: [mask, other])
    vizkit.toolkit.merge_skipped(mine, data, group)
    assert sorted(Path(p).name for p in mine.paths) == sorted(BAD)
    assert mine.why() == {why: 1 for why in BAD.values()}


# ------------------------------------------------------------------------------------ probes
# --test-per-class 50: every image of a class is used, so every bad file is met by the first pass
# and the folds are then drawn over the readable images alone (the good tree's draw)
PROBES = ["--model", "zfnet-compact", "--layers", "conv3", "--pool", "avg", "--train-per-class", "2"]
PROBES += ["--test-per-class", "50", "--folds", "2", "--cv-folds", "2", "--classifiers", "svm", "--workers", "0"]
PROBES += ["--batch-size", "3", "--quiet"]


def _chosen(document: dict, index: np.ndarray) -> list[str]:
    """class/file of the dataset indices ``index`` (-1: padding)."""
    listing = vizkit.data.image_list(document["inputs"]["data"]).paths
    return [f"{listing[i].parent.name}/{listing[i].name}" for i in index.ravel() if i >= 0]


def test_probes_leave_bad_files_out_of_the_folds(folders, tmp_path, capsys):
    runs = {}
    for tree in ("good_tree", "mixed_tree"):
        out = tmp_path / tree
        args = ["run", "probes", *PROBES, "--data", folders[tree], "--cache", tmp_path / f"cache_{tree}", "--out", out]
        code, err = cli(capsys, *args)
        assert code == 0, err
        runs[tree] = (read(out), err)
    (document, arrays), err = runs["mixed_tree"]
    (reference, expected), _ = runs["good_tree"]
    assert document["inputs"]["skipped_images"]["count"] == 6  # three per class folder
    assert "Traceback" not in err and err.count("skipping unreadable image") == 5  # then "more ..."
    assert "more unreadable images" in err and "skipped 6 unreadable images" in err
    for key in ("train_index", "test_index"):
        assert _chosen(document, arrays[key]) == _chosen(reference, expected[key]), key
        assert not {Path(name).name for name in _chosen(document, arrays[key])} & set(BAD)
    np.testing.assert_allclose(arrays["accuracy"], expected["accuracy"], atol=1e-6)
    # a second run reuses the cache and still reports the unreadable files
    args = ["run", "probes", *PROBES, "--data", folders["mixed_tree"], "--cache", tmp_path / "cache_mixed_tree"]
    code, err = cli(capsys, *args, "--out", tmp_path / "again")
    assert code == 0, err
    again, _ = read(tmp_path / "again")
    assert again["cache"]["reused"] and again["inputs"]["skipped_images"]["count"] == 6


def test_probes_replace_bad_files_drawn_into_a_fold(folders, tmp_path, capsys):
    """Few images per fold: the bad files a draw picks are replaced by readable ones, extracted
    in a further pass; none of them is in a fold."""
    args = ["run", "probes", *PROBES, "--data", folders["mixed_tree"], "--cache", tmp_path / "cache"]
    args[args.index("--test-per-class") + 1] = "2"
    code, err = cli(capsys, *args, "--out", tmp_path / "out")
    assert code == 0, err
    document, arrays = read(tmp_path / "out")
    skipped = document["inputs"]["skipped_images"]
    assert skipped["count"] >= 1 and "more_folders" in document["cache"]  # a further pass was needed
    assert err.count("skipping unreadable image") == min(5, skipped["count"])
    for key in ("train_index", "test_index"):
        names = _chosen(document, arrays[key])
        assert len(names) == 2 * 2 * 2 and not {Path(name).name for name in names} & set(BAD)


# ------------------------------------------------------------------------------------ filters
def test_filters_sample_skips_bad_files(folders, tmp_path, capsys):
    results = {}
    for name in ("good", "mixed"):
        code, err = cli(
            capsys, "run", "filters", "--model", "zfnet-compact", "--data", folders[name], "--out", tmp_path / name
        )
        assert code == 0, err
        results[name] = read(tmp_path / name)
    assert_warned(err)
    (document, arrays), (reference, expected) = results["mixed"], results["good"]
    assert_skipped(document)
    assert document["sample_images"] == reference["sample_images"] == len(GOOD)
    np.testing.assert_allclose(arrays["peak_activation"], expected["peak_activation"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ evolution
@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    """A training-run folder of zfnet-compact with two snapshots (the bundled weights, and them
    with the first conv's filters permuted and halved), made without training."""
    run = tmp_path_factory.mktemp("fakerun")
    model = vizkit.load_model("zfnet-compact")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    vizkit.toolkit.write_run_info(run, "zfnet-compact", run, {}, vizkit.data.preprocess_for(model))
    torch.save(state, run / "weights_epoch002.pt")
    early = dict(state)
    name = next(k for k in state if k.endswith("weight"))
    early[name] = state[name].flip(0) * 0.5
    torch.save(early, run / "weights_epoch001.pt")
    return run


def test_evolution_sample_skips_bad_files(folders, fake_run, tmp_path, capsys):
    results = {}
    for name in ("good", "mixed"):
        args = ["run", "evolution", "--run", fake_run, "--data", folders[name], "--sample", 50, "--maps", 2]
        args += ["--layers", "conv1", "--layers", "conv2", "--patch-size", 16, "--batch-size", 2, "--quiet"]
        code, err = cli(capsys, *args, "--out", tmp_path / name)
        assert code == 0, err
        results[name] = read(tmp_path / name)
    assert_warned(err)
    (document, arrays), (reference, expected) = results["mixed"], results["good"]
    assert_skipped(document)
    assert document["sample_images"] == reference["sample_images"] == len(GOOD)

    def winners(document_: dict, arrays_: dict[str, np.ndarray]) -> list[str]:
        return [Path(document_["images"][i]).name for i in arrays_["image_index"].ravel() if i >= 0]

    assert winners(document, arrays) == winners(reference, expected)
    assert not set(winners(document, arrays)) & set(BAD)
    np.testing.assert_allclose(arrays["values"], expected["values"], rtol=1e-5, atol=1e-6, equal_nan=True)
    assert document["channels"] == reference["channels"]


# ------------------------------------------------------------------------------------ strict, all bad
def _command(analysis: str, data: Path, fake_run: Path, cache: Path) -> list:
    if analysis == "top9":
        return ["run", "top9", *TOP9, "--data", data, "--workers", 0, "--checkpoint-every", 1]
    if analysis == "probes":
        return ["run", "probes", *PROBES, "--data", data, "--cache", cache]
    if analysis == "filters":
        return ["run", "filters", "--model", "zfnet-compact", "--data", data]
    return ["run", "evolution", "--run", fake_run, "--data", data, "--sample", 50, "--maps", 1, "--layers", "conv1"]


ANALYSES = ["top9", "probes", "filters", "evolution"]


@pytest.mark.parametrize("analysis", ANALYSES)
def test_strict_stops_at_the_first_bad_file(analysis, folders, fake_run, tmp_path, capsys):
    data = folders["mixed_tree" if analysis == "probes" else "mixed"]
    out = tmp_path / "out"
    code, err = cli(capsys, *_command(analysis, data, fake_run, tmp_path / "cache"), "--strict", "--out", out)
    first = "one/b_truncated.jpg" if analysis == "probes" else "mixed/b_truncated.jpg"
    assert_one_line_error(code, err, first, "--strict")
    assert not out.exists()  # no result, no checkpoint, no folder


@pytest.mark.parametrize("analysis", ANALYSES)
def test_a_folder_of_only_bad_files_is_a_one_line_error(analysis, folders, fake_run, tmp_path, capsys):
    data = folders["bad"]
    if analysis == "probes":  # an ImageFolder tree whose every file is bad
        data = tmp_path / "tree"
        for label in ("one", "two"):
            (data / label).mkdir(parents=True)
            _write_bad(data / label, _good_images()["a0.jpg"])
    out = tmp_path / "out"
    code, err = cli(capsys, *_command(analysis, data, fake_run, tmp_path / "cache"), "--out", out)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vizkit: error: "), err
    if analysis == "probes":  # both class folders, 3 files each
        assert f"no readable images in {data}: 6 skipped, e.g. {data / 'one' / 'b_truncated.jpg'}" in lines[0]
    else:
        assert f"no readable images in {data}: 3 skipped, e.g. {data / 'b_truncated.jpg'}" in lines[0]
    assert not (out / "result.json").exists()
