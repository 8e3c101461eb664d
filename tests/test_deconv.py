"""The deconvnet projection: exact values on hand-weighted nets, both paths agree, captum agrees."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

import vizkit
from helpers import assert_no_hooks, relative_error, tiny_net
from vizkit.app.cli import main
from vizkit.engine.deconv import project
from vizkit.engine.ops import UnsupportedOpError
from vizkit.engine.rules import BUILTIN_RULES
from vizkit.models.zfnet import zfnet


def overlapping_pool_net() -> nn.Module:
    """1x1 conv (weight 2) -> ReLU -> 2x2 max-pool with stride 1 (overlapping windows)."""
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(2.0)
    return nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU(), pool=nn.MaxPool2d(2, stride=1))).eval()


PEAK = torch.tensor([[[[1.0, 2, 1], [2, 5, 2], [1, 2, 1]]]])  # every pool window's max is the centre


@pytest.mark.parametrize("method", ["autograd", "explicit"])
def test_shared_maximum_contributions_add(method):
    # conv -> [[2,4,2],[4,10,4],[2,4,2]]; pool -> [[10,10],[10,10]], all four switches at the centre.
    # Whole map down: unpool adds 4 x 10 = 40 at the centre, rectify, transposed 1x1 conv (x2) = 80.
    model = overlapping_pool_net()
    with vizkit.instrument(model) as im:
        im(PEAK)
        whole = project(im, PEAK, "pool", [0], target="map", method=method)
        strongest = project(im, PEAK, "pool", [0], method=method)
    expected = torch.zeros(1, 1, 3, 3)
    expected[0, 0, 1, 1] = 80.0
    assert torch.equal(whole.images[0, 0], expected[0])
    expected[0, 0, 1, 1] = 20.0  # one activation (the first maximum, at (0, 0)): 10 x 2
    assert torch.equal(strongest.images[0, 0], expected[0])
    assert strongest.positions[0, 0].tolist() == [0, 0]
    assert strongest.values[0, 0].item() == 10.0
    assert_no_hooks(model)


def test_hand_computed_projection_through_conv_and_pool():
    # input [[1,2,0],[0,3,1],[2,0,4]], 2x2 conv [[1,0],[0,1]] bias -1 -> [[3,2],[-1,6]]
    # relu -> [[3,2],[0,6]]; 2x2 pool -> 6 at (1,1); down: 6 at (1,1), transposed conv puts
    # 6*w[0,0] at (1,1) and 6*w[1,1] at (2,2).
    conv = nn.Conv2d(1, 1, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]))
        conv.bias.fill_(-1.0)
    model = nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU(), pool=nn.MaxPool2d(2))).eval()
    x = torch.tensor([[[[1.0, 2, 0], [0, 3, 1], [2, 0, 4]]]])
    expected = torch.tensor([[[0.0, 0, 0], [0, 6, 0], [0, 0, 6]]])
    with vizkit.instrument(model) as im:
        im(x)
        for method in ("autograd", "explicit"):
            assert torch.equal(project(im, x, "pool", [0], method=method).images[0, 0], expected)


def test_rectification_going_down():
    # a(x) = relu(x); b = -a + 10. Projecting b: the signal is negated by b's transposed filter,
    # so the deconvnet's rectification at the ReLU zeroes it; plain gradients keep it.
    first, second = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        first.weight.fill_(1.0)
        second.weight.fill_(-1.0)
        second.bias.fill_(10.0)
    model = nn.Sequential(OrderedDict(a=first, relu=nn.ReLU(), b=second)).eval()
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # b = [[9, 8], [7, 6]]: strongest at (0, 0)
    with vizkit.instrument(model) as im:
        im(x)
        for method in ("autograd", "explicit"):
            assert project(im, x, "b", [0], method=method).images.abs().sum() == 0
            assert project(im, x, "b", [0], method=method, rule="guided").images.abs().sum() == 0
            gradient = project(im, x, "b", [0], method=method, rule="gradient").images[0, 0, 0]
            assert gradient.tolist() == [[-9.0, 0.0], [0.0, 0.0]]


def reference_deconv(x, conv1, conv2, layer_channel):
    """Hand-written numpy deconvnet for conv(3x3,s1) -> relu -> maxpool(3,2) -> conv(3x3) -> relu."""
    w1, w2 = conv1.weight.detach().numpy(), conv2.weight.detach().numpy()
    b1, b2 = conv1.bias.detach().numpy(), conv2.bias.detach().numpy()
    img = x[0].numpy()

    def conv(inp, w, b):
        cout, _cin, k, _ = w.shape
        h = inp.shape[1] - k + 1
        out = np.zeros((cout, h, h))
        for o in range(cout):
            for i in range(h):
                for j in range(h):
                    out[o, i, j] = (inp[:, i : i + k, j : j + k] * w[o]).sum() + b[o]
        return out

    def conv_t(sig, w, size):
        cout, cin, k, _ = w.shape
        out = np.zeros((cin, size, size))
        for o in range(cout):
            for i in range(sig.shape[1]):
                for j in range(sig.shape[2]):
                    out[:, i : i + k, j : j + k] += sig[o, i, j] * w[o]
        return out

    a1 = np.maximum(conv(img, w1, b1), 0)
    size = a1.shape[1]
    ph = (size - 3) // 2 + 1
    pooled, switch = np.zeros((a1.shape[0], ph, ph)), {}
    for c in range(a1.shape[0]):
        for i in range(ph):
            for j in range(ph):
                window = a1[c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                u, v = np.unravel_index(np.argmax(window), window.shape)  # first maximum
                pooled[c, i, j] = window[u, v]
                switch[c, i, j] = (2 * i + u, 2 * j + v)
    a2 = np.maximum(conv(pooled, w2, b2), 0)
    m = a2[layer_channel]
    r, q = np.unravel_index(np.argmax(m), m.shape)
    seed = np.zeros_like(a2)
    seed[layer_channel, r, q] = m[r, q]
    down = conv_t(np.maximum(seed, 0), w2, ph)  # rectify (layer-2 relu), filter
    unpooled = np.zeros_like(a1)
    for (c, i, j), (u, v) in switch.items():
        unpooled[c, u, v] += down[c, i, j]  # shared maxima add
    return conv_t(np.maximum(unpooled, 0), w1, img.shape[1])


def test_matches_hand_written_reference_on_small_random_net():
    torch.manual_seed(3)
    conv1, conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 3)
    model = nn.Sequential(
        OrderedDict(conv1=conv1, relu1=nn.ReLU(), pool=nn.MaxPool2d(3, 2), conv2=conv2, relu2=nn.ReLU())
    ).eval()
    x = torch.randn(1, 3, 15, 15)
    with vizkit.instrument(model) as im:
        im(x)
        for channel in range(5):
            expected = torch.tensor(reference_deconv(x, conv1, conv2, channel), dtype=torch.float32)
            for method in ("autograd", "explicit"):
                got = project(im, x, "relu2", [channel], method=method).images[0, 0]
                assert torch.allclose(got, expected, atol=1e-5), (channel, method)


RULES = [rule.name for rule in BUILTIN_RULES]  # every built-in projection rule


def _paths_agree(model, x, layers, rule="deconvnet"):
    """Autograd and explicit projections of each layer's 3 strongest maps agree under ``rule``
    (a rule that differentiates normalisation, the gradient, does so on both paths)."""
    if rule != "deconvnet":  # the deepest layer's projection crosses every op below it: enough, and
        layers = layers[-1:]  # a third of the cost (the deconvnet, the paper's rule, checks every layer)
    with vizkit.instrument(model) as im:
        im(x)
        for layer in layers:
            act = im.activation(layer)
            strengths = act.flatten(2).amax(2)[0] if act.dim() == 4 else act[0]
            channels = strengths.argsort(descending=True)[:3].tolist()
            a = project(im, x, layer, channels, method="autograd", rule=rule)
            assert a.images.abs().sum() > 0, f"{layer}: empty projection"
            e = project(im, x, layer, channels, method="explicit", rule=rule)
            assert relative_error(e.images, a.images) < 1e-5, (layer, rule)
            assert torch.equal(a.positions, e.positions)
    assert_no_hooks(model)


# offline: random weights or the bundled model, and a photograph that ships with matplotlib
@pytest.mark.parametrize("rule", RULES)
def test_paths_agree_on_zfnet(photo_tensor, rule):
    torch.manual_seed(0)
    _paths_agree(zfnet().eval(), photo_tensor, ["conv1", "conv2", "conv3.relu", "conv5", "fc6", "fc8"], rule)


@pytest.mark.parametrize("rule", RULES)
def test_paths_agree_on_the_bundled_trained_model(bundled_model, photo_path, rule):
    x = vizkit.load_images([photo_path], vizkit.data.preprocess_for(bundled_model))
    _paths_agree(bundled_model, x, ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"], rule)


@pytest.mark.parametrize("rule", RULES)
def test_paths_agree_on_alexnet(photo_tensor, rule):
    torch.manual_seed(0)
    _paths_agree(tvm.alexnet().eval(), photo_tensor, ["features.1", "features.7", "features.12", "classifier.5"], rule)


@pytest.mark.parametrize("rule", RULES)
def test_paths_agree_on_random_squeezenet(photo_tensor, rule):
    torch.manual_seed(0)
    _paths_agree(tvm.squeezenet1_0().eval(), photo_tensor, ["features.3", "features.7", "features.12"], rule)


@pytest.mark.parametrize("rule", RULES)
def test_paths_agree_through_residual_adds_and_batchnorm(photo_tensor, rule):
    torch.manual_seed(0)
    _paths_agree(tvm.resnet18().eval(), photo_tensor, ["layer1.1", "layer2.0.bn2", "layer3.1"], rule)


# real data: the ImageNet SqueezeNet on a real ImageNet photograph
@pytest.mark.slow
@pytest.mark.parametrize("rule", RULES)
def test_paths_agree_on_real_squeezenet(squeezenet, dog_tensor, rule):
    _paths_agree(
        squeezenet, dog_tensor, ["features.3", "features.7", "features.12", "features.12.squeeze_activation"], rule
    )


def test_explicit_path_names_ops_it_cannot_reverse():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3)
            self.conv2 = nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.conv2(torch.cumsum(self.conv1(x), 1))

    model = Gated().eval()
    x = torch.randn(1, 3, 8, 8)
    with vizkit.instrument(model) as im:
        im(x)
        with pytest.raises(UnsupportedOpError, match="'cumsum'"):
            project(im, x, "conv2", [0], method="explicit")
        assert project(im, x, "conv2", [0]).images.abs().sum() > 0  # the autograd path copes
    assert_no_hooks(model)


@pytest.mark.parametrize(
    "name,layer",
    [
        ("alexnet", "features.12"),
        pytest.param("vgg11", "features.20", marks=pytest.mark.slow),
        ("alexnet", "classifier.5"),
    ],
)
def test_equals_captum_neuron_deconvolution(name, layer):
    from captum.attr import NeuronDeconvolution, NeuronGuidedBackprop

    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    with vizkit.instrument(model) as im:
        im(x)
        act = im.activation(layer)
        strengths = act.flatten(2).amax(2)[0] if act.dim() == 4 else act[0]
        channel = int(strengths.argmax())
        ours = project(im, x, layer, [channel])
        guided = project(im, x, layer, [channel], rule="guided")
    position = tuple(ours.positions[0, 0].tolist())
    selector = (channel, *position) if position[0] >= 0 else (channel,)
    value = ours.values[0, 0]
    module = dict(model.named_modules())[layer]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = NeuronDeconvolution(model, module).attribute(x, neuron_selector=selector)
        theirs_guided = NeuronGuidedBackprop(model, module).attribute(x, neuron_selector=selector)
    # captum back-propagates a unit gradient; the deconvnet feeds the activation's value
    assert relative_error(ours.images[0, 0] / value, theirs[0]) < 1e-5
    assert relative_error(guided.images[0, 0] / value, theirs_guided[0]) < 1e-5


def test_equals_captum_on_real_squeezenet(squeezenet, dog_tensor):
    from captum.attr import NeuronDeconvolution

    layer = "features.12"
    with vizkit.instrument(squeezenet) as im:
        im(dog_tensor)
        channel = int(im.activation(layer).flatten(2).amax(2)[0].argmax())
        ours = project(im, dog_tensor, layer, [channel])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = NeuronDeconvolution(squeezenet, squeezenet.features[12]).attribute(
            dog_tensor, neuron_selector=(channel, *ours.positions[0, 0].tolist())
        )
    assert relative_error(ours.images[0, 0] / ours.values[0, 0], theirs[0]) < 1e-5


def test_projection_targets_and_instrumented_api(squeezenet, dog_tensor):
    with vizkit.instrument(squeezenet, layers=["features.12"]) as im:
        im(dog_tensor)
        act = im.activation("features.12")[0]
        single = im.project("features.12", 7)
        many = im.project("features.12", [7, 9])
        assert single.shape == (1, 3, 224, 224) and many.shape == (1, 2, 3, 224, 224)
        assert relative_error(many[:, 0], single) < 1e-5  # batched vs single: same up to float order
        result = project(im, dog_tensor, "features.12", [7, 9])
        for j, channel in enumerate([7, 9]):
            row, col = result.positions[0, j].tolist()
            assert act[channel, row, col] == act[channel].max()
            assert torch.isclose(result.values[0, j], act[channel, row, col], rtol=1e-5)
        at = project(im, dog_tensor, "features.12", [7], position=(2, 3))
        assert torch.isclose(at.values[0, 0], act[7, 2, 3], rtol=1e-5) and at.positions[0, 0].tolist() == [2, 3]
        with pytest.raises(vizkit.UsageError, match="out of range"):
            project(im, dog_tensor, "features.12", [512])
        with pytest.raises(vizkit.UsageError, match="outside"):
            project(im, dog_tensor, "features.12", [7], position=(13, 0))
        # the user's recorded activations survive the projection forwards
        assert torch.equal(im.activation("features.12")[0], act)
    assert_no_hooks(squeezenet)


def test_to_image_scaling():
    signal = torch.zeros(2, 3, 4, 4)
    signal[0, 0, 1, 1], signal[0, 1, 2, 2] = 5.0, -5.0
    shown = vizkit.to_image(signal, channels_last=False)
    assert shown.shape == signal.shape
    assert shown.min() >= 0 and shown.max() <= 1
    assert shown[0, 0, 1, 1] == 1.0 and shown[0, 1, 2, 2] == 0.0 and shown[0, 2, 0, 0] == 0.5
    assert torch.all(shown[1] == 0.5)  # an all-zero projection is plain grey


class _RectifiedSkip(nn.Module):
    """conv -> in-place ReLU whose input tensor is also the skip: h += conv(h) reads the
    rectified h, as in eager mode; and an `x.relu_()` statement whose result is not reassigned."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c0, self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 3, 1)
        self.relu, self.out = nn.ReLU(inplace=True), nn.Identity()

    def forward(self, x):
        h = self.c0(x)
        self.relu(h)  # h itself is rectified
        y = self.c1(h) + h
        y.relu_()
        return self.out(self.c2(y))


