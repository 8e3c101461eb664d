"""Progress of long runs: a bar on a terminal, a plain line every ~10 s otherwise (done/total, the
rate, the time left), nothing with --quiet. The interval is ``$VIZKIT_PROGRESS_INTERVAL``; these
tests use a fake clock, or an interval of 0 (a line on every step) on real runs."""

from __future__ import annotations

import io
import re
import types

import pytest

import helpers
import vizkit
from vizkit.app import downloads
from vizkit.toolkit.progress import ProgressLines, progress_bar, progress_interval

LINE = re.compile(r"^(?P<desc>.+): (?P<done>[\d.]+)/(?P<total>[\d.]+) (?P<unit>.+?), (?P<rate>[\d.e+-]+) (?P=unit)/s")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_interval_with_done_total_rate_and_time_left():
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressLines(300, "top9", unit="images", interval=10, stream=out, clock=clock)
    for _ in range(3):  # 3 s: no line yet
        clock.now += 1
        bar.update(8)
    assert out.getvalue() == ""
    clock.now += 12  # 15 s after the start: 120 images, 8 images/s, 180 left = 22.5 s
    bar.update(96)
    assert out.getvalue() == "top9: 120/300 images, 8 images/s, 22 s left\n"
    clock.now += 5  # 5 s since the last line: nothing
    bar.update(40)
    assert out.getvalue().count("\n") == 1
    clock.now += 5  # 10 s since the last line: another one
    bar.update(40)
    assert out.getvalue().splitlines()[-1] == "top9: 200/300 images, 8 images/s, 12 s left"
    clock.now += 12.5
    bar.update(100)
    bar.close()  # a closing line: the whole run
    assert out.getvalue().splitlines()[-1] == "top9: 300/300 images, 8 images/s, 38 s in all"
    bar.close()  # closing again prints nothing
    assert len(out.getvalue().splitlines()) == 4


def test_a_short_loop_prints_nothing_and_resumed_loops_count_this_runs_rate():
    clock, out = FakeClock(), io.StringIO()
    with ProgressLines(10, "quick", interval=10, stream=out, clock=clock) as bar:
        clock.now += 9
        bar.update(10)
    assert out.getvalue() == ""  # done before the first interval: no line at all, no closing line
    bar = ProgressLines(1000, "scan", initial=400, unit="batches", interval=10, stream=out, clock=clock)
    clock.now += 100
    bar.update(200)  # 200 batches in this run's 100 s, 400 left
    assert out.getvalue() == "scan: 600/1000 batches, 2 batches/s, 3 min 20 s left\n"
    unknown = ProgressLines(None, "count", unit="MB", interval=0, stream=out, clock=clock)
    clock.now += 2
    unknown.update(2.5)
    assert out.getvalue().splitlines()[-1] == "count: 2.5 MB, 1.2 MB/s"  # no total: no time left


