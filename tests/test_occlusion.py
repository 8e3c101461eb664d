"""Occlusion: exact incremental == batched == one position at a time; equal to captum's Occlusion."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision.models as tvm

import vizkit
from helpers import LABELS, SQUEEZENET_WEIGHTS, assert_no_hooks, occlusion_as_captum, sample
from vizkit.app.cli import main
from vizkit.data import parse_fill
from vizkit.models.zfnet import zfnet
from vizkit_plugins.occlusion.grid import OcclusionGrid, occluded_batch
from vizkit_plugins.occlusion.maps import occlusion_maps


def reference_maps(model, x, layer, feature_map, target, grid, fill):
    """One occluded image per forward, through a plain forward hook."""
    module = dict(model.named_modules())[layer]
    captured = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.update(a=o.detach()))
    activity, probability, top = [], [], []
    try:
        with torch.no_grad():
            for corner in grid.corners():
                p = model(occluded_batch(x[0], [corner], grid.size, fill)).softmax(1)[0]
                activity.append(float(captured["a"][0, feature_map].sum()))
                probability.append(float(p[target]))
                top.append(int(p.argmax()))
    finally:
        handle.remove()
    shape = (grid.rows, grid.cols)
    return np.array(activity).reshape(shape), np.array(probability).reshape(shape), np.array(top).reshape(shape)


MODELS = {
    "squeezenet-real": lambda request: request.getfixturevalue("squeezenet"),  # needs ../shared
    "squeezenet-random": lambda request: tvm.squeezenet1_0().eval(),
    "zfnet-compact-bundled": lambda request: request.getfixturevalue("bundled_model"),
    "zfnet": lambda request: zfnet().eval(),
    "resnet18": lambda request: tvm.resnet18().eval(),
    "googlenet": lambda request: tvm.googlenet(init_weights=True).eval(),
}


@pytest.mark.parametrize(
    "name,layer,target",
    [
        ("squeezenet-real", "features.12", 259),
        ("squeezenet-random", "features.12", 259),
        ("zfnet-compact-bundled", "conv5", 0),
        ("zfnet", "conv5", 259),
        pytest.param("resnet18", "layer4", 259, marks=pytest.mark.slow),
        pytest.param("googlenet", "inception4e", 259, marks=pytest.mark.slow),
    ],
)
def test_exact_equals_batched_equals_one_at_a_time(name, layer, target, request, photo_path):
    torch.manual_seed(0)
    model = MODELS[name](request)
    preprocess = vizkit.data.preprocess_for(model)
    image = request.getfixturevalue("dog_image") if name.endswith("-real") else photo_path
    x = vizkit.load_images([image], preprocess)
    size = x.shape[-1]
    grid = OcclusionGrid(size, size, 48, (size - 48) // 4)  # 5 x 5 positions, some at the borders
    fill = torch.zeros(3)
    with vizkit.instrument(model) as im:
        im(x)
        feature_map = int(im.activation(layer)[0].flatten(1).amax(1).argmax())
        maps = {
            mode: occlusion_maps(
                im, x, layer, torch.tensor([feature_map]), torch.tensor([target]), grid, fill, mode=mode, batch_size=7
            )
            for mode in ("exact", "batched")
        }
    assert_no_hooks(model)
    activity, probability, top = reference_maps(model, x, layer, feature_map, target, grid, fill)
    for mode, got in maps.items():
        scale = max(1.0, float(np.abs(activity).max()))
        assert np.abs(got["feature_activity"][0] - activity).max() <= 1e-4 * scale, mode
        assert np.abs(got["true_class_prob"][0] - probability).max() <= 1e-4, mode
        assert np.array_equal(got["top_label"][0], top), mode


@pytest.mark.slow
def test_probability_map_equals_captum_occlusion(squeezenet, dog_tensor):
    """captum's attribution of a pixel is the mean, over the windows covering it, of
    p(unoccluded) - p(occluded by that window); rebuild it from vizkit's probability map."""
    from captum.attr import Occlusion

    size, stride, target = 48, 16, 207
    ours = occlusion_as_captum(squeezenet, dog_tensor, "features.12", target, OcclusionGrid(224, 224, size, stride))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Occlusion(lambda x: squeezenet(x).softmax(1)).attribute(
            dog_tensor,
            sliding_window_shapes=(3, size, size),
            strides=(3, stride, stride),
            target=target,
            baselines=0,
            perturbations_per_eval=32,
        )
    assert np.abs(theirs[0, 0].numpy() - ours).max() <= 1e-5
    assert np.allclose(theirs[0, 0].numpy(), theirs[0, 2].numpy())  # the same for every colour channel


