"""The ADN plugin end to end: training (metrics, resume exact), the model spec adn:RUN (its
deconvnet projections are the network's own top-down reconstructions, explicit and autograd
alike, hooks removed), the figures, the Caltech-101 command, and one-line errors.

The core mathematics (pooling, R_l, ISTA, CG) is checked in tests/test_adn_core.py."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vizkit
import vizkit.app.cli
from helpers import assert_no_hooks, cli
from vizkit_plugins.adn import contrast, training
from vizkit_plugins.adn.network import AdnConfig, AdnNetwork, filter_norm_squared, random_filters
from vizkit_plugins.adn.reconstruction import operator_norm_squared, reconstruct_unpooled

SIZE = 24


def _picture(kind: int, seed: int) -> Image.Image:
    """Small synthetic photographs: stripes one way or the other, or blobs, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:40]
    phase = rng.uniform(0, 6.28)
    if kind == 0:
        grey = np.sin(xx / 2.0 + phase)
    elif kind == 1:
        grey = np.sin(yy / 2.0 + phase)
    else:
        grey = np.sin(xx / 3.0 + phase) * np.sin(yy / 3.0 + phase)
    grey = grey + 0.3 * rng.standard_normal(grey.shape)
    pixels = np.clip((grey + 1.5) / 3 * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([pixels] * 3, axis=-1))


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """Three classes of eight pictures each, plus a background folder."""
    root = tmp_path_factory.mktemp("adn-data")
    for kind, name in enumerate(("horizontal", "vertical", "blobs", "BACKGROUND_Google")):
        folder = root / name
        folder.mkdir()
        for i in range(8):
            _picture(kind % 3, 100 * kind + i).save(folder / f"{i:03d}.png")
    return root


def _train(data: Path, out: Path, *extra: str) -> None:
    code = vizkit.app.cli.main(
        ["adn", "train", "--data", str(data), "--out", str(out), "--layers", "2", "--epochs", "2", "--per-class", "2",
         "--size", str(SIZE), "--maps", "6,8", "--ista-steps", "5", "--cg-steps", "3", "--batch-size", "4", "--quiet",
         *extra],
    )  # fmt: skip
    assert code == 0


@pytest.fixture(scope="module")
def run(image_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adn-run") / "run"
    _train(image_tree, out)
    return out


def test_training_writes_metrics_per_epoch_and_the_cost_falls(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["layer"], r["epoch"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for record in records:
        costs = record["ista_costs"]
        assert len(costs) == 6 and costs[-1] < costs[0]  # ISTA lowers the cost from the zero code
        assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(costs))  # and never raises it
        steps = record["step_size_guaranteed"], record["step_size_end_median"], record["step_size_start"]
        assert steps[0] * (1 - 1e-6) <= steps[1] <= steps[2] * (1 + 1e-6)  # halved from the estimate, floored
        assert 0 <= record["sparsity"] <= 1 and 0 <= record["sparsity_unpooled"] <= 1
        assert record["cg_residuals"][-1] < record["cg_residuals"][0]
        assert record["relative_error"] < 1.0  # the code explains part of the image
    summary = json.loads((run / "run.json").read_text())
    assert summary["layers_finished"] == 2 and summary["images"] == 8  # 2 from each of 4 folders
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for weight in state["network"]["filters"]:  # the paper's constraint: unit-norm filters
        assert torch.allclose(weight.flatten(1).norm(dim=1), torch.ones(weight.shape[0]), atol=1e-5)


def test_resume_after_an_interruption_gives_the_same_filters(image_tree, run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "interrupted"
    calls = {"n": 0}
    epoch = training._train_epoch

    def interrupted_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # during layer 2's first epoch
            raise KeyboardInterrupt
        return epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", interrupted_epoch)
    code, _, err = cli(
        capsys, "adn", "train", "--data", image_tree, "--out", out, "--layers", "2", "--epochs", "2",
        "--per-class", "2", "--size", SIZE, "--maps", "6,8", "--ista-steps", "5", "--cg-steps", "3",
        "--batch-size", "4", "--quiet",
    )  # fmt: skip
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(training, "_train_epoch", epoch)
    _train(image_tree, out, "--resume")
    ours = torch.load(out / "checkpoint.pt", weights_only=True)["network"]["filters"]
    reference = torch.load(run / "checkpoint.pt", weights_only=True)["network"]["filters"]
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))

    def without_seconds(path: Path) -> list[dict]:
        return [
            {k: v for k, v in json.loads(line).items() if not k.startswith("seconds")}
            for line in path.read_text().splitlines()
        ]

    assert without_seconds(out / "metrics.jsonl") == without_seconds(run / "metrics.jsonl")


def test_a_run_is_not_overwritten_and_resume_needs_one(image_tree, run, tmp_path, capsys):
    code, _, err = cli(capsys, "adn", "train", "--data", image_tree, "--out", run, "--quiet")
    assert code == 2 and "--resume" in err
    code, _, err = cli(capsys, "adn", "train", "--data", image_tree, "--out", tmp_path / "x", "--resume")
    assert code == 2 and "no checkpoint.pt" in err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--data", "/no/such/folder"], "no such folder"),
        (["--maps", "6,x"], "comma-separated numbers"),
        (["--layers", "2", "--maps", "6"], "for each of the 2 layers"),
        (["--epochs", "0"], "at least 1"),
        (["--lambdas", "2,-1,1,1"], "positive"),
    ],
)
def test_bad_training_options_are_one_line_errors(image_tree, tmp_path, capsys, arguments, message):
    code, _, err = cli(capsys, "adn", "train", "--data", image_tree, "--out", tmp_path / "r", "--quiet", *arguments)
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_bad_model_specs_are_one_line_errors(tmp_path):
    with pytest.raises(vizkit.UsageError, match="no such run folder"):
        vizkit.load_model(f"adn:{tmp_path / 'missing'}")
    with pytest.raises(vizkit.UsageError, match="not an ADN run folder"):
        vizkit.load_model(f"adn:{tmp_path}")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(vizkit.UsageError, match="not a readable ADN checkpoint"):
        vizkit.load_model(f"adn:{tmp_path}")


