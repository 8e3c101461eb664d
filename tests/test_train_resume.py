"""vizkit train survives interruption: stopped mid-epoch (in process, or by SIGTERM/SIGINT to a
real `vizkit train` process at whatever point it has reached), `--resume` ends with exactly the
weights and metrics of the run that was never stopped, whatever the number of data workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vizkit.app.cli import main
from vizkit_plugins.train import TrainConfig, train, untrained_model


def config(data: Path, out: Path, **changes) -> TrainConfig:
    settings = dict(data=str(data), out=str(out), epochs=3, batch_size=4, workers=0, snapshot_epochs=[], seed=3)
    settings.update(changes)
    return TrainConfig(**settings)


def fresh_model():
    torch.manual_seed(3)
    return untrained_model("zfnet-compact")


def metrics(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k != "seconds"} for m in lines]


def same_weights(a: Path, b: Path) -> bool:
    left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.fixture(scope="module")
def uninterrupted(tiny_imagenette, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    model, preprocess = fresh_model()
    train(model, config(tiny_imagenette, out), preprocess)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_stopped_mid_epoch_then_resumed_equals_the_uninterrupted_run(tiny_imagenette, uninterrupted, tmp_path, workers):
    out = tmp_path / "stopped"
    model, preprocess = fresh_model()
    with pytest.raises(KeyboardInterrupt):  # 18 images / 4 = 5 batches an epoch: stop after 2 of epoch 2
        train(model, config(tiny_imagenette, out), preprocess, stop_after=lambda epoch, done: (epoch, done) == (2, 2))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["position"]["epoch"] == 2 and state["position"]["sums"]["batches"] == 2
    assert len(metrics(out)) == 1
    model, preprocess = fresh_model()  # a new process would start from scratch: nothing carried in memory
    torch.manual_seed(12345)  # and from another global random state
    train(model, config(tiny_imagenette, out, workers=workers), preprocess, resume=True)
    assert same_weights(out / "weights.pt", uninterrupted / "weights.pt")
    assert metrics(out) == metrics(uninterrupted)


@pytest.mark.slow
def test_augmentation_and_order_do_not_depend_on_workers(tiny_imagenette, uninterrupted, tmp_path):
    out = tmp_path / "workers"
    model, preprocess = fresh_model()
    train(model, config(tiny_imagenette, out, workers=2), preprocess)
    assert same_weights(out / "weights.pt", uninterrupted / "weights.pt")


def test_checkpoints_are_written_inside_an_epoch_when_time_says_so(tiny_imagenette, tmp_path):
    out = tmp_path / "timed"
    model, preprocess = fresh_model()
    seen = []

    def watch(epoch: int, done: int) -> bool:
        if (out / "checkpoint.pt").exists():
            seen.append(torch.load(out / "checkpoint.pt", weights_only=True)["position"])
        return False

    train(model, config(tiny_imagenette, out, epochs=1, checkpoint_seconds=0), preprocess, stop_after=watch)
    # stop_after runs before the batch's checkpoint: it sees the previous batch's one
    assert [p["sums"]["batches"] for p in seen] == [1, 2, 3, 4]


def cli_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("train", "--model", "zfnet-compact", "--data", str(data), "--epochs", "2", "--batch-size", "3"),
        *(
            "--workers",
            "0",
            "--snapshot-epochs",
            "",
            "--seed",
            "3",
            "--lr",
            "0.002",
            "--quiet",
            "--out",
            str(out),
            *extra,
        ),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_real_training_process_saves_and_resume_finishes_the_same_run(tiny_imagenette, tmp_path, signum):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    torch.manual_seed(3)
    assert main(cli_argv(tiny_imagenette, whole)) == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "vizkit", *cli_argv(tiny_imagenette, cut, "--checkpoint-seconds", "0")],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 600
        while not (cut / "checkpoint.pt").exists():  # some steps are done: interrupt wherever it has got to
            assert process.poll() is None, "training ended before it could be signalled"
            assert time.monotonic() < deadline, "no checkpoint after 600 s"
            time.sleep(0.05)
        process.send_signal(signum)
        _, err = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert f"train: {signal.Signals(signum).name} received" in err and "--resume" in err
    state = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert state["position"] is not None or state["epoch"] >= 1
    assert main(cli_argv(tiny_imagenette, cut, "--resume")) == 0
    assert same_weights(cut / "weights.pt", whole / "weights.pt")
    assert metrics(cut) == metrics(whole)


def test_bad_checkpoint_seconds_and_workers_are_refused(tiny_imagenette, tmp_path, capsys):
    assert main(cli_argv(tiny_imagenette, tmp_path / "a", "--checkpoint-seconds", "-1")) == 2
    assert main(cli_argv(tiny_imagenette, tmp_path / "b", "--workers", "-1")) == 2
    err = capsys.readouterr().err
    assert "--checkpoint-seconds" in err and "--workers" in err and not (tmp_path / "a").exists()
