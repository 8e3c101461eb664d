"""Determinism: the same `vizkit run` command with the same --seed writes a byte-identical
arrays.npz (and the same result.json but for timings), for every registered analysis.

Every analysis runs twice through the CLI (``vizkit.app.cli.main``), in two separate Python
processes that differ in everything a run must not depend on: the hash seed (the iteration order of
sets of strings), the global torch / numpy / random generators (re-seeded differently before each command:
an analysis may draw only from ``--seed``, i.e. ``ctx.generator`` / ``ctx.rng``), the order in
which the commands run and the folder they run in. A tiny convnet (a factory file written here)
and a few small images keep it fast. An analysis registered without a recipe below fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import shipped_photos
from vizkit.framework.registry import make_app

TINY_NET = '''
"""A tiny deterministic convnet for the determinism tests (48x48 inputs, 4 classes)."""
import torch
from torch import nn

import vizkit


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.pool(self.conv3(self.conv2(self.conv1(x)))).flatten(1))


def build(seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    model = TinyNet()
    with torch.no_grad():
        for parameter in model.parameters():  # fan-in scaled, from a private generator
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 16
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    model.vizkit_info = vizkit.models.ModelInfo(preprocess=vizkit.Preprocess(resize=56, crop=48))
    return model
'''

SEED = ["--seed", "5"]


def recipes(inputs: dict[str, Path]) -> dict[str, list[str]]:
    """One CLI command per analysis, on tiny inputs, exercising its random parts where it has
    some (NoiseTunnel noise, random deletion orders, random squares, random map choice, folds,
    fast occlusion's checks). Output folders are relative: each process runs in its own folder."""
    model = ["--model", f"{inputs['net']}:build"]
    images = ["--image", str(inputs["photo0"]), str(inputs["photo1"])]
    common = [*SEED, "--quiet", "--batch-size", "4"]
    return {
        "deconvnet": ["run", "deconvnet", *model, *images, "--layer", "conv2", "--top", "4", *common],
        "top9": [
            *("run", "top9", *model, "--data", str(inputs["list"]), "--layer", "conv2", "--k", "3"),
            *("--patch-size", "8", "--workers", "0", *common),
        ],
        "occlusion": [
            *("run", "occlusion", *model, *images, "--size", "12", "--stride", "6", "--mode", "fast"),
            *("--drill-down", "0.5", "--check", "5", *common),
        ],
        "filters": ["run", "filters", *model, "--data", str(inputs["list"]), *common],
        "evolution": [
            *("run", "evolution", "--run", str(inputs["run"]), "--data", str(inputs["list"]), "--layers", "conv1"),
            *("--layers", "conv3", "--maps", "3", "--sample", "6", "--patch-size", "8", *common),
        ],
        "correspondence": [
            *("run", "correspondence", *model, "--landmarks", str(inputs["landmarks"]), "--layers", "conv2,fc"),
            *("--size", "10", "--random", "4", *common),
        ],
        "invariance": [
            *("run", "invariance", *model, "--image", str(inputs["photo0"]), "--layers", "conv1,fc"),
            *("--steps", "3", "--target", "1", *common),
        ],
        "probes": [
            *("run", "probes", *model, "--data", str(inputs["tree"]), "--layers", "conv1,conv3", "--pool", "avg"),
            *("--train-per-class", "2", "--test-per-class", "2", "--folds", "2", "--cv-folds", "2"),
            *("--workers", "0", "--cache", "cache", *common),
        ],
        "attribution": [
            *("run", "attribution", *model, *images, "--method", "all,nt-saliency", "--steps", "3"),
            *("--samples", "2", "--window", "12", "--stride", "12", "--deletion-steps", "3"),
            *("--deletion-patch", "12", *common),
        ],
        "atlas": [
            *("run", "atlas", *model, "--data", str(inputs["tree"]), "--layers", "conv1,conv2,conv3,fc", "--k", "2"),
            *("--patch-size", "16", "--workers", "0", *common),
        ],
        "featvis": [
            *("run", "featvis", *model, "--data", str(inputs["tree"]), "--layer", "conv2", "--units", "0-2"),
            *("--steps", "4", "--size", "24", "--diversity", "2", "--shown", "2", "--workers", "0", *common),
        ],
        "sanity": [
            *("run", "sanity", *model, *images, "--method", "deconvnet,integratedgradients,occlusion", "--steps", "3"),
            *("--randomize", "cascading,independent", "--layers", "conv1,fc", "--window", "12", "--stride", "12"),
            *("--metrics", "all", "--deletion-steps", "3", "--deletion-patch", "12", *common),
        ],
    }


DRIVER = textwrap.dedent(
    """
    import json, random, sys, time
    import numpy as np, torch
    from vizkit.app.cli import main

    commands, global_seed, summary = json.load(open(sys.argv[1])), int(sys.argv[2]), {}
    for name, argv in commands:
        torch.manual_seed(global_seed)  # a different global state in each process: a run must not use it
        np.random.seed(global_seed)
        random.seed(global_seed)
        started = time.perf_counter()
        summary[name] = {"status": main([*argv, "--out", f"out/{name}"]), "seconds": time.perf_counter() - started}
        print(f"{name}: {summary[name]}", file=sys.stderr, flush=True)
    json.dump(summary, open("summary.json", "w"))
    """
)

REGISTERED = sorted(make_app().analyses)


def _photos(folder: Path, count: int, side: int = 96) -> list[Path]:
    """``count`` small variants (crops, turns, flips) of the shipped photographs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.open(shipped_photos()[i % 3]).convert("RGB")
        width, height = image.size
        variant = image.crop((i * width // 30, i * height // 40, width - i * width // 50, height)).rotate(7 * i)
        if i % 2:
            variant = variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"photo{i}.jpg"
        variant.resize((side, side)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("determinism-inputs")
    net = root / "tiny_net.py"
    net.write_text(TINY_NET)
    photos = _photos(root / "photos", 8)
    listing = root / "images.txt"
    listing.write_text("\n".join(str(p) for p in photos) + "\n")
    tree = root / "tree"
    for c, label in enumerate(("a", "b", "c")):
        for i, source in enumerate(_photos(root / "tree-sources" / label, 4)):
            (tree / label).mkdir(parents=True, exist_ok=True)
            Image.open(source).rotate(90 * c + 5 * i).save(tree / label / source.name)
    landmarks = root / "landmarks.json"
    entries = [{"image": str(p), "left": [36, 48], "right": [60, 48], "box": [10, 10, 86, 86]} for p in photos[:3]]
    landmarks.write_text(json.dumps({"images": entries}))
    run = root / "run"  # a training run as `vizkit train` leaves it: run.json and weight snapshots
    run.mkdir()
    namespace: dict = {}
    exec(compile(TINY_NET, str(net), "exec"), namespace)
    for epoch in (1, 2, 4):
        torch.save(namespace["build"](seed=epoch).state_dict(), run / f"weights_epoch{epoch:03d}.pt")
    info = {"model": f"{net}:build", "data": str(root), "config": {}, "preprocess": None, "command": None}
    (run / "run.json").write_text(json.dumps(info))
    return {
        "net": net,
        "photo0": photos[0],
        "photo1": photos[1],
        "list": listing,
        "tree": tree,
        "landmarks": landmarks,
        "run": run,
    }


@pytest.fixture(scope="module")
def twice(inputs, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """Every recipe run in two processes at once (one thread each), in reverse orders."""
    commands = [(name, argv) for name, argv in recipes(inputs).items() if name in REGISTERED]
    folders, processes = [], []
    for number, (order, hash_seed) in enumerate(((commands, "1"), (commands[::-1], "2"))):
        folder = tmp_path_factory.mktemp(f"determinism-run{number}")
        (folder / "commands.json").write_text(json.dumps(order))
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1", "VIZKIT_CACHE": str(folder)}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", DRIVER, "commands.json", str(100 + number)],
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        folders.append(folder)
    logs = [process.communicate(timeout=600)[0] for process in processes]
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-5000:]
    return folders[0], folders[1], {"first": logs[0], "second": logs[1]}


def without_timings(value):
    """A result.json document without its timings and rates.

    Timings are ``seconds``, ``seconds_*`` and ``*_seconds``; rates (``*_per_minute``,
    ``*_per_second``) are derived from them, so they vary between runs just as much.
    """
    if isinstance(value, dict):
        return {
            key: without_timings(item)
            for key, item in value.items()
            if not (
                key == "seconds"
                or key.startswith("seconds_")
                or key.endswith(("_seconds", "_per_minute", "_per_second"))
            )
        }
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


@pytest.mark.slow
@pytest.mark.parametrize("analysis", REGISTERED)
def test_the_same_command_and_seed_give_identical_bytes(analysis, inputs, twice):
    if analysis not in recipes(inputs):
        pytest.fail(f"no determinism recipe for the registered analysis '{analysis}': add one to recipes()")
    first, second, logs = twice
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (first, second)]
    assert summaries[0][analysis]["status"] == 0 and summaries[1][analysis]["status"] == 0, logs
    a, b = first / "out" / analysis, second / "out" / analysis
    assert (a / "arrays.npz").read_bytes() == (b / "arrays.npz").read_bytes(), _which_arrays_differ(a, b)
    documents = [without_timings(json.loads((folder / "result.json").read_text())) for folder in (a, b)]
    assert documents[0] == documents[1]


def _which_arrays_differ(a: Path, b: Path) -> str:
    import numpy as np

    with np.load(a / "arrays.npz") as left, np.load(b / "arrays.npz") as right:
        if left.files != right.files:
            return f"different arrays: {left.files} != {right.files}"
        differ = [name for name in left.files if not np.array_equal(left[name], right[name], equal_nan=True)]
    return f"arrays that differ: {differ}" if differ else "the same values, different bytes"


def test_arrays_npz_bytes_depend_only_on_the_arrays(tmp_path, monkeypatch):
    """The writer stamps no time: saving the same result a day apart gives the same file."""
    import time

    import numpy as np

    import vizkit

    result = vizkit.Result(analysis="demo", arrays={"b": np.arange(6.0).reshape(2, 3), "a": np.zeros(3, np.uint8)})
    result.save(tmp_path / "first")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86400)
    monkeypatch.setattr(time, "localtime", lambda seconds=None: time.gmtime(real() + 86400))
    result.save(tmp_path / "second")
    assert (tmp_path / "first" / "arrays.npz").read_bytes() == (tmp_path / "second" / "arrays.npz").read_bytes()
    with np.load(tmp_path / "second" / "arrays.npz") as loaded:
        assert loaded.files == ["b", "a"] and np.array_equal(loaded["b"], result.arrays["b"])
