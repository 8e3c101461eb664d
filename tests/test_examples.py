"""The runnable examples in examples/, each run as a user would, in a subprocess, with small
arguments: wrapping your own model in Python (two analyses), and a torchvision model with your
own weights from the command line. (The example plugin package has tests/test_example_plugin.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import vizkit
from helpers import LABELS, REPO, SAMPLES, SQUEEZENET_WEIGHTS, shipped_photos

EXAMPLES = REPO / "examples"


def _env() -> dict[str, str]:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore::FutureWarning"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's vizkit first
    return env


def _vizkit_script() -> str:
    script = Path(sys.executable).parent / "vizkit"
    found = str(script) if script.exists() else shutil.which("vizkit")
    if not found:
        pytest.skip("the vizkit console script is not installed next to this Python")
    return found


def test_examples_folder_holds_what_the_tests_run():
    assert {p.name for p in EXAMPLES.iterdir()} >= {"wrap_your_model.py", "torchvision_cli.sh", "vizkit-channel-stats"}


@pytest.mark.slow
def test_wrap_your_model(tmp_path):
    out = tmp_path / "out"
    ran = subprocess.run(
        [sys.executable, str(EXAMPLES / "wrap_your_model.py"), "--out", str(out), "--crop", "64"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    text = ran.stdout
    assert "input batch (1, 3, 64, 64)" in text
    assert re.search(r"^\s+max_pool2d\s+F\.max_pool2d\s+16x16x16$", text, re.M), text  # a functional pool is a layer
    assert "res.relu#1" in text  # the second call of a functional ReLU in one module
    difference = float(re.search(r"relative difference autograd vs explicit: (\S+);", text).group(1))
    assert difference < 1e-5  # both projection paths agree through the residual add
    assert "to_image -> (64, 64, 3)" in text
    assert text.strip().endswith("hooks left on the model: 0")
    for analysis in ("deconvnet", "occlusion"):
        document, arrays = vizkit.load_result(out / analysis)
        assert document["analysis"] == analysis
        assert document["inputs"]["preprocess"]["crop"] == 64  # the model's own preprocessing
        assert (out / analysis / f"{analysis}.png").stat().st_size > 0
    document, arrays = vizkit.load_result(out / "deconvnet")
    assert document["layer"] == "head" and len(document["channels"]) == 4
    assert arrays["projections"].shape == (4, 3, 64, 64)
    document, arrays = vizkit.load_result(out / "occlusion")
    assert arrays["true_class_prob"].shape[0] == 1 and np.all(np.isfinite(arrays["true_class_prob"]))
    # run twice: the example replaces its own results
    again = subprocess.run(
        [sys.executable, str(EXAMPLES / "wrap_your_model.py"), "--out", str(out), "--crop", "64"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_torchvision_model_with_own_weights_from_the_cli(tmp_path):
    """examples/torchvision_cli.sh: SqueezeNet with the shared ImageNet weights when they are there;
    otherwise a torchvision SqueezeNet 1.1 whose (random) weights are saved here, as a user's own."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not available")
    vizkit_script = _vizkit_script()
    shared = SQUEEZENET_WEIGHTS.exists() and LABELS.exists() and SAMPLES.is_dir()
    env = {**_env(), "VIZKIT": vizkit_script, "TOP": "2", "STRIDE": "32"}
    if shared:
        env.update(WEIGHTS=str(SQUEEZENET_WEIGHTS), LABELS=str(LABELS), SHARED=str(SQUEEZENET_WEIGHTS.parents[1]))
        weights = SQUEEZENET_WEIGHTS
    else:
        weights = tmp_path / "my_squeezenet.pt"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            torch.save(torchvision.models.squeezenet1_1().state_dict(), weights)
        env.update(MODEL="torchvision:squeezenet1_1", WEIGHTS=str(weights), LABELS="", IMAGE=str(shipped_photos()[0]))
    out = tmp_path / "out"
    ran = subprocess.run(
        ["bash", str(EXAMPLES / "torchvision_cli.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    assert "output shapes for a 3x224x224 input" in ran.stdout
    assert "features.2" in ran.stdout and "switches" in ran.stdout
    sha = vizkit.models.sha256_file(weights)
    for analysis in ("deconvnet", "occlusion"):
        document = json.loads((out / analysis / "result.json").read_text())
        assert document["model"]["weights_sha256"] == sha  # the user's own weights were used
        assert document["model"]["spec"] == env.get("MODEL", "torchvision:squeezenet1_0")
        assert (out / analysis / f"{analysis}.png").stat().st_size > 0
    deconv = json.loads((out / "deconvnet" / "result.json").read_text())
    assert len(deconv["channels"]) == 2 and deconv["layer"] == "features.12"
    if shared:  # the ImageNet weights and labels: the Pomeranian sample is seen as a dog, confidently
        best = deconv["predicted"][0]
        assert best["label"] in {"golden retriever", "Pomeranian", "Chihuahua", "Pekinese"}
        assert best["probability"] > 0.3
    assert (out / "index.html").is_file()

    # a missing weights file: a one-line error, no traceback
    missing = subprocess.run(
        ["bash", str(EXAMPLES / "torchvision_cli.sh"), str(out)],
        capture_output=True,
        text=True,
        env={**env, "WEIGHTS": str(tmp_path / "nope.pt")},
        cwd=tmp_path,
        timeout=60,
    )
    assert missing.returncode == 2 and "weights not found" in missing.stderr
