"""vizkit.toolkit.project_winners on vizkit.engine.project_units (issue 28, item 3): the same
arrays as its previous implementation (vizkit.project per unit at full size, then crop_to_box),
in bounded runs however many maps share an image."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vizkit
import vizkit.toolkit.winners as winners
from helpers import shipped_photos
from vizkit.engine import receptive_boxes
from vizkit.engine.deconv import project
from vizkit.engine.rules import resolve_rule
from vizkit.toolkit import RunningTopK, project_winners

pytestmark = pytest.mark.usefixtures("one_thread")  # many small forwards and backwards


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, vizkit.data.ImageList]:
    model = vizkit.load_model("zfnet-compact")
    data = vizkit.data.ImageList(shipped_photos(), preprocess=vizkit.data.preprocess_for(model))
    return model, data


def crop_to_box(image: torch.Tensor, box: list[int], size: int, fill: float) -> torch.Tensor:
    """The previous vizkit.toolkit.crop_to_box, as it was: the reference's own."""
    x0, y0, x1, y1 = box
    height, width = image.shape[-2:]
    crop = image[:, y0:y1, x0:x1]
    side = max(y1 - y0, x1 - x0)
    pad_y, pad_x = side - (y1 - y0), side - (x1 - x0)
    top = pad_y if y0 == 0 and y1 < height else (0 if y1 == height and y0 > 0 else pad_y // 2)
    left = pad_x if x0 == 0 and x1 < width else (0 if x1 == width and x0 > 0 else pad_x // 2)
    crop = F.pad(crop, (left, pad_x - left, top, pad_y - top), value=fill)
    return F.interpolate(crop[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def reference(im, dataset, preprocess, layer, channels, state, boxes, patch_size, rule="deconvnet"):
    """The previous project_winners: every winning unit projected by vizkit.project at full size
    (here one unit at a time), cut with crop_to_box; the projections are kept in float32."""
    maps, k = state.values.shape[0], state.filled()
    width = boxes.shape[1]
    by_image: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for m in range(maps):
        for j in range(k):
            by_image[int(state.images[m, j])].append((m, j))
    out = {
        "projections": np.zeros((maps, k, 3, patch_size, patch_size), dtype=np.float32),
        "projection_scale": np.zeros((maps, k), dtype=np.float32),
        "patches": np.zeros((maps, k, patch_size, patch_size, 3), dtype=np.uint8),
        "recomputed": np.zeros((maps, k), dtype=np.float32),
        "position": np.zeros((maps, k, 2), dtype=np.int64),
    }
    with torch.no_grad():
        spatial = im.run_capturing(dataset[0][0][None], layer).dim() == 4
    for image in sorted(by_image):
        x = dataset[image][0][None]
        shown = preprocess.denormalize(x)[0]
        for m, j in by_image[image]:
            flat = int(state.positions[m, j])
            row, col = flat // width, flat % width
            one = project(im, x, layer, [channels[m]], position=(row, col) if spatial else None, rule=rule)
            box = boxes[row, col].tolist()
            signal = crop_to_box(one.images[0, 0], box, patch_size, 0.0)
            scale = float(signal.abs().max()) or 1.0
            out["projections"][m, j] = (signal / scale).numpy()
            out["projection_scale"][m, j] = scale
            patch = crop_to_box(shown, box, patch_size, 0.5)
            out["patches"][m, j] = (patch.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            out["recomputed"][m, j] = float(one.values[0, 0])
            out["position"][m, j] = (row, col)
    return out


def assert_same(new: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert new["projections"].dtype == np.float16 and new["patches"].dtype == np.uint8
    assert new["projections"].shape == ref["projections"].shape
    # each float16 value is the float32 one rounded: within half a float16 step of the reference
    # (at its magnitude) plus the 1e-5 of the peak that the two computations may differ by
    step = np.spacing(np.abs(ref["projections"]).astype(np.float16)).astype(np.float32)
    error = np.abs(new["projections"].astype(np.float32) - ref["projections"])
    assert (error <= step / 2 + 1e-5).all(), float((error - step / 2).max())
    np.testing.assert_allclose(new["projection_scale"], ref["projection_scale"], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(new["patches"], ref["patches"])
    np.testing.assert_allclose(new["recomputed"], ref["recomputed"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new["position"], ref["position"])
    # the scaled signals agree to 1e-5 of their peak
    signal_new = new["projections"].astype(np.float32) * new["projection_scale"][..., None, None, None]
    signal_ref = ref["projections"] * ref["projection_scale"][..., None, None, None]
    peak = ref["projection_scale"][..., None, None, None]
    assert (np.abs(signal_new - signal_ref) <= (2**-12 + 1e-5) * peak).all()


def scanned_state(im, dataset, layer: str, channels: list[int], k: int) -> RunningTopK:
    """The top-k of ``channels`` over ``dataset``, as top9's scan computes it."""
    state = RunningTopK.empty(len(channels), k)
    with torch.no_grad():
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])
        act = im.run_capturing(x, layer)
    state.update(act[:, channels], torch.arange(len(dataset)))
    return state


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_conv_layer_equals_the_previous_implementation(setup, rule):
    model, data = setup
    layer, channels, k = "conv3", list(range(0, 40, 2)), 2
    with vizkit.instrument(model) as im:
        state = scanned_state(im, data, layer, channels, k)
        boxes = receptive_boxes(im, data[0][0][None], layer)
        h, w = boxes.shape[:2]
        # units whose receptive box the image border clips (corners, edges) and one inside
        state.positions[0, 0], state.positions[1, 1] = 0, h * w - 1
        state.positions[2, 0], state.positions[3, 1] = (h // 2) * w, w - 1
        rows, cols = state.positions // w, state.positions % w
        chosen = boxes[rows, cols]
        sides = torch.maximum(chosen[..., 2] - chosen[..., 0], chosen[..., 3] - chosen[..., 1])
        assert bool((chosen[..., 2] - chosen[..., 0] < sides).any()) and bool(
            (chosen[..., 3] - chosen[..., 1] < sides).any()
        ), "no unit's box is clipped by the border on each axis"
        assert max(np.bincount(state.images.flatten().numpy())) > 5, "maps should share images"
        ref = reference(im, data, data.preprocess, layer, channels, state, boxes, 24, rule)
        new = project_winners(im, data, data.preprocess, layer, channels, state, boxes, 24, rule, batch_size=2)
    assert_same(new, ref)


def test_fully_connected_layer_and_a_rule_object(setup):
    model, data = setup
    layer, channels, k = "fc6", [0, 5, 7, 100, 511], 3
    with vizkit.instrument(model) as im:
        state = scanned_state(im, data, layer, channels, k)
        assert int(state.positions.abs().max()) == 0  # a layer without maps: position 0
        boxes = receptive_boxes(im, data[0][0][None], layer)
        assert boxes.shape == (1, 1, 4)
        ref = reference(im, data, data.preprocess, layer, channels, state, boxes, 16, "gradient")
        rule = resolve_rule("gradient")
        new = project_winners(im, data, data.preprocess, layer, channels, state, boxes, 16, rule)
    assert_same(new, ref)


def test_runs_stay_bounded_and_do_not_change_the_result(setup, monkeypatch):
    model, data = setup
    layer, channels, k = "conv2", list(range(48)), 3
    calls: list[tuple[int, int]] = []
    original = winners.project_units

    def spy(im, x, layer, requests, **options):
        calls.append((x.shape[0], len(requests)))
        return original(im, x, layer, requests, **options)

    with vizkit.instrument(model) as im:
        state = scanned_state(im, data, layer, channels, k)
        boxes = receptive_boxes(im, data[0][0][None], layer)
        whole = project_winners(im, data, data.preprocess, layer, channels, state, boxes, 20)
        side = int((boxes[..., 2] - boxes[..., 0]).max())
        monkeypatch.setattr(winners, "_CROP_BYTES", 10 * 3 * 4 * side * side)  # about 10 crops a run
        monkeypatch.setattr(winners, "project_units", spy)
        monkeypatch.setattr(winners, "_IMAGES_PER_CALL", 1)  # one image per round: batch_size=1 decides
        bounded = project_winners(im, data, data.preprocess, layer, channels, state, boxes, 20, batch_size=1)
    assert len(calls) >= len(channels) * k // 10
    assert all(images == 1 and 1 <= count <= 10 * 4 for images, count in calls), calls  # clipped boxes: more
    assert sum(count for _, count in calls) == len(channels) * k
    for key in whole:
        np.testing.assert_array_equal(whole[key], bounded[key], err_msg=key)
