"""The deconvnet analysis end to end, from Python and from the CLI, on real weights and images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import vizkit
from helpers import LABELS, SQUEEZENET_WEIGHTS, assert_no_hooks, sample
from vizkit.app.cli import main
from vizkit.app.report import write_report


@pytest.mark.slow
def test_strongest_maps_of_real_squeezenet(squeezenet, dog_image):
    result = vizkit.run("deconvnet", squeezenet, images=[dog_image], layer="features.12", top=9)
    assert_no_hooks(squeezenet)
    projections, positions = result.arrays["projections"], result.arrays["positions"]
    assert projections.shape == (9, 3, 224, 224) and projections.dtype == np.float32
    assert positions.shape == (9, 2)
    # independent check: a plain forward hook on the same layer
    captured = {}
    handle = squeezenet.features[12].register_forward_hook(lambda m, i, o: captured.update(a=o.detach()))
    try:
        with torch.no_grad():
            logits = squeezenet(vizkit.load_images([dog_image], vizkit.Preprocess()))
    finally:
        handle.remove()
    maxima = captured["a"][0].flatten(1).amax(1)
    expected = maxima.argsort(descending=True)[:9].tolist()
    assert result["channels"] == expected
    assert np.allclose(result["activations"], maxima[expected].numpy(), rtol=1e-5)
    for j, channel in enumerate(expected):
        row, col = positions[j]
        assert captured["a"][0, channel, row, col] == maxima[channel]
    assert result["predicted"][0]["label"] == "golden retriever"
    assert result["predicted"][0]["index"] == int(logits.argmax())
    assert np.all(np.abs(projections).reshape(9, -1).max(1) > 0)
    assert set(result.figures) == {"deconvnet"}


def test_several_images_and_explicit_channels(squeezenet, dog_image):
    images = [dog_image, sample("Pomeranian")]
    result = vizkit.run("deconvnet", squeezenet, images=images, layer="features.7", channels="3,5-6")
    assert result["channels"] == [3, 5, 6]
    assert result.arrays["projections"].shape == (2, 3, 3, 224, 224)
    assert set(result.figures) == {"deconvnet_0", "deconvnet_1"}
    assert_no_hooks(squeezenet)


def test_rank_each_projects_each_images_own_strongest_maps(tmp_path):
    """--rank each: every image gets its own top maps (checked against the layer's activations
    read directly), each projected exactly as a run on that image alone projects it; the
    default ranks on the first image, so later images show the first image's maps."""
    model = vizkit.load_model("zfnet-compact")
    images = [sample("tench"), sample("parachute"), sample("golf_ball")]
    each = vizkit.run("deconvnet", model, images=images, layer="conv2", top=5, rank="each")
    x = vizkit.load_images(images, model)
    with vizkit.instrument(model, layers=["conv2"]) as im, torch.no_grad():
        im(x)
        strengths = im.activation("conv2").flatten(2).amax(2)
    expected = [row.argsort(descending=True, stable=True)[:5].tolist() for row in strengths]
    assert each["channels"] == expected and expected[0] != expected[1]
    assert all(v > 0 for row in each["activations"] for v in row)  # each image's own maps fire on it
    alone = vizkit.run("deconvnet", model, images=[images[1]], layer="conv2", top=5)
    assert alone["channels"] == expected[1]
    np.testing.assert_allclose(each.arrays["projections"][1], alone.arrays["projections"], atol=1e-6)
    first = vizkit.run("deconvnet", model, images=images, layer="conv2", top=5)
    assert first["channels"] == expected[0]
    each.save(tmp_path / "each")
    html = write_report(tmp_path)[0].read_text()
    assert "<th>channels</th>" in html
    assert_no_hooks(model)


def test_failing_run_leaves_no_hooks(squeezenet, dog_image):
    with pytest.raises(vizkit.VizkitError, match="unknown layer"):
        vizkit.run("deconvnet", squeezenet, images=[dog_image], layer="features.99")
    assert_no_hooks(squeezenet)
    with pytest.raises(vizkit.UsageError, match="out of range"):
        vizkit.run("deconvnet", squeezenet, images=[dog_image], layer="features.12", channels="600")
    assert_no_hooks(squeezenet)


@pytest.mark.parametrize(
    "spec,layer",
    [
        ("zfnet", "conv5"),
        ("zfnet", "fc7"),
        ("torchvision:resnet18", "layer4"),
        pytest.param("torchvision:googlenet", "inception4c", marks=pytest.mark.slow),
        pytest.param("torchvision:inception_v3", "Mixed_6a.max_pool2d", marks=pytest.mark.slow),
    ],
)
def test_any_layer_of_other_models(spec, layer, dog_image):
    torch.manual_seed(0)
    model = vizkit.load_model(spec)
    result = vizkit.run("deconvnet", model, images=[dog_image], layer=layer, top=2)
    assert result.arrays["projections"].shape[0] == 2
    assert np.isfinite(result.arrays["projections"]).all()
    assert_no_hooks(model)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, dog_image, capsys):
    out = tmp_path / "deconv"
    argv = [
        "run",
        "deconvnet",
        "--model",
        "torchvision:squeezenet1_0",
        "--weights",
        str(SQUEEZENET_WEIGHTS),
        "--labels",
        str(LABELS),
        "--image",
        str(dog_image),
        "--layer",
        "features.12",
        "--top",
        "4",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    document, arrays = vizkit.load_result(out)
    assert document["analysis"] == "deconvnet" and document["layer"] == "features.12"
    assert len(document["channels"]) == 4 and len(document["activations"]) == 4
    assert document["model"]["weights_sha256"] == vizkit.models.sha256_file(SQUEEZENET_WEIGHTS)
    assert arrays["projections"].shape == (4, 3, 224, 224)
    assert (out / "deconvnet.png").stat().st_size > 10_000
    assert main(argv) == 2  # refuses to overwrite
    assert "already holds a result" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--method", "explicit"]) == 0
    explicit = vizkit.load_result(out)[1]["projections"]
    assert np.abs(explicit - arrays["projections"]).max() <= 1e-5 * np.abs(arrays["projections"]).max()


@pytest.mark.slow
def test_console_script_and_module_entry_points(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "vizkit", "list", "analyses"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "deconvnet" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "vizkit", "layers", "nosuchmodel"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("vizkit: error: unknown model 'nosuchmodel'")
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_runs_offline(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "deconvnet" / "result.json").exists()
    assert "deconvnet" in (tmp_path / "demo" / "index.html").read_text()
