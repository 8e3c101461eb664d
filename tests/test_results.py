"""Results on disk: atomic, complete or absent, never overwritten by accident."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vizkit
import vizkit.framework.results as results_module
from vizkit.framework.results import Result
from vizkit.toolkit.figures import new_figure


def make_result() -> vizkit.Result:
    figure = new_figure(2, 2)
    figure.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    return vizkit.Result(
        analysis="demo",
        summary={"value": np.float32(1.5), "nan": float("nan")},
        arrays={"a": np.arange(6).reshape(2, 3)},
        figures={"plot": figure},
    )


def test_save_and_load(tmp_path):
    out = make_result().save(tmp_path / "r")
    document, arrays = vizkit.load_result(out)
    assert document["analysis"] == "demo" and document["value"] == 1.5 and document["nan"] is None
    assert document["files"] == {"arrays": "arrays.npz", "figures": ["plot.png"]}
    assert np.array_equal(arrays["a"], np.arange(6).reshape(2, 3))
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG"
    json.loads((out / "result.json").read_text())
    assert not list(out.glob("*.partial"))


def test_existing_result_is_refused_without_overwrite(tmp_path):
    make_result().save(tmp_path / "r")
    with pytest.raises(vizkit.UsageError, match="already holds a result"):
        make_result().save(tmp_path / "r")
    make_result().save(tmp_path / "r", overwrite=True)


def test_interrupted_save_leaves_no_result(tmp_path):
    result = make_result()

    class Broken:
        def get_dpi(self):
            return 100

        def savefig(self, *args, **kwargs):
            raise KeyboardInterrupt

    result.figures["broken"] = Broken()
    with pytest.raises(KeyboardInterrupt):
        result.save(tmp_path / "r")
    assert not (tmp_path / "r" / "result.json").exists()
    assert not list((tmp_path / "r").glob(".*partial"))


@pytest.mark.parametrize("key", ["model", "params", "files", "analysis"])
def test_a_summary_may_not_overwrite_the_reserved_keys(tmp_path, key):
    result = make_result()
    result.summary[key] = "mine"
    with pytest.raises(vizkit.VizkitError, match=f"reserved result key.*{key}"):
        result.save(tmp_path / "r")
    assert not (tmp_path / "r" / "result.json").exists()


def test_overwrite_leaves_exactly_the_new_result_and_keeps_unrelated_files(tmp_path):
    from matplotlib.figure import Figure

    out = tmp_path / "r"
    first = vizkit.Result(summary={"x": 1}, arrays={"a": np.zeros(3)})
    first.figures = {"one": Figure(), "two": Figure()}
    first.save(out)
    (out / "notes.txt").write_text("mine")
    (out / "checkpoint.pt").write_bytes(b"resume me")
    second = vizkit.Result(summary={"x": 2})
    second.figures = {"one": Figure()}
    second.save(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "notes.txt", "one.png", "result.json"]
    document, arrays = vizkit.load_result(out)
    assert document["x"] == 2 and arrays == {}


def test_scratch_files_are_deleted_only_once_the_result_is_saved(tmp_path, monkeypatch):
    """A scan checkpoint (file) and a resume cache (folder) outlive a failed save, for --resume."""
    out = tmp_path / "out"
    (out / ".cache").mkdir(parents=True)
    (out / ".cache" / "a.pt").write_bytes(b"x")
    (out / ".scan.pt").write_bytes(b"y")
    result = Result("demo", summary={"n": 1}, arrays={"a": np.zeros(2)})
    result.scratch = [out / ".scan.pt", out / ".cache"]
    assert "scratch" not in result.to_json()

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results_module, "write_atomic", full_disk)
    with pytest.raises(vizkit.VizkitError, match=r"cannot write the result into .*: No space left on device"):
        result.save(out)
    assert (out / ".scan.pt").exists() and (out / ".cache" / "a.pt").exists()
    monkeypatch.undo()
    result.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["arrays.npz", "result.json"]


def test_a_full_disk_at_save_is_one_line_through_the_cli(tmp_path, monkeypatch, capsys):
    from vizkit.app.cli import main

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results_module, "write_atomic", full_disk)
    assert main(["run", "filters", "--model", "zfnet-compact", "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vizkit: error: cannot write the result into "), err
    assert err[0].endswith("No space left on device") and not (tmp_path / "out" / "result.json").exists()


def test_pictures_are_saved_as_listed_pngs_and_an_overwrite_removes_the_old_ones(tmp_path):
    from PIL import Image

    out = tmp_path / "r"
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    first = vizkit.Result(
        "demo", summary={"x": 1}, pictures={"units/0.png": colour, "units/1.png": grey, "top.png": grey}
    )
    first.save(out)
    document, _ = vizkit.load_result(out)
    assert document["files"]["pictures"] == ["units/0.png", "units/1.png", "top.png"]
    assert np.array_equal(np.asarray(Image.open(out / "units" / "0.png")), colour)
    assert np.array_equal(np.asarray(Image.open(out / "units" / "1.png")), grey)
    (out / "units" / "mine.png").write_bytes(b"not the result's")
    second = vizkit.Result("demo", summary={"x": 2}, pictures={"units/1.png": colour})
    second.save(out, overwrite=True)
    assert sorted(p.name for p in (out / "units").iterdir()) == ["1.png", "mine.png"]
    assert not (out / "top.png").exists()
    assert "pictures" not in vizkit.Result("demo", summary={"x": 3}).to_json()["files"]


@pytest.mark.parametrize(
    "name, picture, message",
    [
        ("../up.png", np.zeros((2, 2, 3), np.uint8), "names a picture"),
        ("/abs.png", np.zeros((2, 2, 3), np.uint8), "names a picture"),
        ("units/.hidden.png", np.zeros((2, 2, 3), np.uint8), "names a picture"),
        ("units/a.jpg", np.zeros((2, 2, 3), np.uint8), "names a picture"),
        ("a.png", np.zeros((2, 2, 3), np.float32), "use uint8"),
        ("a.png", np.zeros((2, 2, 5), np.uint8), "use uint8"),
    ],
)
def test_a_bad_picture_is_refused_before_anything_is_written(tmp_path, name, picture, message):
    result = vizkit.Result("demo", summary={"x": 1}, pictures={name: picture})
    with pytest.raises(vizkit.VizkitError, match=message):
        result.save(tmp_path / "r")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
