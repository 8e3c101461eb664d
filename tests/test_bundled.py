"""The bundled zfnet-compact weights: size, metadata, accuracy measured independently, and every
analysis running offline on them with nothing from ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets, transforms

import vizkit
from helpers import IMAGENETTE, assert_no_hooks, needs_shared
from vizkit.app.cli import main
from vizkit.app.demo import sample_image
from vizkit.models.bundled import COMPACT_META, COMPACT_WEIGHTS


def test_weights_ship_inside_the_package_with_their_metadata():
    assert COMPACT_WEIGHTS.is_file() and COMPACT_WEIGHTS.stat().st_size <= 16 * 2**20
    assert COMPACT_WEIGHTS.parent == Path(vizkit.__file__).parent / "models" / "weights"
    meta = json.loads(COMPACT_META.read_text())
    state = torch.load(COMPACT_WEIGHTS, weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert len(meta["classes"]) == 10 and meta["classes"][0] == "tench" and meta["preprocess"]["crop"] == 144
    assert meta["train_command"][:2] == ["vizkit", "train"] and meta["recipe"]["clip_radius"] == 0.1
    command = meta["reproduce_command"]
    if meta.get("exported") == "best":  # the whole run's command: its best.pt holds this epoch
        assert command == meta["train_command"] and meta["val_curve"][meta["epoch"] - 1] == max(meta["val_curve"])
    elif "averaged_epochs" in meta:  # an average of the whole run's epochs, measured outside the loop
        assert command == meta["train_command"] and meta["val_accuracy"] == meta["val_accuracy_measured"]["top1"]
        assert meta["epoch"] == max(meta["averaged_epochs"]) and len(meta["val_curve"]) >= meta["epoch"]
    else:  # the last epoch of a run that stopped there
        assert command[command.index("--epochs") + 1] == str(meta["epoch"])
    model = vizkit.load_model("zfnet-compact")
    info = vizkit.models.model_info(model)
    assert info.labels == meta["classes"] and info.weights == str(COMPACT_WEIGHTS)
    assert info.preprocess == vizkit.Preprocess.from_dict(meta["preprocess"])
    assert model.conv1.conv.weight.dtype == torch.float32  # fp16 storage, fp32 compute
    assert torch.equal(model.conv1.conv.weight.detach().half(), state["conv1.conv.weight"])


@pytest.mark.slow
def test_accuracy_on_imagenette_val_matches_the_recorded_one():
    """40 images per class, read and preprocessed by torchvision alone (not vizkit's loader)."""
    needs_shared(IMAGENETTE)
    meta = json.loads(COMPACT_META.read_text())
    p = meta["preprocess"]
    folder = datasets.ImageFolder(
        IMAGENETTE / "val",
        transforms.Compose(
            [
                transforms.Resize(p["resize"]),
                transforms.CenterCrop(p["crop"]),
                transforms.ToTensor(),
                transforms.Normalize(p["mean"], p["std"]),
            ]
        ),
    )
    assert folder.classes == meta["class_folders"]
    targets = np.array(folder.targets)
    chosen = np.concatenate([np.flatnonzero(targets == c)[:40] for c in range(10)])
    model = vizkit.load_model("zfnet-compact")
    correct = 0
    with torch.no_grad():
        for start in range(0, len(chosen), 100):
            batch = [folder[int(i)] for i in chosen[start : start + 100]]
            x = torch.stack([b[0] for b in batch])
            correct += int((model(x).argmax(1) == torch.tensor([b[1] for b in batch])).sum())
    accuracy = correct / len(chosen)
    assert accuracy == pytest.approx(meta["val_accuracy"], abs=0.06)  # 400 of 3925 images: sampling error ~2.5%


@pytest.fixture
def offline_images(tmp_path) -> Path:
    """Two classes of photographs made only from what ships with matplotlib (no ../shared)."""
    hopper = Image.open(sample_image()).convert("RGB")
    for split, count in (("train", 4), ("val", 2)):
        for label, image in (("hopper", hopper), ("mirrored", hopper.transpose(Image.Transpose.FLIP_TOP_BOTTOM))):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image.rotate(7 * i).resize((180 + 20 * i, 200)).save(folder / f"{i}.jpg")
    return tmp_path


def test_every_analysis_runs_offline_on_the_bundled_model(offline_images, tmp_path, recorded_models, monkeypatch):
    monkeypatch.setenv("VIZKIT_SHARED", str(tmp_path / "no-shared-here"))
    hopper = str(sample_image())
    base = ["--model", "zfnet-compact", "--quiet"]
    assert main(["run", "deconvnet", *base, "--image", hopper, "--layer", "conv5", "--out", str(tmp_path / "d")]) == 0
    assert (
        main(
            [
                "run",
                "occlusion",
                *base,
                "--image",
                hopper,
                "--size",
                "36",
                "--stride",
                "12",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    assert main(["run", "filters", *base, "--image", hopper, "--out", str(tmp_path / "f")]) == 0
    assert (
        main(
            [
                "run",
                "top9",
                *base,
                "--data",
                str(offline_images / "train"),
                "--layer",
                "conv4",
                "--channels",
                "0-3",
                "--workers",
                "0",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(offline_images),
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--workers",
                "0",
                "--snapshot-epochs",
                "1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["run", "evolution", "--run", str(run), "--maps", "2", "--quiet", "--out", str(tmp_path / "e")]) == 0
    for name in "dofte":
        assert (tmp_path / name / "result.json").is_file()
    summary, _ = vizkit.load_result(tmp_path / "d")
    assert summary["model"]["weights"] == str(COMPACT_WEIGHTS)
    for model in recorded_models:
        assert_no_hooks(model)