def test_the_model_spec_loads_the_finished_layers_with_aliases(run):
    model = vizkit.load_model(f"adn:{run}")
    info = vizkit.models.model_info(model)
    assert info.preprocess.crop == SIZE and info.aliases["p2"] == "layers.1.pool"
    x = torch.rand(2, 3, SIZE, SIZE)
    out = model(x)
    assert out.shape == (2, 4, math.ceil(SIZE / 9), math.ceil(SIZE / 9))  # 8 maps pooled in pairs, 3x3 twice
    codes = model.network().infer(contrast.prepare(x))
    assert torch.equal(out, codes[-1].p)  # the forward is inference


@pytest.mark.parametrize("layer", ["p1", "z2", "p2"])
def test_deconvnet_projections_are_the_networks_top_down_reconstructions(run, layer):
    """vizkit's deconvnet on adn:RUN, explicit and autograd, equals R_l applied to the chosen
    activation alone through the image's inferred switches, computed here from the network."""
    model = vizkit.load_model(f"adn:{run}")
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    results = {}
    for method in ("explicit", "autograd"):
        result = vizkit.run("deconvnet", model, images=image, layer=layer, top=2, method=method)
        results[method] = result
        assert_no_hooks(model)
    projections = results["explicit"].arrays["projections"]
    assert np.allclose(projections, results["autograd"].arrays["projections"], atol=1e-6)

    network = model.network()
    codes = network.infer(contrast.prepare(image))
    index = int(layer[1]) - 1
    maps = codes[index].z if layer[0] == "z" else codes[index].p
    channels = results["explicit"].summary["channels"]
    for slot, channel in enumerate(channels[:2]):
        plane = maps[0, channel]
        position = int(plane.flatten().argmax())
        one = torch.zeros_like(maps)
        one[0, channel].view(-1)[position] = plane.flatten()[position]
        if layer[0] == "p":
            from vizkit_plugins.adn.pooling import unpool

            one = unpool(one, codes[index].switches)
        below = [code.switches for code in codes[:index]]
        expected = reconstruct_unpooled(one, network.filters[: index + 1], below)[0, 0] / 3
        got = torch.as_tensor(projections[slot])  # [3, H, W]: the grey signal on every channel
        assert float(expected.abs().max()) > 0
        assert torch.allclose(got, expected.expand_as(got), atol=1e-5 * float(expected.abs().max()))


