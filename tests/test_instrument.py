"""Instrumentation on real architectures: activations, switches, naming, hook removal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

import vizkit
from helpers import assert_no_hooks
from vizkit import UnknownLayerError

MODELS = {
    # name: (input size, expected max-pool layer names)
    "alexnet": (224, ["features.2", "features.5", "features.12"]),
    "vgg11": (224, ["features.2", "features.5", "features.10", "features.15", "features.20"]),
    "resnet18": (224, ["maxpool"]),
    "squeezenet1_0": (224, ["features.2", "features.6", "features.11"]),
    "googlenet": (224, None),
    "inception_v3": (299, None),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    return tvm.get_model(name, weights=None, **kwargs).eval()


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "inception_v3" else n for n in MODELS]
)
def test_records_activations_and_switches(name):
    size, pools = MODELS[name]
    model = build(name)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        reference = model(x)
        with vizkit.instrument(model) as im:
            output = im(x)
            assert torch.allclose(output, reference, atol=1e-5), "instrumenting changed the output"
            if pools is not None:
                assert im.pools == pools
            assert im.pools, "no max-pool switches recorded"
            for pool in im.pools:
                switches = im.pool_switches(pool)
                out = im.activation(pool)
                assert switches.indices.shape == out.shape
                assert switches.indices.dtype == torch.int64
                assert int(switches.indices.max()) < switches.input_shape[-1] * switches.input_shape[-2]
            assert len(im.layers) == len(set(im.layers))
    assert_no_hooks(model)


def test_switches_point_at_the_maxima():
    model = build("squeezenet1_0")
    x = torch.randn(1, 3, 224, 224)
    with vizkit.instrument(model) as im, torch.no_grad():
        im(x)
        for pool, below in [("features.2", "features.1"), ("features.6", "features.5"), ("features.11", "features.10")]:
            source = im.activation(below).flatten(2)
            idx = im.switches(pool).flatten(2)
            assert torch.equal(source.gather(2, idx), im.activation(pool).flatten(2))


def test_functional_pools_of_inception_are_layers():
    model = build("inception_v3")
    x = torch.randn(1, 3, 299, 299)
    with vizkit.instrument(model) as im, torch.no_grad():
        im(x)
        assert "Mixed_6a.max_pool2d" in im.pools and "Mixed_7a.max_pool2d" in im.pools
        info = im.info("Mixed_6a.max_pool2d")
        assert info.functional and info.type == "F.max_pool2d" and info.has_switches
        # the functional pool's input is Mixed_5d's output: check the switches against it
        source = im.activation("Mixed_5d").flatten(2)
        idx = im.switches("Mixed_6a.max_pool2d").flatten(2)
        assert torch.equal(source.gather(2, idx), im.activation("Mixed_6a.max_pool2d").flatten(2))
        assert "Mixed_5b.avg_pool2d" in im.layers  # functional avg pool too


def test_functional_relus_of_googlenet_are_layers():
    model = build("googlenet")
    with vizkit.instrument(model) as im, torch.no_grad():
        im(torch.randn(1, 3, 224, 224))
        relu = im.activation("conv1.relu")
        assert relu.min() >= 0
        assert torch.equal(relu, im.activation("conv1.bn").clamp(min=0))


class ReusedReLU(nn.Module):
    """One ReLU module called three times, and an in-place functional ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        a = self.relu(self.conv1(x))
        b = self.relu(self.conv2(a))
        c = self.relu(b - 0.1)
        c = F.max_pool2d(c, 2)
        return self.fc(F.relu(c, inplace=True).mean((2, 3)))


def test_reused_module_gets_one_layer_per_call():
    torch.manual_seed(0)
    model = ReusedReLU().eval()
    x = torch.randn(1, 3, 8, 8)
    with vizkit.instrument(model) as im, torch.no_grad():
        im(x)
        # three calls of the module, then the root's functional F.relu (same base name: #3)
        assert [n for n in im.layers if n.startswith("relu")] == ["relu", "relu#1", "relu#2", "relu#3"]
        assert im.info("relu#3").functional and not im.info("relu#2").functional
        conv1 = im.activation("conv1")
        assert conv1.min() < 0, "in-place ReLU overwrote the recorded conv output (not cloned)"
        assert torch.equal(im.activation("relu"), conv1.clamp(min=0))
        assert torch.equal(im.activation("relu#1"), im.activation("conv2").clamp(min=0))
        assert torch.equal(im.activation("relu#2"), (im.activation("relu#1") - 0.1).clamp(min=0))
        assert im.pools == ["max_pool2d"]
    assert_no_hooks(model)


def test_in_place_relu_of_alexnet_keeps_conv_output():
    model = build("alexnet")
    with vizkit.instrument(model) as im, torch.no_grad():
        im(torch.randn(1, 3, 224, 224))
        assert im.activation("features.0").min() < 0
        assert torch.equal(im.activation("features.1"), im.activation("features.0").clamp(min=0))


def test_layer_selection_and_early_stop():
    model = build("alexnet")
    x = torch.randn(1, 3, 224, 224)
    with vizkit.instrument(model, layers=["features.3"]) as im, torch.no_grad():
        im(x)
        assert im.activation("features.3").shape == (1, 192, 27, 27)
        with pytest.raises(vizkit.VizkitError, match="not recorded"):
            im.activation("features.4")
        early = im(x, until="features.3")
        assert im.output is None and early.shape == (1, 192, 27, 27)
        assert "classifier.6" not in im.layers


