"""Interruption and resume of the long analyses (top9's scan, probes' feature extraction,
evolution's snapshots): a real `vizkit run` process stopped by SIGINT or SIGTERM at a random point
of its work exits with status 130, says on stderr the exact command that continues it, leaves no
result and no stray file behind, and `--resume` ends with exactly the arrays of a run that was
never stopped. A rerun without `--resume` says it discards the checkpoint; checkpoints are written
by time as well as by batches.

The model is a small convnet written here as a factory file; its forward sleeps
``TEST_NET_SLEEP`` seconds (so that a real process is slow enough to be caught in the middle) and,
for the in-process checks, sends itself ``TEST_NET_SIGNAL`` on its ``TEST_NET_SIGNAL_AT``-th call.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vizkit
import vizkit_plugins.evolution.cache as evolution_cache
import vizkit_plugins.top9.scan as top9_scan
from helpers import shipped_photos
from vizkit.app.cli import main

ANALYSES = ("top9", "probes", "evolution", "atlas")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
SLEEP = 0.15  # seconds a forward of the test model sleeps in the signalled processes
# the latest signal after the first checkpoint: the forwards left then take longer (top9: 23 batches
# of the scan; probes: 23 batches; evolution: 11 of the choice's scan, 12 for each of two more
# snapshots), so a run is caught anywhere in its scan (evolution: in any snapshot, or between two)
MAX_DELAY = {
    "top9": 0.7 * 23 * SLEEP,
    "probes": 0.7 * 23 * SLEEP,
    "evolution": 0.7 * 35 * SLEEP,
    "atlas": 0.7 * 23 * SLEEP,
}

TEST_NET = '''
"""A small convnet (32x32 inputs, 3 classes) for the interruption tests."""
import os
import signal
import time

import torch
from torch import nn

import vizkit


class TestNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(16 * 4 * 4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        time.sleep(float(os.environ.get("TEST_NET_SLEEP", "0")))
        if self.calls == int(os.environ.get("TEST_NET_SIGNAL_AT", "0")):
            os.kill(os.getpid(), getattr(signal, os.environ.get("TEST_NET_SIGNAL", "SIGINT")))
        return self.fc(self.conv2(self.conv1(x)).flatten(1))


def build(seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    model = TestNet()
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 16
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    model.vizkit_info = vizkit.models.ModelInfo(preprocess=vizkit.Preprocess(resize=36, crop=32))
    return model
'''


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The model file, 24 small photos (listed in a text file), a 3-class tree of them and a
    training run folder (run.json naming the model file, three weight snapshots)."""
    root = tmp_path_factory.mktemp("interrupt-inputs")
    net = root / "test_net.py"
    net.write_text(TEST_NET)
    paths = []
    for source in shipped_photos():
        image = Image.open(source).convert("RGB")
        width, height = image.size
        for i in range(8):
            variant = image.crop((i * width // 24, i * height // 32, width, height)).rotate(11 * i).resize((48, 48))
            path = root / "tree" / source.stem / f"{source.stem}_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            variant.save(path)
            paths.append(path)
    listing = root / "images.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    run = root / "run"
    run.mkdir()
    namespace: dict = {}
    exec(compile(TEST_NET, str(net), "exec"), namespace)
    for epoch in (1, 2, 3):
        torch.save(namespace["build"](seed=epoch).state_dict(), run / f"weights_epoch{epoch:03d}.pt")
    info = {"model": f"{net}:build", "data": str(root), "config": {}, "preprocess": None, "command": None}
    (run / "run.json").write_text(json.dumps(info))
    return {"net": net, "list": listing, "tree": root / "tree", "run": run}


def command(analysis: str, inputs: dict[str, Path], out: Path, cache: Path) -> list[str]:
    """The `vizkit` arguments of a run slow enough to stop in the middle (one image a batch)."""
    model = ["--model", f"{inputs['net']}:build"]
    common = ["--batch-size", "1", "--quiet", "--out", str(out)]
    if analysis == "top9":
        return [
            *("run", "top9", *model, "--data", str(inputs["list"]), "--layer", "conv2", "--k", "4"),
            *("--channels", "0-3", "--maps-per-page", "4", "--pages", "1", "--patch-size", "8", "--workers", "0"),
            *("--checkpoint-seconds", "0", *common),
        ]
    if analysis == "probes":
        return [
            *("run", "probes", *model, "--data", str(inputs["tree"]), "--layers", "conv1,conv2"),
            *("--train-per-class", "2", "--test-per-class", "6", "--folds", "1", "--cv-folds", "2", "--grid", "0.1,1"),
            *("--classifiers", "svm", "--workers", "0", "--cache", str(cache), *common),
        ]
    if analysis == "atlas":  # its scan is stopped; the projections and the ablation follow it
        return [
            *("run", "atlas", *model, "--data", str(inputs["tree"]), "--layers", "conv1,conv2,fc", "--k", "3"),
            *("--patch-size", "8", "--workers", "0", "--ablation", "3", "--ablation-layers", "fc"),
            *("--checkpoint-seconds", "0", *common),
        ]
    assert analysis == "evolution"
    return [
        *("run", "evolution", "--run", str(inputs["run"]), "--data", str(inputs["list"]), "--layers", "conv1"),
        *("--layers", "conv2", "--maps", "2", "--sample", "12", "--patch-size", "8"),
        *("--checkpoint-seconds", "0", *common),
    ]


def progress_files(analysis: str, out: Path, cache: Path) -> list[str]:
    """What an interrupted run of ``analysis`` keeps for --resume (the only files it may leave)."""
    if analysis == "top9":
        return glob.glob(str(out / ".top9-scan.pt"))
    if analysis == "evolution":
        return glob.glob(str(out / ".evolution" / "*.pt"))
    if analysis == "atlas":
        return glob.glob(str(out / ".atlas-scan.pt")) + glob.glob(str(out / ".atlas" / "*.pt"))
    return glob.glob(str(cache / "*" / ".progress-*.npy"))


# every file an interrupted run may leave in --out and --cache (relative paths)
KEPT = {
    "top9": r"\.top9-scan\.pt",
    "atlas": r"\.atlas-scan\.pt|\.atlas(/(project|ablation)-[\w.]+\.pt)?",
    "evolution": r"\.evolution(/(choice|epoch\d{3}|scan\d{3})\.pt)?",
    "probes": r"[0-9a-f]{24}(/(conv1|conv2)\.npy|/\.progress-[0-9a-f]{12}-rank0of1\.npy)?",
}


def every_file(*folders: Path) -> set[str]:
    return {str(p.relative_to(folder)) for folder in folders if folder.exists() for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def references(inputs, tmp_path_factory) -> dict[str, Path]:
    """Each analysis run once without interruption (in this process, without the sleep)."""
    root = tmp_path_factory.mktemp("references")
    found = {}
    for analysis in ANALYSES:
        out = root / analysis
        assert main(command(analysis, inputs, out, root / f"{analysis}-cache")) == 0
        found[analysis] = out
    return found


@pytest.fixture(scope="module")
def interrupted(inputs, request, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every (analysis, signal) run as a real process, all started at once; each is signalled at
    a random time after its first checkpoint appeared, before its work can be over (see
    ``MAX_DELAY``). A thread watches them while this one computes the references."""
    root = tmp_path_factory.mktemp("interrupted")
    chooser = random.Random()
    env = {
        **os.environ,
        "TEST_NET_SLEEP": str(SLEEP),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),  # this process's float rounding
    }
    runs: dict[tuple[str, str], dict] = {}
    for analysis in ANALYSES:
        for signum in SIGNALS:
            name = signal.Signals(signum).name
            out, cache = root / f"{analysis}-{name}", root / f"{analysis}-{name}-cache"
            argv = command(analysis, inputs, out, cache)
            process = subprocess.Popen(
                [sys.executable, "-m", "vizkit", *argv], stderr=subprocess.PIPE, text=True, env=env
            )
            runs[analysis, name] = {"argv": argv, "out": out, "cache": cache, "process": process, "signum": signum}

    def watch() -> None:
        deadline = time.monotonic() + 600
        waiting = dict(runs)
        while waiting and time.monotonic() < deadline:
            for key, run in list(waiting.items()):
                if run["process"].poll() is not None:  # ended before it could be signalled
                    run["early"] = True
                    del waiting[key]
                elif "at" not in run and progress_files(key[0], run["out"], run["cache"]):
                    run["delay"] = chooser.uniform(0.0, MAX_DELAY[key[0]])
                    run["at"] = time.monotonic() + run["delay"]
                elif "at" in run and time.monotonic() >= run["at"]:
                    run["process"].send_signal(run["signum"])
                    del waiting[key]
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        request.getfixturevalue("references")  # meanwhile (the processes start slowly)
        watcher.join(timeout=600)
        assert not watcher.is_alive(), "no checkpoint after 600 s"
        for run in runs.values():
            run["stderr"] = run["process"].communicate(timeout=600)[1]
            run["returncode"] = run["process"].returncode
    finally:
        for run in runs.values():
            run["process"].kill()
    return runs


pytestmark = pytest.mark.usefixtures("no_hooks_left")  # every model the runs built (stopped or not)


def same_arrays(left: Path, right: Path) -> None:
    with np.load(left / "arrays.npz") as a, np.load(right / "arrays.npz") as b:
        assert a.files == b.files
        for name in a.files:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name], equal_nan=True), name
    assert (left / "arrays.npz").read_bytes() == (right / "arrays.npz").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("signame", [signal.Signals(s).name for s in SIGNALS])
@pytest.mark.parametrize("analysis", ANALYSES)
def test_a_signalled_process_says_how_to_resume_and_resume_is_exact(
    analysis, signame, inputs, references, interrupted, capsys
):
    run = interrupted[analysis, signame]
    out, cache, err = run["out"], run["cache"], run["stderr"]
    assert not run.get("early"), f"{analysis} ended before it could be signalled:\n{err}"
    where = f"(signalled {run['delay']:.2f} s after its first checkpoint)"
    assert run["returncode"] == 130, f"{where}\n{err}"
    again = shlex.join(["vizkit", *run["argv"], "--resume"])
    said = [
        f"{analysis}: {why}; to continue where it stopped: {again}" for why in (f"{signame} received", "interrupted")
    ]
    # (a bare "interrupted": Python's own SIGINT handler raised outside the loops that defer it)
    assert said[0] in err or (signame == "SIGINT" and said[1] in err), f"{where}\n{err}"
    assert "Traceback" not in err, err
    # no result, nothing half-written: only what --resume needs
    assert progress_files(analysis, out, cache), f"nothing kept for --resume {where}"
    assert all(re.fullmatch(KEPT[analysis], name) for name in every_file(out, cache)), every_file(out, cache)
    # --resume, in a fresh CLI call (nothing carried in memory), gives the uninterrupted arrays
    assert main([*run["argv"], "--resume"]) == 0, capsys.readouterr().err
    same_arrays(out, references[analysis])
    assert not progress_files(analysis, out, cache), "the checkpoint outlived the finished run"
    assert not [name for name in every_file(out) if name.startswith(".")], every_file(out)


# ------------------------------------------------------------------------ in-process checks
def stop_in_process(monkeypatch, analysis, inputs, out, cache, at: int, signame: str = "SIGINT") -> None:
    """Run ``analysis`` in this process and have the model send itself ``signame`` on its
    ``at``-th forward."""
    monkeypatch.setenv("TEST_NET_SIGNAL_AT", str(at))
    monkeypatch.setenv("TEST_NET_SIGNAL", signame)
    try:
        assert main(command(analysis, inputs, out, cache)) == 130
    finally:
        monkeypatch.delenv("TEST_NET_SIGNAL_AT")


@pytest.mark.parametrize("analysis", ANALYSES)
def test_a_rerun_without_resume_says_it_discards_the_checkpoint(
    analysis, inputs, references, tmp_path, monkeypatch, capsys
):
    out, cache = tmp_path / "out", tmp_path / "cache"
    stop_in_process(monkeypatch, analysis, inputs, out, cache, at=6, signame="SIGTERM")
    err = capsys.readouterr().err
    assert f"{analysis}: SIGTERM received; to continue where it stopped:" in err and "--resume" in err, err
    assert progress_files(analysis, out, cache)
    assert main(command(analysis, inputs, out, cache)) == 0
    err = capsys.readouterr().err
    assert "discarding the interrupted" in err and "pass --resume to continue it" in err, err
    same_arrays(out, references[analysis])
    assert not progress_files(analysis, out, cache)


def test_top9_checkpoints_by_time_as_well_as_by_batches(inputs, tmp_path, monkeypatch):
    assert vizkit.framework.get_app().analysis("top9").option("checkpoint_seconds").default <= 60
    saved: list[tuple[int, bool]] = []
    original = top9_scan._save_checkpoint

    def recording(path, state, next_batch, done, *args, **kwargs):
        saved.append((next_batch, done))
        return original(path, state, next_batch, done, *args, **kwargs)

    monkeypatch.setattr(top9_scan, "_save_checkpoint", recording)
    model = vizkit.load_model(f"{inputs['net']}:build")
    options = dict(
        data=inputs["list"], layer="conv2", channels="0-1", k=2, patch_size=8, pages=1, workers=0, batch_size=6
    )
    vizkit.run("top9", model, out=tmp_path / "a", checkpoint_every=0, checkpoint_seconds=0, **options)
    assert saved == [(1, False), (2, False), (3, False), (4, False), (4, True)]  # 24 images, 6 a batch
    saved.clear()
    vizkit.run("top9", model, out=tmp_path / "b", checkpoint_every=0, **options)  # the default: 60 s
    assert saved == [(4, True)]
    saved.clear()
    vizkit.run("top9", model, out=tmp_path / "c", checkpoint_every=3, checkpoint_seconds=3600, **options)
    assert saved == [(3, False), (4, True)]


def test_evolution_checkpoints_a_snapshot_scan_by_time(inputs, tmp_path, monkeypatch):
    assert vizkit.framework.get_app().analysis("evolution").option("checkpoint_seconds").default <= 60
    tags: list[str] = []
    original = evolution_cache.SnapshotCache.save

    def recording(self, tag, data):
        tags.append(f"{tag}@{data['next_batch']}" if tag.startswith("scan") else tag)
        return original(self, tag, data)

    monkeypatch.setattr(evolution_cache.SnapshotCache, "save", recording)
    options = dict(run=str(inputs["run"]), data=inputs["list"], layers=("conv2",), maps=2, sample=12, patch_size=8)
    vizkit.run("evolution", None, out=tmp_path / "a", batch_size=4, checkpoint_seconds=0, **options).save(
        tmp_path / "a"
    )
    # the choice scans the last snapshot (3 batches of 4), then each other snapshot is scanned
    assert tags == [
        *("scan003@1", "scan003@2", "scan003@3", "choice", "scan001@1", "scan001@2", "scan001@3", "epoch001"),
        *("scan002@1", "scan002@2", "scan002@3", "epoch002", "epoch003"),
    ]
    tags.clear()
    vizkit.run("evolution", None, out=tmp_path / "b", batch_size=4, **options).save(tmp_path / "b")  # default: 60 s
    assert tags == ["choice", "epoch001", "epoch002", "epoch003"]
    assert not (tmp_path / "a" / ".evolution").exists() and not (tmp_path / "b" / ".evolution").exists()


def test_probes_extraction_records_progress_every_batch(inputs, references, tmp_path, monkeypatch, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    stop_in_process(monkeypatch, "probes", inputs, out, cache, at=8)  # a blank check, a probe, then 6 batches
    (done_file,) = progress_files("probes", out, cache)
    assert int(np.load(done_file).sum()) == 6
    assert "features: SIGINT received; extraction stopped with 6 of 24 batches done" in capsys.readouterr().err
    assert main([*command("probes", inputs, out, cache), "--resume"]) == 0
    same_arrays(out, references["probes"])


@pytest.mark.slow
def test_evolution_resumes_exactly_from_inside_and_between_snapshots(inputs, references, tmp_path, monkeypatch):
    """Stopped inside the choice's scan, inside a later snapshot's scan and between two
    snapshots (the model signals itself on its 20th, 30th, 40th forward), --resume ends with the
    uninterrupted arrays."""
    kept: list[set[str]] = []
    for at in (20, 30, 40):
        out = tmp_path / f"at{at}"
        stop_in_process(monkeypatch, "evolution", inputs, out, tmp_path, at=at)
        kept.append({path.name for path in (out / ".evolution").iterdir()})
        assert "choice.pt" in kept[-1] or any(name.startswith("scan") for name in kept[-1]), kept
        assert main([*command("evolution", inputs, out, tmp_path), "--resume"]) == 0
        same_arrays(out, references["evolution"])
    everything = set().union(*kept)
    assert any(re.fullmatch(r"epoch\d{3}\.pt", name) for name in everything), kept  # a snapshot was finished
    assert any(re.fullmatch(r"scan\d{3}\.pt", name) and "choice.pt" in found for found in kept for name in found), (
        kept
    )  # a later snapshot's scan was stopped half way


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_with_data_loading_workers(inputs, references, tmp_path, capsys):
    """Ctrl-C in a terminal signals the whole process group, the data-loading workers too: they
    ignore it and the main process stops between batches, saves and says how to resume (a
    worker killed by it used to fail the run with "DataLoader worker exited unexpectedly")."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = command("top9", inputs, out, cache)
    argv[argv.index("--workers") + 1] = "2"
    env = {**os.environ, "TEST_NET_SLEEP": str(SLEEP), "PYTHONUNBUFFERED": "1"}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    process = subprocess.Popen(
        [sys.executable, "-m", "vizkit", *argv], stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not progress_files("top9", out, cache) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "top9 ended before it could be interrupted"
        time.sleep(random.uniform(0.0, 1.0))
        os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        err = process.communicate(timeout=300)[1]
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "exited unexpectedly" not in err and "Traceback" not in err, err
    assert "top9: " in err and "--resume" in err, err
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    same_arrays(out, references["top9"])
