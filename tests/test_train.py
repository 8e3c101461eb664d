"""vizkit train: the recipe runs, clipping holds after every step, checkpoints resume."""

from __future__ import annotations

import json
import math

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
    assert preprocess == vizkit.data.preprocess_for(shipped) and vizkit.models.model_info(model).spec == "zfnet-compact"
    conv = model.conv1.conv.weight
    assert not torch.allclose(conv, shipped.conv1.conv.weight)
    fan_in = conv[0].numel()
    assert float(conv.std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)  # fan-in-scaled Gaussian
    assert float(model.conv1.conv.bias.abs().max()) == 0.0


def scripted_validation(monkeypatch, accuracies: list[float]) -> None:
    """Make each epoch's validation accuracy the next of ``accuracies`` (training still runs)."""
    import vizkit_plugins.train.loop as train_module  # where train() looks evaluate up

    script = iter(accuracies)
    monkeypatch.setattr(train_module, "evaluate", lambda model, loader, device: (1.0, next(script)))


def short_run(data, out, epochs: int, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--batch-size",
        "6",
        "--limit",
        "12",
        "--out",
        str(out),
        "--workers",
        "0",
        "--snapshot-epochs",
        "1,2,3,4,5",
        "--quiet",
        *extra,
    ]


def test_best_epoch_is_kept_across_resume_and_exported(tiny_imagenette, tmp_path, monkeypatch):
    from vizkit_plugins.train import export_weights

    out = tmp_path / "run"
    scripted_validation(monkeypatch, [0.3, 0.5, 0.4])
    assert main(short_run(tiny_imagenette, out, 3)) == 0
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["val_accuracy"] == 0.5
    snapshot = torch.load(out / "weights_epoch002.pt", weights_only=True)
    assert all(torch.equal(best["model"][k], snapshot[k]) for k in snapshot)
    # resumed: epoch 4 (0.45) is worse than the best before the interruption, epoch 5 is better
    scripted_validation(monkeypatch, [0.45, 0.6])
    assert main(short_run(tiny_imagenette, out, 4, "--resume")) == 0
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == 2
    assert main(short_run(tiny_imagenette, out, 5, "--resume")) == 0
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == 5
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["best"] for m in lines] == [True, True, False, False, True]
    assert [m["best_epoch"] for m in lines] == [1, 2, 2, 2, 5]
    meta = export_weights(out, tmp_path / "bundle")
    assert meta["epoch"] == 5 and meta["val_accuracy"] == 0.6 and meta["exported"] == "best"
    assert meta["val_curve"] == [0.3, 0.5, 0.4, 0.45, 0.6]
    assert meta["reproduce_command"] == json.loads((out / "run.json").read_text())["command"]  # the whole run
    assert "--resume" not in meta["reproduce_command"]  # a resumed run is recorded as the run it continues
    scripted_validation(monkeypatch, [0.1])
    assert main(short_run(tiny_imagenette, out, 6, "--resume")) == 0
    last = export_weights(out, tmp_path / "last", which="last")
    assert last["epoch"] == 6 and last["val_accuracy"] == 0.1
    command = last["reproduce_command"]
    assert command[command.index("--epochs") + 1] == "6"
    # best+last+1: the uniform average of those epochs' weights, computed in fp32
    averaged = export_weights(out, tmp_path / "avg", which="best+last+1", half=False)
    assert averaged["averaged_epochs"] == [1, 5, 6] and averaged["epoch"] == 6
    assert averaged["val_accuracy"] is None and averaged["averaged_epochs_val_accuracy"] == [0.3, 0.6, 0.1]
    assert averaged["reproduce_command"] == json.loads((out / "run.json").read_text())["command"]
    parts = [
        torch.load(out / "best.pt", weights_only=True)["model"],
        torch.load(out / "checkpoint.pt", weights_only=True)["model"],
        torch.load(out / "weights_epoch001.pt", weights_only=True),
    ]
    written = torch.load(tmp_path / "avg.pt", weights_only=True)
    for name, value in written.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (parts[0][name] + parts[1][name] + parts[2][name]) / 3)
    with pytest.raises(vizkit.UsageError, match="no weights of epoch 6"):
        export_weights(out, tmp_path / "x", which="best+6")
    with pytest.raises(vizkit.UsageError, match="names epoch 5 twice"):
        export_weights(out, tmp_path / "x", which="best+5")
    with pytest.raises(vizkit.UsageError, match="which must be"):
        export_weights(out, tmp_path / "x", which="best+best")