def test_unknown_layer_lists_valid_names():
    model = build("alexnet")
    with vizkit.instrument(model) as im, torch.no_grad():
        im(torch.randn(1, 3, 224, 224))
        with pytest.raises(UnknownLayerError) as error:
            im.activation("features.99")
        message = str(error.value)
        assert "features.99" in message and "features.12" in message and "classifier.6" in message


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "inception_v3"])
def test_hooks_removed_when_forward_raises(name):
    model = build(name)
    with pytest.raises(RuntimeError), vizkit.instrument(model) as im:
        im(torch.randn(1, 5, 64, 64))  # wrong channel count: the forward raises
    assert_no_hooks(model)
    with torch.no_grad():  # and the model still runs normally
        model(torch.randn(1, 3, 299 if name == "inception_v3" else 224, 299 if name == "inception_v3" else 224))


def test_hooks_removed_on_error_inside_block():
    model = build("squeezenet1_0")
    with pytest.raises(ZeroDivisionError), vizkit.instrument(model) as im:
        im(torch.randn(1, 3, 64, 64))
        raise ZeroDivisionError
    assert_no_hooks(model)


def test_calling_the_model_directly_inside_the_block_records_too():
    model = build("squeezenet1_0")
    with vizkit.instrument(model) as im, torch.no_grad():
        model(torch.randn(1, 3, 96, 96))
        assert im.pools == ["features.2", "features.6", "features.11"]
    assert_no_hooks(model)


def test_max_pool2d_with_indices_called_directly_returns_the_pair():
    # F.max_pool2d_with_indices returns (output, indices) whatever return_indices says; a lone
    # tensor would unpack along the batch: output = image 0, indices = image 1
    class Unpacks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            pooled, indices = F.max_pool2d_with_indices(self.conv(x), 2)
            return pooled + 0 * indices

    torch.manual_seed(0)
    model = Unpacks().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        with vizkit.instrument(model) as im:
            got = im(x)
            assert im.pools == ["max_pool2d"]  # its switches are recorded
    assert torch.equal(got, expected)
    assert_no_hooks(model)


def test_instrumented_models_closed_out_of_order():
    first, second = build("squeezenet1_0"), build("squeezenet1_0")
    a = vizkit.instrument(first).__enter__()
    b = vizkit.instrument(second).__enter__()
    a.__exit__(None, None, None)  # closes a's mode, not b's
    with torch.no_grad():
        b(torch.randn(1, 3, 96, 96))
    assert b.pools == ["features.2", "features.6", "features.11"]
    b.__exit__(None, None, None)
    assert_no_hooks(first)
    assert_no_hooks(second)


class _InPlaceAfterLayer(nn.Module):
    """conv -> ReLU(inplace) (AlexNet, VGG) and conv -> bn -> out += skip (ResNet's bn2)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True)
        self.conv2, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.relu(self.conv1(x))
        out = self.bn(self.conv2(h))
        out += h
        return self.fc(out.mean((2, 3)))


@pytest.mark.parametrize("layer", ["conv1", "bn"])
def test_incremental_occlusion_of_a_layer_followed_by_an_in_place_op(layer):
    from vizkit.engine.incremental import IncrementalOcclusion

    model = _InPlaceAfterLayer().eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    corners, size, fill = [(0, 0), (4, 6), (9, 9)], 3, torch.zeros(3)
    with vizkit.instrument(model) as im, torch.no_grad():
        logits, act = IncrementalOcclusion(im, x, layer).evaluate(corners, size, fill)
        for i, (y0, x0) in enumerate(corners):
            occluded = x.clone()
            occluded[:, :, y0 : y0 + size, x0 : x0 + size] = 0
            assert torch.allclose(logits[i], im(occluded)[0], atol=1e-5)
            assert torch.allclose(act[i], im.activation(layer)[0], atol=1e-5)  # not the post-ReLU/post-add
    assert_no_hooks(model)


class _Forgiving(nn.Module):
    """A model whose forward catches every Exception around its first block (a fallback path)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.second = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())
        self.head = nn.Linear(4, 2)
        self.after_first = 0

    def forward(self, x):
        try:
            h = self.first(x)
        except Exception:  # a fallback that must not swallow the recorder's early stop
            h = torch.zeros(x.shape[0], 4, x.shape[2] - 2, x.shape[3] - 2)
        self.after_first += 1
        return self.head(self.second(h).mean(dim=(2, 3)))


def test_a_forward_that_catches_every_exception_still_stops_at_the_layer():
    model = _Forgiving().eval()
    x = torch.rand(1, 3, 12, 12)
    with vizkit.instrument(model) as im:
        stopped = im(x, until="first")
        assert model.after_first == 0  # the forward ended at the layer, not after a swallowed stop
        assert torch.equal(stopped, model.first(x))
        projection = vizkit.project(im, x, "first", [0])
        assert torch.isfinite(projection.images).all() and model.after_first == 0
    assert_no_hooks(model)