def test_progress_bar_is_a_bar_on_a_terminal_lines_elsewhere_and_silent_when_disabled(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bar = progress_bar(total=5, desc="scan", unit="images", stream=terminal)
    assert type(bar).__module__.startswith("tqdm")  # a tqdm bar
    bar.update(5)
    bar.close()
    assert "scan" in terminal.getvalue() and "\r" in terminal.getvalue()

    pipe = io.StringIO()  # not a terminal: lines
    bar = progress_bar(total=2, desc="scan", unit="images", stream=pipe, interval=0)
    bar.update(1)
    bar.update(1)
    bar.close()
    lines = pipe.getvalue().splitlines()
    assert [m["done"] for m in map(LINE.match, lines[:2])] == ["1", "2"] and lines[-1].endswith(" in all")

    for stream in (pipe, Terminal()):  # --quiet
        before = stream.getvalue()
        silent = progress_bar(total=2, desc="quiet", enabled=False, stream=stream, interval=0)
        silent.update(2)
        silent.close()
        assert stream.getvalue() == before

    monkeypatch.setenv("VIZKIT_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5 and progress_interval(7) == 7
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("VIZKIT_PROGRESS_INTERVAL", bad)
        assert progress_interval() == 10
    monkeypatch.delenv("VIZKIT_PROGRESS_INTERVAL")
    assert progress_interval() == 10


def test_a_cli_run_off_a_terminal_prints_progress_lines(
    offline_photo_list, bundled_model, tmp_path, capsys, monkeypatch
):
    """`vizkit run top9` with stderr not a terminal (captured): lines with done/total and the rate;
    with --quiet none."""
    monkeypatch.setenv("VIZKIT_PROGRESS_INTERVAL", "0")  # a line on every batch
    args = ["run", "top9", "--model", "zfnet-compact", "--data", offline_photo_list, "--layer", "conv2"]
    args += ["--channels", "0-3", "--k", "2", "--batch-size", "8", "--workers", "0", "--pages", "1"]
    code, _out, err = helpers.cli(capsys, *args, "--out", tmp_path / "a")
    assert code == 0, err
    lines = [m for m in map(LINE.match, err.splitlines()) if m and m["desc"] == "top9 scan conv2"]
    assert [m["done"] for m in lines[:3]] == ["8", "16", "24"] and {m["total"] for m in lines} == {"24"}
    assert all(m["unit"] == "images" and float(m["rate"]) > 0 for m in lines)
    assert re.search(r"^project conv2: \d+/\d+ images, ", err, re.M)  # the winners' projections too
    code, _out, err = helpers.cli(capsys, *args, "--out", tmp_path / "b", "--quiet")
    assert code == 0 and not LINE.search(err), err


@pytest.mark.parametrize(
    ("analysis", "options", "desc"),
    [
        ("occlusion", {"size": 48, "stride": 24}, "occlusion"),
        ("invariance", {"steps": 2, "transforms": "scale", "layers": "conv1"}, "invariance"),
    ],
)
def test_python_runs_with_progress_print_lines(analysis, options, desc, bundled_model, photo_path, capsys, monkeypatch):
    monkeypatch.setenv("VIZKIT_PROGRESS_INTERVAL", "0")
    vizkit.run(analysis, bundled_model, images=[photo_path], progress=True, **options)
    err = capsys.readouterr().err
    assert any(m and m["desc"] == desc for m in map(LINE.match, err.splitlines())), err
    vizkit.run(analysis, bundled_model, images=[photo_path], **options)  # progress=False: the default
    assert not LINE.search(capsys.readouterr().err)


def test_a_download_shows_its_progress_in_mb(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIZKIT_PROGRESS_INTERVAL", "0")
    source = tmp_path / "archive.tgz"
    source.write_bytes(b"\0" * 2_500_000)
    target = tmp_path / "fetched" / "archive.tgz"
    target.parent.mkdir()
    downloads.fetch(source.as_uri(), target)
    assert target.read_bytes() == source.read_bytes() and not list(target.parent.glob("*.part"))
    lines = capsys.readouterr().err.splitlines()
    counts = [line.split(",")[0].removeprefix("downloading archive.tgz: ") for line in lines]
    assert counts == ["1/2.5 MB", "2/2.5 MB", "2.5/2.5 MB", "2.5/2.5 MB"], lines  # each MB, then the closing line
    assert lines[-1].endswith(" in all")


def test_ipython_imported_is_no_notebook_but_a_jupyter_kernel_is(monkeypatch):
    """A process that merely imported IPython or ipykernel (a notebook test did) still gets lines;
    inside a Jupyter kernel, tqdm's own choice (a widget where ipywidgets is installed)."""
    ipython = pytest.importorskip("IPython")
    pytest.importorskip("ipykernel")
    assert isinstance(progress_bar(total=1, stream=io.StringIO()), ProgressLines)

    kernel = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setattr(ipython, "get_ipython", lambda: kernel)
    bar = progress_bar(total=1, stream=io.StringIO())
    assert type(bar).__module__.startswith("tqdm")
    bar.close()
