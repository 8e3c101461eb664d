"""vizkit train --shuffle-labels: label randomization (Adebayo et al. 2018's second sanity check).

The training labels are one seeded permutation of the true ones (class counts kept), the same in
every epoch and on resume; validation keeps the true labels; the run's files and its export say
the labels were shuffled; without the flag nothing changes."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import vizkit
from vizkit.app.cli import main
from vizkit_plugins.train import TrainConfig, export_weights, train, untrained_model
from vizkit_plugins.train.data import loaders, shuffled_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def run_argv(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
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
        "--seed",
        "5",
        "--quiet",
        *extra,
    ]


def true_train_labels(data: Path) -> list[int]:
    from torchvision import datasets

    return [int(t) for t in datasets.ImageFolder(data / "train").targets]


def fed_labels(data: Path, **changes) -> list[int]:
    """The labels the training loader gives each training image (in dataset order)."""
    settings = dict(data=str(data), out="unused", workers=0, seed=5)
    settings.update(changes)
    config = TrainConfig(**settings)
    train_loader, _val, _classes = loaders(config, untrained_model("zfnet-compact")[1])
    dataset = train_loader.dataset
    return [int(dataset[(1, i)][1]) for i in range(len(dataset))]


def test_the_permutation_is_seeded_keeps_class_counts_and_moves_most_labels():
    labels = [i % 10 for i in range(2000)]  # Imagenette-like: 10 classes of similar size
    first = shuffled_labels(labels, 0)
    assert first == shuffled_labels(labels, 0)  # same seed, same labels
    assert first != shuffled_labels(labels, 1)  # another seed, other labels
    assert Counter(first) == Counter(labels)  # a permutation of the labels vector
    moved = sum(a != b for a, b in zip(first, labels)) / len(labels)
    assert moved > 0.8  # ~90% expected for 10 balanced classes
    # a class's images are spread over all classes, as a random relabelling should be
    assert len({first[i] for i in range(len(labels)) if labels[i] == 3}) == 10


def test_the_loader_gives_the_shuffled_labels_and_validation_the_true_ones(tiny_imagenette):
    truth = true_train_labels(tiny_imagenette)
    expected = shuffled_labels(truth, 5)
    assert expected != truth and Counter(expected) == Counter(truth)
    assert fed_labels(tiny_imagenette, shuffle_labels=True) == expected
    assert fed_labels(tiny_imagenette) == truth  # without the flag: the true labels
    config = TrainConfig(data=str(tiny_imagenette), out="unused", workers=0, seed=5, shuffle_labels=True)
    _train, val, _classes = loaders(config, untrained_model("zfnet-compact")[1])
    assert [int(label) for _images, labels in val for label in labels] == [int(t) for t in val.dataset.targets]


def test_a_shuffled_run_says_so_everywhere_and_resumes_with_the_same_labels(tiny_imagenette, tmp_path, capsys):
    out = tmp_path / "shuffled"
    assert main(run_argv(tiny_imagenette, out, 1, "--shuffle-labels")) == 0
    assert "labels shuffled with seed 5" in capsys.readouterr().out
    expected = shuffled_labels(true_train_labels(tiny_imagenette), 5)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["shuffled_labels"] is True and state["label_seed"] == 5
    assert state["labels"].tolist() == expected
    assert state["config"]["shuffle_labels"] is True
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["shuffled_labels"] is True and best["label_seed"] == 5
    assert json.loads((out / "run.json").read_text())["config"]["shuffle_labels"] is True
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert line["train_labels"] == "shuffled" and 0 <= line["train_accuracy"] <= 1
    # resumed: the same permutation, checked against the checkpoint's
    assert main(run_argv(tiny_imagenette, out, 2, "--shuffle-labels", "--resume")) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["labels"].tolist() == expected
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # the export says so, and loads as any export does
    meta = export_weights(out, tmp_path / "export" / "shuffled", which="last")
    assert meta["shuffled_labels"] is True and meta["label_seed"] == 5 and meta["recipe"]["shuffle_labels"] is True
    written = json.loads((tmp_path / "export" / "shuffled.json").read_text())
    assert written["shuffled_labels"] is True and written["label_seed"] == 5
    model = vizkit.load_model("zfnet-compact", weights=tmp_path / "export" / "shuffled.pt")
    assert vizkit.models.model_info(model).preprocess.crop == 144
    assert model(torch.zeros(1, 3, 144, 144)).shape == (1, 10)


def test_resume_refuses_other_labels_in_one_line(tiny_imagenette, tmp_path, capsys):
    out = tmp_path / "shuffled"
    assert main(run_argv(tiny_imagenette, out, 1, "--shuffle-labels")) == 0
    capsys.readouterr()
    # resumed without the flag: the true labels would be mixed into a shuffled run
    assert main(run_argv(tiny_imagenette, out, 2, "--resume")) == 2
    error = capsys.readouterr().err
    assert "trained with shuffled labels" in error and "add --shuffle-labels" in error
    assert len(error.strip().splitlines()) == 1
    # another seed: another permutation (and order), refused
    assert main(run_argv(tiny_imagenette, out, 2, "--shuffle-labels", "--resume", "--seed", "6")) == 2
    capsys.readouterr()
    # a checkpoint whose labels are not the ones the seed gives (the data changed): refused
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["labels"] = state["labels"].roll(1)
    torch.save(state, out / "checkpoint.pt")
    assert main(run_argv(tiny_imagenette, out, 2, "--shuffle-labels", "--resume")) == 2
    error = capsys.readouterr().err
    assert "another permutation of the labels" in error and len(error.strip().splitlines()) == 1
    # a true-label run resumed with the flag
    plain = tmp_path / "plain"
    assert main(run_argv(tiny_imagenette, plain, 1)) == 0
    capsys.readouterr()
    assert main(run_argv(tiny_imagenette, plain, 2, "--shuffle-labels", "--resume")) == 2
    assert "drop --shuffle-labels" in capsys.readouterr().err


def test_stopped_and_resumed_shuffled_run_equals_the_uninterrupted_one(tiny_imagenette, tmp_path):
    def config(out: Path) -> TrainConfig:
        return TrainConfig(
            data=str(tiny_imagenette), out=str(out), epochs=2, batch_size=4, workers=0, snapshot_epochs=[], seed=3,
            shuffle_labels=True,
        )  # fmt: skip

    def fresh():
        torch.manual_seed(3)
        return untrained_model("zfnet-compact")

    model, preprocess = fresh()
    train(model, config(tmp_path / "whole"), preprocess)
    model, preprocess = fresh()
    with pytest.raises(KeyboardInterrupt):  # 18 images / 4: stop after 2 batches of epoch 2
        train(model, config(tmp_path / "cut"), preprocess, stop_after=lambda epoch, done: (epoch, done) == (2, 2))
    model, preprocess = fresh()
    train(model, config(tmp_path / "cut"), preprocess, resume=True)
    whole = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "weights.pt", weights_only=True)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_without_the_flag_nothing_is_marked(tiny_imagenette, tmp_path):
    out = tmp_path / "plain"
    assert main(run_argv(tiny_imagenette, out, 1)) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert not {"labels", "shuffled_labels", "label_seed"} & set(state)
    assert "shuffled_labels" not in torch.load(out / "best.pt", weights_only=True)
    assert "train_labels" not in json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    meta = export_weights(out, tmp_path / "export")
    assert "shuffled_labels" not in meta and "label_seed" not in meta
    # a checkpoint written before --shuffle-labels and --no-augment existed (no such settings saved) still resumes
    del state["config"]["shuffle_labels"], state["config"]["augment"]
    torch.save(state, out / "checkpoint.pt")
    assert main(run_argv(tiny_imagenette, out, 2, "--resume")) == 0


def test_shuffling_the_labels_of_one_class_is_refused_in_one_line(tiny_imagenette, tmp_path, capsys):
    assert main(run_argv(tiny_imagenette, tmp_path / "one", 1, "--shuffle-labels", "--limit", "1")) == 2
    error = capsys.readouterr().err
    assert "--shuffle-labels" in error and "one class" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "one" / "metrics.jsonl").exists()


def test_no_augment_trains_on_the_centre_crop_every_epoch(tiny_imagenette):
    from torchvision import datasets

    def samples(**changes):
        config = TrainConfig(data=str(tiny_imagenette), out="unused", workers=0, seed=5, **changes)
        preprocess = untrained_model("zfnet-compact")[1]
        return loaders(config, preprocess)[0].dataset, replace(preprocess, resize=160, crop=144).transform()

    plain, centre = samples(augment=False, shuffle_labels=True)
    image = datasets.ImageFolder(tiny_imagenette / "train", loader=vizkit.load_image)[0][0]
    assert torch.equal(plain[(1, 0)][0], centre(image)) and torch.equal(plain[(2, 0)][0], plain[(1, 0)][0])
    augmented, _ = samples()
    assert not torch.equal(augmented[(1, 0)][0], augmented[(2, 0)][0])  # another crop or flip each epoch