def test_plateau_patience_and_min_epochs_before_decay(tiny_imagenette, tmp_path, monkeypatch):
    out = tmp_path / "plateau"
    scripted_validation(monkeypatch, [0.5] * 6)  # never improves
    argv = short_run(tiny_imagenette, out, 6, "--patience", "1", "--min-epochs-before-decay", "3")
    assert main(argv) == 0
    rates = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    # epochs 1-3: no decay; 4: the plateau rule's first look; 5: one bad epoch (= patience); 6: cut
    assert rates == pytest.approx([0.01] * 5 + [0.001])
    from vizkit_plugins.train import export_weights

    assert export_weights(out, tmp_path / "b")["lr_cut_after_epochs"] == [6]


def test_cosine_schedule_anneals_to_zero_and_pins_epochs_on_resume(tiny_imagenette, tmp_path, monkeypatch):
    out = tmp_path / "cosine"
    scripted_validation(monkeypatch, [0.1, 0.2, 0.3, 0.4])
    assert main(short_run(tiny_imagenette, out, 4, "--schedule", "cosine")) == 0
    rates = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 5)]
    assert rates == pytest.approx(expected, abs=1e-9) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    # the cosine schedule depends on --epochs: resuming with more epochs is another run
    assert main(short_run(tiny_imagenette, out, 6, "--schedule", "cosine", "--resume")) == 2


@pytest.mark.parametrize("option", ["--patience", "--min-epochs-before-decay"])
def test_negative_schedule_options_are_refused(option, tiny_imagenette, tmp_path, capsys):
    assert main(short_run(tiny_imagenette, tmp_path / "o", 1, option, "-1")) == 2
    assert option in capsys.readouterr().err


def test_a_fresh_run_over_an_old_one_says_it_discards_it(tiny_imagenette, tmp_path, monkeypatch, capsys):
    out = tmp_path / "again"
    scripted_validation(monkeypatch, [0.9, 0.8])
    assert main(short_run(tiny_imagenette, out, 2)) == 0
    scripted_validation(monkeypatch, [0.1])
    assert main(short_run(tiny_imagenette, out, 1)) == 0
    assert "discarding the previous run" in capsys.readouterr().err
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1]  # not 1, 2, 1
    assert torch.load(out / "best.pt", weights_only=True)["val_accuracy"] == 0.1  # not the old run's 0.9
    assert not (out / "weights_epoch002.pt").exists()  # the old run's snapshot would mislead evolution


def test_more_classes_than_outputs_or_a_crop_the_model_cannot_take_fail_in_one_line(tiny_imagenette, tmp_path, capsys):
    """11 class folders for zfnet-compact's 10 outputs failed at the first step with cross-entropy's
    IndexError ('Target 10 is out of bounds'); a --crop its fc6 cannot take with a matmul
    RuntimeError. Both are now usage errors before any step (nothing written but the folder)."""
    data = tmp_path / "eleven"
    for split in ("train", "val"):
        image = next((tiny_imagenette / split).rglob("*.jpg"))
        for c in range(11):
            (data / split / f"class{c:02d}").mkdir(parents=True)
            (data / split / f"class{c:02d}" / "0.jpg").symlink_to(image.resolve())
    assert main(short_run(data, tmp_path / "o", 1)) == 2
    error = capsys.readouterr().err
    assert "11 class folders but the model has 10 outputs" in error and "Traceback" not in error
    assert main(short_run(tiny_imagenette, tmp_path / "c", 1, "--crop", "100")) == 2
    error = capsys.readouterr().err
    assert "does not take 100x100 crops" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "c" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "extra, message",
    [(["--limit", "0"], "--limit must be at least 1"), (["--snapshot-epochs", "0,2"], "counts epochs from 1")],
)
def test_limit_and_snapshot_epochs_below_one_are_refused(extra, message, tiny_imagenette, tmp_path, capsys):
    """--limit 0 trained on every image (0 read as no limit); a snapshot epoch 0 was never written."""
    assert main(short_run(tiny_imagenette, tmp_path / "o", 1, *extra)) == 2
    assert message in capsys.readouterr().err
