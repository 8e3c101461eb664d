"""A model with finite weights that produces NaN or inf inside (an overflowing layer) is stopped
where the values first appear: one ``vizkit: error:`` line naming the layer and the image, exit
status 1 (the model's property, not a command-line mistake), no result written, no hook left."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vizkit
from helpers import assert_no_hooks, cli

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn
    import vizkit


    class Net(nn.Module):
        def __init__(self, masked=False):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1),  # features.0: the local mean of the image
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 4, 3, padding=1),  # features.3: weights 1e37, finite; overflows on bright images
                nn.Tanh() if masked else nn.ReLU(),  # features.4: tanh hides the inf from the output
            )
            self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
            with torch.no_grad():
                self.features[0].weight.fill_(1 / 27)
                self.features[0].bias.zero_()
                self.features[3].weight.fill_(1e37)
                self.features[3].bias.zero_()
                self.classifier[2].weight.copy_(torch.tensor([[1.0, -1, 0, 0], [0, 1, -1, 0], [0, 0, 1, -1]]))
            self.vizkit_info = vizkit.models.ModelInfo(preprocess=vizkit.Preprocess(resize=32, crop=32))

        def forward(self, x):
            return self.classifier(self.features(x))


    def overflowing():
        return Net()


    def masked():
        return Net(masked=True)
    """
)

LAYER = "features.3"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nonfinite")
    (root / "nets.py").write_text(MODEL_SOURCE)
    data = root / "data"
    data.mkdir()
    for name, value in (("black.png", 0), ("white.png", 255)):
        Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(data / name)
    return {"model": root / "nets.py", "black": data / "black.png", "white": data / "white.png", "data": data}


pytestmark = pytest.mark.usefixtures("no_hooks_left")


