"""vizkit train: the recipe runs, clipping holds after every step, checkpoints resume."""

from __future__ import annotations

import json

import pytest
import torch

import vizkit
from vizkit.app.cli import main
from vizkit.models.zfnet import filter_rms


def test_train_clips_logs_and_resumes(tiny_imagenette, tmp_path):
    out = tmp_path / "run"

    def argv(epochs: int, *extra: str) -> list[str]:
        return [
            "train",
            "--model",
            "zfnet-compact",
            "--data",
            str(tiny_imagenette),
            "--epochs",
            str(epochs),
            "--batch-size",
            "6",
            "--out",
            str(out),
            "--workers",
            "0",
            "--snapshot-epochs",
            "1",
            "--clip-radius",
            "0.05",
            "--quiet",
            *extra,
        ]

    assert main(argv(2)) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "filters_clipped"} <= set(lines[0])
    assert lines[0]["filters_clipped"] > 0  # He-initialised conv1 filters start above 0.05
    state = torch.load(out / "weights.pt", weights_only=True)
    model = vizkit.load_model("zfnet-compact")
    model.load_state_dict(state)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            assert float(filter_rms(module).max()) <= 0.05 * (1 + 1e-4)
    assert (out / "weights_epoch001.pt").exists() and (out / "checkpoint.pt").exists()
    info = json.loads((out / "run.json").read_text())  # what `vizkit run evolution --run` rebuilds from
    assert info["model"] == "zfnet-compact" and info["command"] == ["vizkit", *argv(2)]
    assert info["config"]["clip_radius"] == 0.05 and info["preprocess"]["crop"] == 144
    assert (out / "classes.txt").read_text().split() == sorted(p.name for p in (tiny_imagenette / "train").iterdir())
    # resume continues at epoch 3 with the same settings; other settings are refused
    assert main(argv(3, "--resume")) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert main(argv(4, "--resume", "--lr", "0.1")) == 2


def test_no_clip_switch(tiny_imagenette, tmp_path):
    out = tmp_path / "noclip"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_imagenette),
                "--epochs",
                "1",
                "--batch-size",
                "6",
                "--out",
                str(out),
                "--workers",
                "0",
                "--no-clip",
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["filters_clipped"] == 0


def test_bad_training_data(tmp_path):
    assert main(["train", "--data", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "o"), "--quiet"]) == 2


def test_training_starts_from_the_recipe_initialisation_not_the_shipped_weights():
    from vizkit_plugins.train import untrained_model

    shipped = vizkit.load_model("zfnet-compact")
    model, preprocess = untrained_model("zfnet-compact")
    assert preprocess == shipped.vizkit_preprocess and model.vizkit_spec == "zfnet-compact"
    conv = model.conv1.conv.weight
    assert not torch.allclose(conv, shipped.conv1.conv.weight)
    fan_in = conv[0].numel()
    assert float(conv.std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)  # fan-in-scaled Gaussian
    assert float(model.conv1.conv.bias.abs().max()) == 0.0
