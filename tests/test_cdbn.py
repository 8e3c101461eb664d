"""The CDBN plugin end to end: ``vizkit cdbn train`` (metrics per epoch, run.json, checkpoint),
exact resume after an interruption (between epochs, between layers, and between an epoch's
metrics line and its checkpoint), ``--below`` (another run's lower layers kept bit for bit), the
model spec cdbn:RUN (its forward is feed-forward inference; top9, filters and deconvnet run on it
from the CLI and leave no hooks), and one-line errors.

Tiny: six 32x32 images (real Imagenette ones when ../shared has them, else synthetic), 4 and 6
bases of 5x5, two epochs per layer. The mathematics is checked in tests/test_cdbn_rbm.py."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vizkit
import vizkit.app.cli
from helpers import IMAGENETTE, assert_no_hooks, cli
from vizkit_plugins.cdbn import training
from vizkit_plugins.cdbn.model import CdbnLayer, CdbnModel
from vizkit_plugins.cdbn.training import finished_network

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
OPTIONS = {"--size": SIZE, "--patch": 20, "--bases": "4,6", "--filter-size": "5,5", "--epochs": 2}
TRAIN = (*itertools.chain.from_iterable(OPTIONS.items()), "--quiet")


def _picture(seed: int) -> Image.Image:
    """A small synthetic photograph: oriented stripes and blobs with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48]
    grey = np.sin(xx / (2.0 + seed % 3) + rng.uniform(0, 6.28)) * np.sin(yy / (3.0 + seed % 2) + rng.uniform(0, 6.28))
    grey = grey + 0.3 * rng.standard_normal(grey.shape)
    pixels = np.clip((grey + 1.5) / 3 * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([pixels, pixels[::-1], pixels[:, ::-1]], axis=-1))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A flat folder of six images: two from each of three Imagenette classes (linked) when
    ../shared has them, else six synthetic PNGs."""
    root = tmp_path_factory.mktemp("cdbn-data") / "images"
    root.mkdir()
    if (IMAGENETTE / "train").is_dir():
        for folder in sorted((IMAGENETTE / "train").iterdir())[:3]:
            for image in sorted(folder.glob("*.jpg"))[:2]:
                (root / f"{folder.name}_{image.name}").symlink_to(image)
    if len(list(root.iterdir())) < 6:
        for path in root.iterdir():
            path.unlink()
        for i in range(6):
            _picture(i).save(root / f"{i}.png")
    return root


def _train(data: Path, out: Path, *extra) -> int:
    return vizkit.app.cli.main([str(a) for a in ("cdbn", "train", "--data", data, "--out", out, *TRAIN, *extra)])


@pytest.fixture(scope="module")
def run(images, tmp_path_factory) -> Path:
    """Run A: two layers, two epochs each, uninterrupted."""
    out = tmp_path_factory.mktemp("cdbn-run") / "run"
    assert _train(images, out, "--layers", 2) == 0
    return out


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_seconds(path: Path) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in _metrics(path)]


def _tensors(state) -> list[torch.Tensor]:
    """Every tensor of a checkpoint's network (layers, then velocities), in order."""
    network = state["network"]
    return [
        part[name]
        for part in (*network["layers"], *network["velocities"])
        for name in ("weight", "hidden_bias", "visible_bias")
    ]


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------- training
def test_training_writes_metrics_per_layer_and_epoch(run, images, tmp_path, capsys):
    records = _metrics(run / "metrics.jsonl")
    assert [(r["layer"], r["epoch"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for record in records:
        for key in ("reconstruction_error", "relative_error", "sparsity_hidden", "sparsity_pooled", "weight_norm"):
            assert np.isfinite(record[key]) and record[key] >= 0, (key, record)
        assert 0 < record["sparsity_hidden"] <= record["sparsity_pooled"] <= 1  # a cell's units share its pool
    assert [r["sigma"] for r in records] == [pytest.approx(0.2), pytest.approx(0.198), None, None]  # layer 1 decays
    assert [r["sparsity_target"] for r in records] == [0.002, 0.002, 0.005, 0.005]
    summary = json.loads((run / "run.json").read_text())
    assert summary["layers_finished"] == 2 and summary["images"] == 6
    assert summary["config"]["bases"] == [4, 6] and summary["config"]["image_size"] == SIZE
    assert set(summary["seconds_per_layer"]) == {"1", "2"}
    state = _checkpoint(run)
    assert state["progress"]["layer"] == 2 and state["progress"]["epoch"] == 2
    weights = [layer["weight"] for layer in state["network"]["layers"]]
    assert [tuple(w.shape) for w in weights] == [(4, 1, 5, 5), (6, 4, 5, 5)]
    assert all(bool(torch.isfinite(t).all()) for t in _tensors(state))

    code, out, err = cli(capsys, "cdbn", "train", "--data", images, "--out", tmp_path / "r", *TRAIN, "--layers", 1)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "r")  # the run folder on stdout
    assert len(_metrics(tmp_path / "r" / "metrics.jsonl")) == 2


@pytest.mark.parametrize(
    "calls, finished", [(2, 0), (3, 1), (4, 1)], ids=["mid-layer-1", "between-layers", "mid-layer-2"]
)
def test_resume_after_an_interruption_is_exact(images, run, tmp_path, monkeypatch, capsys, calls, finished):
    """Interrupted before the ``calls``-th epoch (exit 130, a hint to resume; the checkpoint holds
    the epochs before, and cdbn:RUN their finished layers), then ``--resume``: every tensor of the
    checkpoint (filters, biases, momentum) is bit-identical to the uninterrupted run's, and so is
    every metrics line but its seconds."""
    out = tmp_path / "interrupted"
    count = {"n": 0}
    epoch = training.train_epoch

    def interrupted_epoch(*args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt
        return epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", interrupted_epoch)
    code, _, err = cli(capsys, "cdbn", "train", "--data", images, "--out", out, *TRAIN, "--layers", 2)
    assert code == 130 and "--resume" in err
    assert len(_metrics(out / "metrics.jsonl")) == calls - 1
    assert json.loads((out / "run.json").read_text())["layers_finished"] == finished
    if finished:
        partial = vizkit.load_model(f"cdbn:{out}")
        assert isinstance(partial, CdbnModel) and len(partial.layers) == finished
    else:
        with pytest.raises(vizkit.UsageError, match="no layer has finished"):
            vizkit.load_model(f"cdbn:{out}")

    monkeypatch.setattr(training, "train_epoch", epoch)
    code, _, err = cli(capsys, "cdbn", "train", "--data", images, "--out", out, "--resume", "--quiet")
    assert code == 0, err
    ours, reference = _tensors(_checkpoint(out)), _tensors(_checkpoint(run))
    assert len(ours) == len(reference) == 12
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))
    assert _without_seconds(out / "metrics.jsonl") == _without_seconds(run / "metrics.jsonl")


def test_resume_drops_a_metrics_line_written_after_the_last_checkpoint(images, run, tmp_path, monkeypatch, capsys):
    """A crash between an epoch's metrics line and its checkpoint leaves a line the checkpoint
    does not know: --resume drops it and redoes the epoch, exactly."""
    out = tmp_path / "crashed"
    count = {"n": 0}
    checkpoint = training._checkpoint

    def crashing_checkpoint(*args, **kwargs):
        count["n"] += 1
        if count["n"] == 3:  # layer 2, epoch 1: its metrics line is written, its checkpoint is not
            raise KeyboardInterrupt
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(training, "_checkpoint", crashing_checkpoint)
    code, _, _ = cli(capsys, "cdbn", "train", "--data", images, "--out", out, *TRAIN, "--layers", 2)
    assert code == 130
    assert [(r["layer"], r["epoch"]) for r in _metrics(out / "metrics.jsonl")] == [(1, 1), (1, 2), (2, 1)]
    monkeypatch.setattr(training, "_checkpoint", checkpoint)
    code, _, err = cli(capsys, "cdbn", "train", "--data", images, "--out", out, "--resume", "--quiet")
    assert code == 0, err
    assert all(torch.equal(a, b) for a, b in zip(_tensors(_checkpoint(out)), _tensors(_checkpoint(run))))
    assert _without_seconds(out / "metrics.jsonl") == _without_seconds(run / "metrics.jsonl")


def test_below_keeps_the_lower_layers_and_trains_the_next(images, run, tmp_path, capsys):
    """``--below RUN --layers 3``: layers 1-2 are RUN's, bit for bit (its settings kept for
    them: sizes, sparsity targets, scale), and only layer 3 is trained."""
    out = tmp_path / "parts"
    code, _, err = cli(
        capsys, "cdbn", "train", "--data", images, "--out", out, "--below", run, "--layers", 3,
        "--bases", "9,9,5", "--filter-size", "9,9,3", "--epochs", 2, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    state, reference = _checkpoint(out), _checkpoint(run)
    layers, kept = state["network"]["layers"], reference["network"]["layers"]
    assert len(layers) == 3
    for ours, theirs in zip(layers[:2], kept):
        for name in ("weight", "hidden_bias", "visible_bias"):
            assert torch.equal(ours[name], theirs[name]), name
        assert ours["sigma"] == theirs["sigma"] and ours["gaussian"] == theirs["gaussian"]
    assert tuple(layers[2]["weight"].shape) == (5, 6, 3, 3)
    assert [(r["layer"], r["epoch"]) for r in _metrics(out / "metrics.jsonl")] == [(3, 1), (3, 2)]
    summary = json.loads((out / "run.json").read_text())
    config = summary["config"]
    assert summary["layers_finished"] == 3 and config["frozen"] == 2
    assert config["bases"] == [4, 6, 5] and config["filters"] == [5, 5, 3]  # RUN's for the kept layers
    assert config["image_size"] == SIZE and config["sparsity"][:2] == [0.002, 0.005]
    model = vizkit.load_model(f"cdbn:{out}")
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (1, 5, 1, 1)  # 32 -> 28 -> 14 -> 10 -> 5 -> 3 -> 1


# ------------------------------------------------------------------------------- cdbn:RUN
def test_the_model_spec_is_feed_forward_inference(run):
    model = vizkit.load_model(f"cdbn:{run}")
    assert isinstance(model, CdbnModel) and len(model.layers) == 2
    info = vizkit.models.model_info(model)
    assert info.preprocess is not None and info.preprocess.crop == SIZE
    assert info.aliases["p2"] == "layers.1.pool" and info.aliases["i1"] == "layers.0.conv"
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    network = finished_network(run)
    reference = network.infer(x)
    assert out.shape == reference[-1][1].shape == (3, 6, 5, 5)
    assert torch.allclose(out, reference[-1][1], rtol=1e-4, atol=1e-6)
    assert float(out.std()) > 0
    layer = model.layers[0]
    assert isinstance(layer, CdbnLayer)
    first = layer.pool(layer.conv(model.input(x)))
    assert torch.allclose(first, reference[0][1], rtol=1e-4, atol=1e-6)  # and so is each layer


def test_analyses_run_on_the_model_from_the_cli(run, images, tmp_path, capsys, no_hooks_left):
    """top9, filters and deconvnet (every switch mode it has) on cdbn:RUN: exit 0, result.json
    written, no hook left on any model they built."""
    image = sorted(images.iterdir())[0]
    model = f"cdbn:{run}"
    commands = {
        "top9": ("--data", images, "--layer", "p1", "--channels", "0,1", "--k", 3, "--workers", 0),
        "filters": ("--image", image),  # no --layer: the grey first convolution is found
        "deconvnet": ("--image", image, "--layer", "p2", "--top", 2),
    }
    code, usage, _ = cli(capsys, "run", "deconvnet", "--help")
    switches = ["argmax", "expected", "sampled"] if "--switches" in usage else []
    runs = [(name, args) for name, args in commands.items()]
    runs += [("deconvnet", (*commands["deconvnet"], "--switches", mode)) for mode in switches]
    for i, (name, args) in enumerate(runs):
        out = tmp_path / f"{name}-{i}"
        code, _, err = cli(capsys, "run", name, "--model", model, *args, "--out", out, "--quiet")
        assert code == 0, (name, args, err)
        result = json.loads((out / "result.json").read_text())
        assert result["analysis"] == name and result["model"]["spec"] == model
    assert len(no_hooks_left) == len(runs)
    deconvnet = json.loads((tmp_path / "deconvnet-2" / "result.json").read_text())
    assert deconvnet["layer"] == "layers.1.pool" and len(deconvnet["channels"]) == 2
    filters = json.loads((tmp_path / "filters-1" / "result.json").read_text())
    assert filters["layer"] == "layers.0.conv" and filters["filters"] == 4 and filters["kernel"] == [5, 5]


def test_deconvnet_from_python_leaves_no_hooks(run):
    model = vizkit.load_model(f"cdbn:{run}")
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    result = vizkit.run("deconvnet", model, images=x, layer="p2", top=2)
    assert_no_hooks(model)
    projections = result.arrays["projections"]
    assert projections.shape[-3:] == (3, SIZE, SIZE) and np.abs(projections).max() > 0


# ------------------------------------------------------------------------------- errors
def test_bad_model_specs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(vizkit.UsageError, match="no run folder named"):
        vizkit.load_model("cdbn:")
    with pytest.raises(vizkit.UsageError, match="no such run folder"):
        vizkit.load_model(f"cdbn:{tmp_path / 'missing'}")
    with pytest.raises(vizkit.UsageError, match="not a CDBN run folder"):
        vizkit.load_model(f"cdbn:{tmp_path}")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(vizkit.UsageError, match="not a readable CDBN checkpoint"):
        vizkit.load_model(f"cdbn:{tmp_path}")
    torch.save({"something": torch.zeros(1)}, tmp_path / "checkpoint.pt")
    with pytest.raises(vizkit.UsageError, match="not a CDBN checkpoint"):
        vizkit.load_model(f"cdbn:{tmp_path}")

    image = tmp_path / "image.png"
    _picture(0).save(image)
    for spec in (f"cdbn:{tmp_path / 'missing'}", f"cdbn:{tmp_path}"):
        code, _, err = cli(capsys, "run", "filters", "--model", spec, "--image", image, "--out", tmp_path / "o")
        assert code == 2, err
        assert "cdbn:" in err or "CDBN" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_run_is_not_overwritten_and_resume_needs_one(images, run, tmp_path, capsys):
    before = (run / "checkpoint.pt").read_bytes()
    code, _, err = cli(capsys, "cdbn", "train", "--data", images, "--out", run, *TRAIN)
    assert code == 2 and "--resume" in err and "Traceback" not in err
    assert (run / "checkpoint.pt").read_bytes() == before
    code, _, err = cli(capsys, "cdbn", "train", "--data", images, "--out", tmp_path / "x", "--resume", "--quiet")
    assert code == 2 and "no checkpoint.pt" in err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--layers", "3"], "--bases needs a value for each of the 3 layers"),
        (["--bases", "4,x"], "comma-separated numbers"),
        (["--filter-size", "5"], "--filter-size needs a value for each of the 2 layers"),
        (["--patch", "4"], "--patch at least 6"),
        (["--size", "16"], "must be at least --patch"),
        (["--sparsity", "0.5,1.5"], "sparsity targets"),
        (["--epochs", "0"], "at least 1"),
        (["--data", "/no/such/folder"], "no such folder"),
    ],
)
def test_bad_training_options_are_one_line_errors(images, tmp_path, capsys, arguments, message):
    options = {"--data": images, **OPTIONS, **dict(zip(arguments[::2], arguments[1::2]))}
    code, _, err = cli(
        capsys, "cdbn", "train", *itertools.chain.from_iterable(options.items()), "--out", tmp_path / "r"
    )
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_below_a_run_with_as_many_layers_is_refused(images, run, tmp_path, capsys):
    code, _, err = cli(capsys, "cdbn", "train", "--data", images, "--out", tmp_path / "r", "--below", run, "--layers", 2, "--quiet")  # fmt: skip
    assert code == 2 and "already has 2 layer(s)" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "cdbn", "train", "--data", images, "--out", tmp_path / "r", "--below", tmp_path / "none", "--layers", 3, "--quiet")  # fmt: skip
    assert code == 2 and "not a CDBN run folder" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_keep_takes_only_the_first_layers_of_below(images, run, tmp_path, capsys):
    """``--below RUN --keep 1 --layers 2``: RUN's layer 1 bit for bit, a new layer 2 trained on it
    (the object-part runs retrain an upper layer over a run's lower ones); too many is refused."""
    out = tmp_path / "again"
    code, _, err = cli(
        capsys, "cdbn", "train", "--data", images, "--out", out, "--below", run, "--keep", 1, "--layers", 2,
        "--bases", "4,3", "--filter-size", "5,3", "--epochs", 1, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    layers, kept = _checkpoint(out)["network"]["layers"], _checkpoint(run)["network"]["layers"]
    assert len(layers) == 2 and torch.equal(layers[0]["weight"], kept[0]["weight"])
    assert tuple(layers[1]["weight"].shape) == (3, 4, 3, 3)
    assert json.loads((out / "run.json").read_text())["config"]["frozen"] == 1
    code, _, err = cli(capsys, "cdbn", "train", "--data", images, "--out", tmp_path / "x", "--below", run, "--keep", 3, "--layers", 4, "--quiet")  # fmt: skip
    assert code == 2 and "has only 2 finished layer(s)" in err and len(err.strip().splitlines()) == 1
