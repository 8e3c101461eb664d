"""Invariance (paper §5, Fig. 5): the identity step, rotation and translation against hand
computations on a model that passes its input through, option checks, the real SqueezeNet."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as tf

import vizkit
from helpers import SAMPLES, assert_no_hooks, needs_shared
from vizkit.app.cli import main

SIZE = 32


def pass_through() -> nn.Module:
    """``copy`` outputs its input unchanged (a 1x1 identity convolution); a tiny head gives logits."""
    copy = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        copy.weight.copy_(torch.eye(3)[:, :, None, None])
        copy.bias.zero_()
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(copy=copy, pool=nn.AdaptiveAvgPool2d(2), flat=nn.Flatten(), fc=nn.Linear(12, 4)))
    model.vizkit_info = vizkit.models.ModelInfo(preprocess=vizkit.Preprocess(resize=SIZE, crop=SIZE))
    return model.eval()


@pytest.fixture
def square_image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "square.png"
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    return path


def _resized(path, preprocess: vizkit.Preprocess) -> torch.Tensor:
    picture = vizkit.load_image(path)
    return tf.to_dtype(tf.to_image(tf.resize(picture, [preprocess.resize], antialias=True)), torch.float32, scale=True)


def _normalise(image: torch.Tensor, preprocess: vizkit.Preprocess) -> torch.Tensor:
    return tf.normalize(image, list(preprocess.mean), list(preprocess.std))


def test_identity_step_is_exactly_zero_and_matches_the_plain_forward(bundled_model, photo_path):
    result = vizkit.run(
        "invariance",
        bundled_model,
        images=[photo_path],
        layers=["conv1", "fc7"],
        steps=4,
        range_translate="-30,30",
        range_scale="1.1,1.5",
    )
    assert_no_hooks(bundled_model)
    with torch.no_grad():
        plain = bundled_model(vizkit.load_images([photo_path], vizkit.data.preprocess_for(bundled_model))).softmax(1)[0]
    target = result["target"][0]
    assert target == int(plain.argmax())  # auto = the model's top-1 on the original
    for t, identity in (("translate", 0.0), ("scale", 1.0), ("rotate", 0.0)):
        steps = list(result.arrays[f"{t}_steps"])
        assert identity in steps  # added where the grid misses it (scale 1.1..1.5, translate -30,-10,10,30)
        k = steps.index(identity)
        for layer in ("conv1", "fc7"):
            distances = result.arrays[f"{t}_distance_{layer}"]
            others = [s for s, value in enumerate(steps) if s != k and not (t == "rotate" and value == 360)]
            assert distances[0, k] == 0.0 and (distances[0, others] > 0).all()
        assert result.arrays[f"{t}_prob"][0, k] == pytest.approx(float(plain[target]), abs=1e-5)
        assert result.arrays[f"{t}_top1"][0, k] == target
    assert len(result.arrays["translate_steps"]) == 5 and len(result.arrays["scale_steps"]) == 5


def test_a_90_degree_rotation_matches_rot90(square_image):
    model = pass_through()
    result = vizkit.run("invariance", model, images=[square_image], layers=["copy"], transforms="rotate", steps=5)
    assert list(result.arrays["rotate_steps"]) == [0, 90, 180, 270, 360]
    preprocess = vizkit.data.preprocess_for(model)
    resized = _resized(square_image, preprocess)
    original = _normalise(resized, preprocess)
    for k, step in ((1, 90), (2, 180), (3, 270)):  # counter-clockwise, as torch.rot90 turns H towards W
        turned = _normalise(torch.rot90(resized, k, dims=(-2, -1)), preprocess)
        expected = float((turned - original).norm())
        got = float(result.arrays["rotate_distance_copy"][0, [0, 90, 180, 270, 360].index(step)])
        assert got == pytest.approx(expected, rel=1e-4), step
    assert result.arrays["rotate_distance_copy"][0, -1] < 1e-3 * expected  # a full turn comes back


@pytest.mark.parametrize("shift", [3, -5])
def test_translating_by_k_pixels_is_roll_plus_the_mean_fill(square_image, shift):
    model = pass_through()
    low, high = sorted((shift, -shift))
    result = vizkit.run(
        "invariance",
        model,
        images=[square_image],
        layers=["copy"],
        transforms="translate",
        steps=3,
        range_translate=f"{low},{high}",
        normalize="norm",
    )
    preprocess = vizkit.data.preprocess_for(model)
    resized = _resized(square_image, preprocess)
    moved = torch.roll(resized, shift, dims=1)
    fill = torch.tensor(preprocess.mean)[:, None, None]
    if shift > 0:
        moved[:, :shift] = fill  # positive = down: the top rows are uncovered
    else:
        moved[:, shift:] = fill
    original = _normalise(resized, preprocess)
    expected = float((_normalise(moved, preprocess) - original).norm() / original.norm())
    steps = list(result.arrays["translate_steps"])
    assert result.arrays["translate_distance_copy"][0, steps.index(shift)] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--steps", "1"], "--steps must be at least 2"),
        (["--transforms", "shear"], "--transforms takes translate, scale, rotate"),
        (["--range-translate", "10,-10"], "--range-translate needs LOW < HIGH"),
        (["--range-scale", "one,two"], "--range-scale expects two comma-separated numbers"),
        (["--range-scale", "0,2"], "--range-scale must be above 0"),
        (["--target", "0", "--target", "1"], "one --target for all images or one per image (1)"),
        (["--layers", "conv9"], "unknown layer 'conv9'"),
        (["--transforms", "translate", "--range-translate", "0.2,0.4"], "gives no step but the identity"),
        (["--range-translate", "-0.4,0.4"], "gives no step but the identity"),
    ],
)
def test_bad_options_are_one_line_errors(extra, message, photo_path, tmp_path, capsys, recorded_models):
    argv = [
        "run",
        "invariance",
        "--model",
        "zfnet-compact",
        "--image",
        str(photo_path),
        "--layers",
        "conv1",
        "--out",
        str(tmp_path / "o"),
        *extra,
    ]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o" / "result.json").exists()
    for model in recorded_models:
        assert_no_hooks(model)


def test_cli_writes_curves_bands_and_arrays(photo_path, tmp_path):
    out = tmp_path / "inv"
    assert (
        main(
            [
                "run",
                "invariance",
                "--model",
                "zfnet-compact",
                "--image",
                str(photo_path),
                str(photo_path),
                "--layers",
                "conv1,fc7",
                "--steps",
                "4",
                "--target",
                "golf ball",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    document, arrays = vizkit.load_result(out)
    assert document["target"] == [8, 8] and document["target_name"] == ["golf ball", "golf ball"]
    for t in ("translate", "scale", "rotate"):
        assert arrays[f"{t}_distance_fc7"].shape == (2, len(arrays[f"{t}_steps"]))
        assert arrays[f"{t}_prob"].shape == arrays[f"{t}_top1"].shape == (2, len(arrays[f"{t}_steps"]))
        assert set(document["summary"][t]["layers"]) == {"conv1", "fc7"}
    assert np.array_equal(arrays["rotate_distance_conv1"][0], arrays["rotate_distance_conv1"][1])
    for name in ("invariance.png", "invariance_top1.png"):
        assert (out / name).stat().st_size > 10_000


def test_five_paper_images_on_the_real_squeezenet(squeezenet):
    needs_shared(SAMPLES)
    images = [sorted(SAMPLES.glob(f"*{name}*"))[0] for name in ("lawn_mower", "Shih-Tzu")]
    result = vizkit.run(
        "invariance",
        squeezenet,
        images=images,
        layers=["features.1", "features.12"],
        steps=25,
        transforms="translate",
        target=("621", "155"),
    )
    assert_no_hooks(squeezenet)
    assert result["target_name"] == ["lawn mower", "Shih-Tzu"]
    summary = result["summary"]["translate"]["layers"]
    # the paper's first finding: a small shift moves layer 1 relatively more than the last layer
    assert summary["features.1"]["first_step_fraction"] > summary["features.12"]["first_step_fraction"]


def test_summary_keeps_small_numbers_to_six_significant_digits():
    """Relative distances of a few 1e-7 were rounded to 6 decimals, so max_distance read 0.0
    beside a first_step_fraction computed from the same (nonzero) distances."""
    from vizkit_plugins.invariance.summary import _mean

    assert _mean([3e-7, 5e-7]) == 4e-7
    assert _mean([1234.56789]) == 1234.57 and _mean([0.123456789]) == 0.123457
    assert _mean([None, float("nan")]) is None


def test_one_transform_figure_keeps_the_suptitle_clear_of_the_panel_titles(square_image):
    """A one-row figure is 3.4 in tall: a top margin of 8% of it put the suptitle over the titles."""
    model = pass_through()
    result = vizkit.run("invariance", model, images=[square_image], layers=["copy"], transforms="scale", steps=3)
    figure = result.figures["invariance"]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    suptitle = figure._suptitle.get_window_extent(renderer)
    for ax in figure.axes:
        for title in (ax.title, ax._left_title):
            if title.get_text():
                assert title.get_window_extent(renderer).y1 < suptitle.y0, title.get_text()