def test_analysis_from_python_and_cli(squeezenet, tmp_path, capsys):
    pomeranian, wheel = sample("Pomeranian"), sample("car_wheel")
    result = vizkit.run("occlusion", squeezenet, images=[pomeranian, wheel], target="259", size=48, stride=44)
    assert_no_hooks(squeezenet)
    assert result["target"] == [259, 259] and result["target_name"] == ["Pomeranian", "Pomeranian"]
    assert result["layer"] == "features.12" and result["positions"] == 25
    for key in ("feature_activity", "true_class_prob", "top_label"):
        assert result.arrays[key].shape == (2, 5, 5)
    assert result.arrays["centers_y"].tolist() == [23.5, 67.5, 111.5, 155.5, 199.5]
    assert set(result.figures) == {"occlusion_0", "occlusion_1"}
    assert all(str(label) in result["labels_seen"] for label in np.unique(result.arrays["top_label"]))
    out = tmp_path / "occ"
    argv = [
        "run",
        "occlusion",
        "--model",
        "torchvision:squeezenet1_0",
        "--weights",
        str(SQUEEZENET_WEIGHTS),
        "--labels",
        str(LABELS),
        "--image",
        str(wheel),
        "--stride",
        "44",
        "--fill",
        "zero",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    document, arrays = vizkit.load_result(out)
    assert document["target_name"] == ["car wheel"] and arrays["true_class_prob"].shape == (1, 5, 5)
    assert (out / "occlusion.png").stat().st_size > 20_000


def test_bad_values_and_failing_runs_leave_no_hooks(squeezenet, dog_image):
    with pytest.raises(vizkit.UsageError, match="--fill"):
        vizkit.run("occlusion", squeezenet, images=[dog_image], fill="grey")
    with pytest.raises(vizkit.UsageError, match="--size"):
        vizkit.run("occlusion", squeezenet, images=[dog_image], size=500)
    with pytest.raises(vizkit.UsageError, match="unknown target class"):
        vizkit.run("occlusion", squeezenet, images=[dog_image], target="unicorn")
    with pytest.raises(vizkit.VizkitError, match="unknown layer"):
        vizkit.run("occlusion", squeezenet, images=[dog_image], layer="features.99")
    assert_no_hooks(squeezenet)


def test_fill_colours():
    pre = vizkit.Preprocess()
    assert torch.equal(parse_fill("mean", pre), torch.zeros(3))
    black = parse_fill("zero", pre)
    assert torch.allclose(pre.denormalize(black.reshape(3, 1, 1)).flatten(), torch.zeros(3), atol=1e-6)
    grey = parse_fill("128,128,128", pre)
    assert torch.allclose(pre.denormalize(grey.reshape(3, 1, 1)).flatten(), torch.full((3,), 128 / 255), atol=1e-6)


def test_a_single_position_cell_covers_the_occluder_not_a_stride_wide_sliver():
    """With one position along an axis (occluder as large as the image, or a stride past its
    edge) the overlay cell spans the occluder: a stride of 1 drew a 1-pixel dot, so the
    activity, probability and label panels of the figure looked blank."""
    whole = OcclusionGrid(144, 144, 144, 1)
    assert (whole.rows, whole.cols) == (1, 1)
    assert whole.extent() == (-0.5, 143.5, 143.5, -0.5)  # the whole image, in imshow's pixel edges
    assert OcclusionGrid(144, 144, 1, 4096).extent() == (-0.5, 0.5, 0.5, -0.5)  # the 1-px occluder
    mixed = OcclusionGrid(64, 144, 16, 100)  # one row of two columns
    assert (mixed.rows, mixed.cols) == (1, 2)
    left, right, bottom, top = mixed.extent()
    assert (top, bottom) == (-0.5, 15.5) and (left, right) == (7.5 - 50, 107.5 + 50)
    # several positions: cells a stride wide, centred on the occluders, tiling the image's edges
    assert OcclusionGrid(144, 144, 48, 48).extent() == (-0.5, 143.5, 143.5, -0.5)