class _DeconvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


@pytest.mark.parametrize("method", ["autograd", "explicit"])
def test_in_place_relu_read_through_another_name(method):
    # Reference: the same forward written out with out-of-place ReLUs whose backward rectifies.
    model = _RectifiedSkip().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    xr = x.clone().requires_grad_(True)
    h = _DeconvReLU.apply(model.c0(xr))
    out = model.c2(_DeconvReLU.apply(model.c1(h) + h))
    flat = int(out[0, 1].flatten().argmax())
    value = out[0, 1].flatten()[flat]
    (grad,) = torch.autograd.grad(value, xr)
    with vizkit.instrument(model) as im:
        im(x)
        got = project(im, x, "out", [1], method=method)
    assert got.positions[0, 0].tolist() == [flat // 8, flat % 8]
    assert got.values[0, 0].item() == pytest.approx(value.item(), rel=1e-6)
    assert torch.allclose(got.images[0, 0], value.detach() * grad[0], atol=1e-6)
    assert_no_hooks(model)


class _FrozenBackbone(nn.Module):
    def __init__(self, detach: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head, self.detach = nn.Conv2d(4, 3, 1), detach

    def forward(self, x):
        if self.detach:
            return self.head(self.backbone(x).detach())
        with torch.no_grad():
            features = self.backbone(x)
        return self.head(features)


def test_projection_through_a_frozen_backbone_run_under_no_grad():
    model = _FrozenBackbone().eval()
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    with vizkit.instrument(model) as im:
        im(x)
        for layer in ("backbone.2", "head"):
            auto = project(im, x, layer, [0, 1])
            explicit = project(im, x, layer, [0, 1], method="explicit")
            assert auto.images.abs().sum() > 0, layer  # was all zero
            assert relative_error(auto.images, explicit.images) < 1e-6, layer
    model = _FrozenBackbone(detach=True).eval()
    with (
        pytest.raises(vizkit.VizkitError, match="cannot reach the input from layer 'head'"),
        vizkit.instrument(model) as im,
    ):
        im(x)
        project(im, x, "head", [0])  # not a silent all-zero projection
    assert_no_hooks(model)


class _Branchy(nn.Module):
    """Every op the explicit path reverses besides normalisation: a functional max-pool, a
    concatenation, a residual add, average and adaptive pooling, dropout, a flatten, a linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 3, padding=1)
        self.pool, self.drop, self.fc = nn.AvgPool2d(2), nn.Dropout(0.3), nn.Linear(32, 5)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.stem(x)), 2)
        y = self.pool(torch.cat([F.relu(self.a(h)), F.relu(self.b(h))], 1) + h)
        return self.fc(self.drop(torch.flatten(F.adaptive_avg_pool2d(y, 2), 1)))


TINY_NETS = {  # name -> (model, input, layers)
    "overlapping-pool": lambda: (overlapping_pool_net(), torch.rand(1, 1, 6, 6), ["pool"]),
    "in-place-relu": lambda: (_RectifiedSkip().eval(), torch.randn(1, 3, 8, 8), ["out"]),
    "frozen-backbone": lambda: (_FrozenBackbone().eval(), torch.randn(1, 3, 10, 10), ["backbone.2", "head"]),
    "tiny": lambda: (tiny_net(max_pool=True, relu2=True).eval(), torch.randn(2, 3, 40, 40), ["relu2", "fc"]),
    "branchy": lambda: (_Branchy().eval(), torch.randn(2, 3, 16, 16), ["max_pool2d", "pool", "fc"]),
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("net", sorted(TINY_NETS))
def test_paths_agree_on_tiny_nets_under_every_rule(net, rule):
    torch.manual_seed(1)
    model, x, layers = TINY_NETS[net]()
    _paths_agree(model, x, layers, rule)


def test_projection_refuses_a_model_in_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 2, 1))
    x = torch.randn(2, 3, 8, 8)
    running = model[1].running_mean.clone()
    with vizkit.instrument(model) as im:
        im(x)
        running = model[1].running_mean.clone()
        with pytest.raises(vizkit.UsageError, match=r"training mode: '1' \(BatchNorm2d\), '3' \(Dropout\).*eval"):
            project(im, x, "4", [0])
        assert torch.equal(model[1].running_mean, running)  # no hidden forward updated it
        model.eval()
        a, e = project(im, x, "4", [0, 1]), project(im, x, "4", [0, 1], method="explicit")
        assert relative_error(a.images, e.images) < 1e-6
    assert_no_hooks(model)


def test_projection_refuses_fractional_max_pooling_with_random_windows():
    """Fractional max-pooling draws new windows on every forward, in eval mode too: a projection
    (another forward) would be of other activations than those recorded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.FractionalMaxPool2d(2, output_size=11), nn.Conv2d(4, 2, 1))
    model.eval()
    x = torch.randn(1, 3, 20, 20)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # why: the same input, another output
    with vizkit.instrument(model) as im:
        im(x)
        with pytest.raises(vizkit.UsageError, match="fractional max-pooling '2' draws new pooling windows"):
            project(im, x, "3", [0])
    assert_no_hooks(model)


# ---------------------------------------------------------------------- a silent map says so
def _silent_and_strongest(im, layer: str) -> tuple[list[int], int]:
    peaks = im.activation(layer)[0].flatten(1).amax(1)
    return (peaks == 0).nonzero().flatten().tolist(), int(peaks.argmax())


def test_im_project_warns_once_per_call_on_a_silent_map_and_says_how_to_pick_one(bundled_model, photo_path):
    x = vizkit.load_images([photo_path, photo_path], bundled_model)
    with vizkit.instrument(bundled_model) as im:
        im(x[:1])
        silent, strongest = _silent_and_strongest(im, "conv5")
        assert len(silent) >= 2  # conv5 has maps that never fire on this photograph
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            grey = im.project("conv5", channel=silent[0])
        assert not grey.any()  # all zero: a flat grey picture
        (warning,) = caught
        message = str(warning.message)
        assert warning.category is UserWarning and warning.filename == __file__  # points at the caller
        assert f"map {silent[0]} of layer 'conv5' is silent" in message and "all zero" in message
        hint = message.split("channel=", 1)[1]  # an expression the user can paste
        assert eval(hint, {"im": im}) == strongest
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert im.project("conv5", channel=strongest).any()  # a map that fires: no warning
            im.project("conv5", channel=[strongest, *silent[:2]])  # several silent maps: one warning
            im.project("fc7", channel=int(im.activation("fc7")[0].argmax()))
        (several,) = caught
        assert f"maps {silent[0]}, {silent[1]} of layer 'conv5' are silent" in str(several.message)
        im(x)  # two images: the warning names them
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            im.project("conv5", channel=silent[0])
            im.project("conv5", channel=strongest, position=(0, 0))  # that unit may be 0: said differently
        assert "silent on images 0, 1" in str(caught[0].message)
        assert all("is 0 at the given position" in str(w.message) for w in caught[1:])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # Python's default: once per call site and message
            for _ in range(3):
                im.project("conv5", channel=silent[0])
        assert len(caught) == 1
    assert_no_hooks(bundled_model)


def test_analyses_and_the_cli_do_not_repeat_it(bundled_model, photo_path, tmp_path, capsys):
    """They mark silent maps themselves (the deconvnet figure's "silent" tiles, values of 0)."""
    x = vizkit.load_images([photo_path], bundled_model)
    with vizkit.instrument(bundled_model) as im:
        im(x)
        silent, strongest = _silent_and_strongest(im, "conv5")
    channels = ",".join(map(str, [strongest, *silent[:3]]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = vizkit.run("deconvnet", bundled_model, images=[photo_path], layer="conv5", channels=channels)
        args = ["run", "deconvnet", "--model", "zfnet-compact", "--image", photo_path, "--layer", "conv5"]
        assert main([str(a) for a in [*args, "--channels", channels, "--out", tmp_path / "out"]]) == 0
    assert result.summary["activations"][1:] == [0.0, 0.0, 0.0]  # the silent maps, marked by their value
    assert not [w for w in caught if "silent" in str(w.message)]
    assert "im.project" not in capsys.readouterr().err