def test_top9_runs_on_the_adn(run, image_tree):
    model = vizkit.load_model(f"adn:{run}")
    result = vizkit.run("top9", model, data=image_tree / "blobs", layer="p1", channels="0,1", k=3, batch_size=4)
    assert_no_hooks(model)
    assert result.arrays["projections"].shape[:2] == (2, 3)
    assert np.abs(result.arrays["projections"]).max() > 0  # each winner projected through its switches


def test_step_sizes_bound_the_operator_so_ista_never_rises():
    """The spectral filter norm bounds ||F||^2 (exact SVD on a fine grid), and the product over
    layers bounds ||R_l||^2 with any switches (power iteration)."""
    generator = torch.Generator().manual_seed(0)
    config = AdnConfig(maps=(6, 8), lambdas=(1.0, 1.0), regions=((3, 3, 3), (2, 3, 3)), image_size=24)
    filters = [random_filters(config, 1, generator), random_filters(config, 2, generator)]
    for weight in filters:
        spectra = torch.fft.fft2(weight.double(), s=(128, 128)).permute(2, 3, 1, 0)
        exact = float(torch.linalg.matrix_norm(spectra, ord=2).max() ** 2)
        assert exact <= filter_norm_squared(weight) <= 1.2 * exact
    network = AdnNetwork(config=config, filters=filters)
    y = contrast.prepare(torch.rand(2, 1, 24, 24, generator=generator))
    codes = network.infer(y)
    switches = [code.switches for code in codes]
    bound = filter_norm_squared(filters[0]) * filter_norm_squared(filters[1])
    assert operator_norm_squared([w.double() for w in filters], switches, iterations=200) <= bound
    code = network.infer_layer(y, 2, switches[:1], steps=30)
    assert code.costs[-1] < code.costs[0]  # with switches moving no step is guaranteed, the run is


def test_an_images_code_does_not_depend_on_its_batch(run):
    network = vizkit.load_model(f"adn:{run}").network()
    y = contrast.prepare(torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)))
    together = network.infer(y)
    for i in range(3):
        alone = network.infer(y[i : i + 1])
        for a, b in zip(alone, together):
            assert torch.allclose(a.z[0], b.z[i], atol=1e-5) and torch.equal(a.switches.index[0], b.switches.index[i])


def test_contrast_normalisation_centres_and_scales_locally():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 48, 48, generator=generator) * 0.5 + 0.25
    y = contrast.prepare(images)
    assert y.shape == (2, 1, 48, 48)
    window = contrast.gaussian_window()
    inside = y[..., 8:-8, 8:-8]
    local_mean = torch.nn.functional.conv2d(y, window)[..., 4:-4, 4:-4]
    assert float(local_mean.abs().mean()) < 0.1 * float(inside.abs().mean())  # about zero local mean
    assert 0.5 < float(inside.std()) < 2.0  # about unit contrast
    assert torch.allclose(contrast.prepare(images * 3 + 1), y, atol=1e-4)  # brightness and contrast gone


def test_figures_are_written_and_not_blank(run, image_tree, capsys):
    code, out, err = cli(capsys, "adn", "figures", run, "--data", image_tree, "--images", "8")
    assert code == 0, err
    names = {Path(line).name for line in out.split()}
    assert names == {"projections_layer1.png", "projections_layer2.png", "reconstructions.png"}
    for name in names:
        pixels = np.asarray(Image.open(run / "figures" / name).convert("L"), dtype=float)
        assert pixels.std() > 10  # not blank
    record = json.loads((run / "figures" / "figures.json").read_text())
    assert len(record["strongest"]) == 2 and len(record["strongest"][1]) == 8


def test_caltech_command_on_a_small_tree(run, image_tree, tmp_path, capsys):
    out = tmp_path / "caltech.json"
    code, _, err = cli(
        capsys, "adn", "caltech", run, "--data", image_tree, "--splits", "2", "--train", "3", "--test", "4",
        "--words", "8", "--out", out, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out.read_text())
    assert len(record["accuracies_percent"]) == 2 and record["paper_percent"] == [67.8, 1.2]
    assert record["settings"]["classes"] == 3  # BACKGROUND_Google is not a class
    assert record["mean_percent"] > 100 / 3  # better than chance on stripes vs blobs
    code, _, err = cli(capsys, "adn", "caltech", run, "--data", image_tree, "--features", "1+2", "--splits", "0")
    assert code == 2 and "at least 1" in err