def assert_non_finite_error(result: tuple[int, str, str], *fragments: str) -> str:
    code, out, err = result
    assert code == 1, (code, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vizkit: error: layer '{LAYER}' produced inf activations on image "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def run_argv(files, analysis: str, *extra) -> list:
    return ["run", analysis, "--model", f"{files['model']}:overflowing", "--quiet", *extra]


@pytest.mark.parametrize(
    "analysis,options",
    [
        ("occlusion", ["--size", "8", "--stride", "8"]),
        ("occlusion", ["--size", "8", "--stride", "8", "--mode", "batched"]),
        ("deconvnet", ["--layer", "features.4", "--top", "1"]),
        ("filters", ["--layer", LAYER]),
        ("attribution", ["--method", "saliency"]),
    ],
)
def test_image_analyses_name_the_layer_and_the_image(analysis, options, files, capsys, tmp_path, recorded_models):
    out = tmp_path / "out"
    argv = run_argv(files, analysis, "--image", files["black"], files["white"], *options, "--out", out)
    message = assert_non_finite_error(cli(capsys, *argv), "white.png")
    assert "black.png" not in message  # only the image that overflows
    assert not out.exists()
    assert recorded_models


def test_top9_over_a_folder_names_the_file(files, capsys, tmp_path):
    out = tmp_path / "out"
    argv = run_argv(files, "top9", "--data", files["data"], "--layer", LAYER, "--k", "1", "--workers", "0")
    message = assert_non_finite_error(cli(capsys, *argv, "--patch-size", "8", "--out", out), "white.png")
    assert "black.png" not in message
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left in ([], [".top9-scan.pt"]), left  # at most the scan's hidden checkpoint (top9's --resume)


def test_finite_images_still_run(files, capsys, tmp_path):
    """The check refuses nothing that is finite: the dark image alone runs through."""
    out = tmp_path / "out"
    argv = run_argv(files, "deconvnet", "--image", files["black"], "--layer", "features.4", "--top", "1")
    code, _out, err = cli(capsys, *argv, "--out", out)
    assert code == 0, err
    assert (out / "result.json").is_file()


def test_filters_of_a_finite_first_layer_are_computed(files, capsys, tmp_path):
    """The first convolution's diagnostics are finite even when a later layer overflows."""
    out = tmp_path / "out"
    code, _out, err = cli(capsys, *run_argv(files, "filters", "--image", files["white"], "--out", out))
    assert code == 0, err
    assert (out / "result.json").is_file()


def test_an_overflow_hidden_from_the_output_is_caught_when_its_layer_is_read(files, capsys, tmp_path):
    """tanh turns the inf into 1 (the output is finite), but a deconvnet of the layer reads it."""
    out = tmp_path / "out"
    argv = ["run", "deconvnet", "--model", f"{files['model']}:masked", "--image", files["white"]]
    assert_non_finite_error(cli(capsys, *argv, "--layer", LAYER, "--top", "1", "--out", out), "white.png")
    assert not out.exists()


def _net(files, name: str = "overflowing") -> nn.Module:
    return vizkit.load_model(f"{files['model']}:{name}")


def test_python_api_error_and_opt_out(files):
    model = _net(files)
    x = vizkit.load_images([files["black"], files["white"]], model)
    with vizkit.instrument(model) as im, torch.no_grad():
        with pytest.raises(vizkit.NonFiniteActivation) as caught:
            im(x)
        error = caught.value
        assert error.layer == LAYER and error.rows == [1] and error.kinds == "inf"
        assert f"layer '{LAYER}' produced inf activations on image #1 of a batch of 2" in str(error)
        assert isinstance(error, vizkit.VizkitError) and not isinstance(error, vizkit.UsageError)
        with pytest.raises(vizkit.NonFiniteActivation, match=LAYER):
            im(x, until=LAYER)
        assert torch.isfinite(im(x, until="features.0")).all()  # before the overflow: fine
        with im.configured(check_finite=False):
            assert not torch.isfinite(im(x)).all()  # asked for: the values come through
            assert not torch.isfinite(im.activation(LAYER)).all()
        with pytest.raises(vizkit.NonFiniteActivation, match=LAYER):
            im.activation(LAYER)  # the unchecked forward's activation, read with checks back on
    assert_no_hooks(model)


def test_masked_overflow_passes_the_output_check_but_not_a_read(files):
    model = _net(files, "masked")
    x = vizkit.load_images([files["white"]], model)
    with vizkit.instrument(model) as im, torch.no_grad():
        assert torch.isfinite(im(x)).all()
        im.activation("features.0")  # finite layers read fine, after the overflow too
        im.activation("features.4")
        with pytest.raises(vizkit.NonFiniteActivation, match=f"layer '{LAYER}' produced inf"):
            im.activation(LAYER)
    assert_no_hooks(model)


def test_incremental_occlusion_checks_each_batch_of_positions(files):
    """A huge (finite) occluder colour overflows the layer only where it is pasted."""
    model = _net(files)
    x = vizkit.load_images([files["black"]], model)
    with vizkit.instrument(model) as im, torch.no_grad():
        engine = vizkit.engine.IncrementalOcclusion(im, x, "features.4")
        logits, _ = engine.evaluate([(0, 0), (8, 8)], 8, torch.zeros(3))
        assert torch.isfinite(logits).all()
        im.name_input = lambda row: "black.png" if torch.equal(row, x[0]) else None
        with pytest.raises(vizkit.NonFiniteActivation) as caught:
            engine.evaluate([(0, 0), (8, 8)], 8, torch.full((3,), 1e3))
        assert caught.value.layer == LAYER
        assert "on image black.png (occluded at (0, 0))" in str(caught.value)
    assert_no_hooks(model)


def test_an_input_that_is_itself_not_finite_is_a_usage_error(files, capsys, tmp_path):
    """--mean 3e38 is a float32, but (pixel - mean) / std overflows: the input is blamed, not a layer."""
    out = tmp_path / "out"
    argv = run_argv(files, "deconvnet", "--image", files["black"], "--layer", "features.0", "--mean", "3e38,0,0")
    code, _out, err = cli(capsys, *argv, "--out", out)
    assert code == 2, err
    assert err.strip().splitlines() == [
        "vizkit: error: the input image black.png holds inf values after preprocessing: "
        "check --mean and --std (or the input tensor)"
    ]
    assert not out.exists()
