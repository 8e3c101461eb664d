"""vizkit.engine.project_units: many unit-exemplar projections at once, each on its
receptive-field cut, equal to vizkit.project one unit at a time (issue 28, item 3)."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm

import vizkit
from helpers import shipped_photos
from vizkit.engine import UnitProjections, project_units
from vizkit.engine.batched import _batches
from vizkit.errors import UsageError

RULES = ["deconvnet", "guided", "gradient"]
pytestmark = pytest.mark.usefixtures("one_thread")  # many small forwards and backwards


@pytest.fixture(scope="module")
def zfnet_compact() -> tuple[torch.nn.Module, torch.Tensor]:
    model = vizkit.load_model("zfnet-compact")
    return model, vizkit.load_images(shipped_photos()[:2], model)


@pytest.fixture(scope="module")
def resnet() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = tvm.resnet18().eval()
    return model, torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def _requests(im: vizkit.Instrumented, x: torch.Tensor, layer: str, per_image: int = 4) -> list[tuple]:
    """Each image's strongest unit of a few maps (mostly active ones), random units of others,
    a repeated request and two maps of one unit (they share a cut)."""
    with torch.no_grad():
        act = im.run_capturing(x.clone(), layer)
    generator = torch.Generator().manual_seed(2)
    requests = []
    for image in range(x.shape[0]):
        for n in range(per_image):
            channel = int(torch.randint(act.shape[1], (1,), generator=generator))
            if act.dim() != 4:
                requests.append((image, channel, 0, 0))
                continue
            h, w = act.shape[-2:]
            if n % 2 == 0:  # the map's strongest unit (what top9 projects)
                flat = int(act[image, channel].flatten().argmax())
                requests.append((image, channel, flat // w, flat % w))
            else:
                row, col = (int(torch.randint(size, (1,), generator=generator)) for size in (h, w))
                requests.append((image, channel, row, col))
    requests.append(requests[0])
    image, channel, row, col = requests[1]
    requests.append((image, (channel + 1) % act.shape[1], row, col))
    return requests


def _assert_equal_to_project(im, x, layer, requests, result: UnitProjections, rule: str) -> None:
    spatial = im.run_capturing(x[:1].clone(), layer).dim() == 4
    assert len(result) == len(requests)
    for r, (image, channel, row, col) in enumerate(requests):
        one = vizkit.project(
            im, x[image : image + 1], layer, [channel], position=(row, col) if spatial else None, rule=rule
        )
        reference = one.images[0, 0]
        x0, y0, x1, y1 = result.boxes[r].tolist()
        assert result.crops[r].shape == (3, y1 - y0, x1 - x0)
        outside = reference.clone()
        outside[:, y0:y1, x0:x1] = 0
        assert float(outside.abs().max()) == 0, "the projection reaches outside the unit's receptive box"
        peak = float(reference.abs().max())
        difference = float((result.image(r) - reference).abs().max())
        assert difference <= 1e-5 * peak if peak > 0 else difference == 0, (layer, rule, r, difference, peak)
        assert float(result.values[r]) == pytest.approx(float(one.values[0, 0]), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("rule", RULES)
def test_zfnet_compact_units_equal_one_at_a_time(zfnet_compact, rule):
    model, x = zfnet_compact
    with vizkit.instrument(model) as im:
        for layer in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"]:
            requests = _requests(im, x, layer, per_image=3)
            result = project_units(im, x, layer, requests, rule=rule, chunk=4)
            _assert_equal_to_project(im, x, layer, requests, result, rule)


@pytest.mark.parametrize("rule", RULES)
def test_resnet18_units_equal_one_at_a_time(resnet, rule):
    model, x = resnet
    with vizkit.instrument(model) as im:
        for layer in ["relu", "maxpool", "layer1", "layer2.0", "layer3", "layer4"]:
            requests = _requests(im, x, layer, per_image=3)
            result = project_units(im, x, layer, requests, rule=rule, chunk=5)
            _assert_equal_to_project(im, x, layer, requests, result, rule)


def test_cuts_are_smaller_than_the_image_and_chunk_does_not_change_the_result(zfnet_compact):
    model, x = zfnet_compact
    with vizkit.instrument(model) as im:
        requests = _requests(im, x, "conv3", per_image=6)
        one = project_units(im, x, "conv3", requests, chunk=1)
        many = project_units(im, x, "conv3", requests, chunk=64)
        whole = project_units(im, x, "conv3", requests, crop=False)
    for r in range(len(requests)):
        assert torch.allclose(one.crops[r], many.crops[r], rtol=0, atol=1e-6 * float(many.crops[r].abs().max() + 1))
        assert torch.allclose(whole.crops[r], many.crops[r], rtol=0, atol=1e-6 * float(many.crops[r].abs().max() + 1))
    # a conv3 unit sees at most 75 of the 144 pixels a side: its projection is kept to that
    assert max(max(c.shape[1:]) for c in many.crops) <= 75


def test_batches_stay_within_chunk_and_never_pad():
    # image 0 carries 10 units at one cut, images 1-4 one each: the busy cut is split to fit a
    # batch, and every batch's cuts carry the same number of units (no seed is padding)
    table = torch.tensor([[0, c, 0, 0] for c in range(10)] + [[i, 0, 0, 0] for i in range(1, 5)])
    windows = [(0, 0, 8, 8)] * len(table)
    for chunk in (1, 3, 4, 16):
        batches = _batches(table, windows, chunk)
        seen = sorted(r for batch in batches for _image, members in batch for r in members)
        assert seen == list(range(len(table)))
        for batch in batches:
            counts = {len(members) for _image, members in batch}
            assert len(counts) == 1
            assert counts.pop() * len(batch) <= chunk


def test_bad_requests_are_refused(zfnet_compact):
    model, x = zfnet_compact
    with vizkit.instrument(model) as im:
        with pytest.raises(UsageError, match="channel 999"):
            project_units(im, x, "conv3", [(0, 999, 0, 0)])
        with pytest.raises(UsageError, match="outside layer"):
            project_units(im, x, "conv3", [(0, 1, 8, 0)])
        with pytest.raises(UsageError, match="image index"):
            project_units(im, x, "conv3", [(2, 1, 0, 0)])
        assert len(project_units(im, x, "conv3", [])) == 0
