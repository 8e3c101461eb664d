"""The ops of later classification convnets on the explicit path: smooth rectifiers, gates and
products (SE blocks, layer scale), layer / group normalisation, permutes and channels-last
Linear, chunk / split / cat, slicing, channel shuffle and means. Each tiny model is checked
against a projection written out by hand (the deconvnet and guided rules) or plain autograd on
the bare model (the gradient rule), and both paths agree under every built-in rule."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor, nn

import vizkit
from helpers import assert_no_hooks, relative_error
from vizkit.engine.deconv import project
from vizkit.engine.ops import UnsupportedOpError
from vizkit.engine.rules import BUILTIN_RULES

RULES = [rule.name for rule in BUILTIN_RULES]


def _rectify(rule: str, signal: Tensor, before: Tensor) -> Tensor:
    """What the deconvnet and guided rules do below any rectifier (ReLU, SiLU, GELU, ...)."""
    return signal.clamp(min=0) * (before > 0) if rule == "guided" else signal.clamp(min=0)


def _seed(out: Tensor, channel: int) -> Tensor:
    """The strongest activation of ``channel``, everything else zero (the projection's seed)."""
    seed = torch.zeros_like(out)
    flat = out[0, channel].flatten()
    where = int(flat.argmax())
    seed[0, channel].view(-1)[where] = flat[where]
    return seed


def _gradient(model: nn.Module, x: Tensor, channel: int) -> Tensor:
    """The gradient rule's reference: plain autograd on the bare model."""
    probe = x.clone().requires_grad_(True)
    out = model(probe)
    (grad,) = torch.autograd.grad(out, probe, _seed(out.detach(), channel))
    return grad


def _check(model: nn.Module, x: Tensor, layer: str, reference: Callable[[str, int], Tensor], rule: str) -> None:
    """Both paths equal the hand-written reference for the model's 3 strongest maps."""
    with torch.no_grad():
        out = model(x)
    channels = out[0].flatten(1).amax(1).argsort(descending=True)[:3].tolist()
    with vizkit.instrument(model) as im:
        im(x)
        for method in ("autograd", "explicit"):
            got = project(im, x, layer, channels, method=method, rule=rule).images
            for k, channel in enumerate(channels):
                expected = _gradient(model, x, channel) if rule == "gradient" else reference(rule, channel).detach()
                assert expected.abs().sum() > 0
                assert relative_error(got[:, k], expected) < 1e-5, (method, rule, channel)
    assert_no_hooks(model)


# ------------------------------------------------ squeeze-and-excitation (EfficientNet, MobileNetV3)
ACTIVATIONS = {  # rectifier, gate: EfficientNet's, MobileNetV3's, and the remaining pair
    "silu-sigmoid": (nn.SiLU, nn.Sigmoid),
    "hardswish-hardsigmoid": (nn.Hardswish, nn.Hardsigmoid),
    "gelu-tanh": (nn.GELU, nn.Tanh),
}


class SEBlock(nn.Module):
    """conv -> rectifier -> x * gate(fc2(relu(fc1(pool(x))))) -> conv (the layer projected)."""

    def __init__(self, rectifier: type[nn.Module], gate: type[nn.Module], in_place: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 4, 3)
        self.act = rectifier(inplace=True) if in_place else rectifier()
        self.fc1, self.fc2 = nn.Conv2d(6, 3, 1), nn.Conv2d(3, 6, 1)
        self.gate = gate()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.conv1(x))
        g = self.gate(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(h, 1)))))
        return self.conv2(h * g)


@pytest.mark.parametrize("pair", ACTIVATIONS)
@pytest.mark.parametrize("rule", RULES)
def test_a_squeeze_and_excitation_gate_is_held_constant(pair, rule):
    model, x = SEBlock(*ACTIVATIONS[pair]).eval(), torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.conv1(x)
        h = model.act(before)
        gate = model.gate(model.fc2(F.relu(model.fc1(h.mean((2, 3), keepdim=True)))))
        out = model.conv2(h * gate)

    def reference(rule: str, channel: int) -> Tensor:
        down = F.conv_transpose2d(_seed(out, channel), model.conv2.weight) * gate  # the gate: a constant
        return F.conv_transpose2d(_rectify(rule, down, before), model.conv1.weight)

    _check(model, x, "conv2", reference, rule)


@pytest.mark.parametrize("rule", RULES)
def test_in_place_rectifiers_keep_their_input_for_the_way_down(rule):
    model, x = SEBlock(nn.SiLU, nn.Sigmoid, in_place=True).eval(), torch.randn(2, 3, 9, 9)
    with vizkit.instrument(model) as im:
        im(x)
        a = project(im, x, "conv2", [0, 2], method="autograd", rule=rule)
        e = project(im, x, "conv2", [0, 2], method="explicit", rule=rule)
    assert a.images.abs().sum() > 0 and relative_error(e.images, a.images) < 1e-5


class MainPathGate(nn.Module):
    """A sigmoid and a tanh on the main path (no product): crossed by their own derivative."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(torch.tanh(self.conv1(x)).sigmoid())


@pytest.mark.parametrize("rule", RULES)
def test_a_gate_on_the_main_path_is_crossed_by_its_derivative(rule):
    model, x = MainPathGate().eval(), torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        t = torch.tanh(model.conv1(x))
        out = model(x)

    def reference(rule: str, channel: int) -> Tensor:
        s = F.conv_transpose2d(_seed(out, channel), model.conv2.weight)
        s = s * torch.sigmoid(t) * (1 - torch.sigmoid(t)) * (1 - t**2)
        return F.conv_transpose2d(s, model.conv1.weight)

    _check(model, x, "conv2", reference, rule)


# ------------------------------------------------ ConvNeXt: permute, LayerNorm, channels-last Linear, layer scale
class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dwconv = nn.Conv2d(3, dim, 3, padding=1)
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 8), nn.Linear(8, dim)
        self.gelu = nn.GELU()
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)
        self.depth = torchvision_stochastic_depth()
        self.head = nn.Conv2d(dim, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x)
        t = self.fc2(self.gelu(self.fc1(self.norm(h.permute(0, 2, 3, 1))))).permute(0, 3, 1, 2)
        return self.head(self.depth(self.layer_scale * t) + h)


def torchvision_stochastic_depth() -> nn.Module:
    from torchvision.ops import StochasticDepth

    return StochasticDepth(0.5, "row")  # the identity in eval mode


@pytest.mark.parametrize("rule", RULES)
def test_a_convnext_block(rule):
    model, x = ConvNeXtBlock().eval(), torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = model.dwconv(x)
        before = model.fc1(model.norm(h.permute(0, 2, 3, 1)))
        out = model(x)

    def reference(rule: str, channel: int) -> Tensor:
        s = F.conv_transpose2d(_seed(out, channel), model.head.weight)  # onto the sum
        t = (s * model.layer_scale).permute(0, 2, 3, 1) @ model.fc2.weight  # layer scale, channels-last Linear
        t = _rectify(rule, t, before) @ model.fc1.weight  # GELU rectifies; LayerNorm passes
        return F.conv_transpose2d(t.permute(0, 3, 1, 2) + s, model.dwconv.weight, padding=1)

    _check(model, x, "head", reference, rule)


# ------------------------------------------------ CSP / Ghost / ShuffleNet: chunk, split, slicing, shuffle
class ChannelGroups(nn.Module):
    """chunk + cat (CSP), a Ghost-like cat then slice, split, channel shuffle, a GroupNorm."""

    def __init__(self, shuffle: str = "view") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(4, 4, 3, padding=1)
        self.cheap = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.GroupNorm(2, 6)
        self.head = nn.Conv2d(6, 5, 1)
        self.shuffle = shuffle

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv1(x))
        a, b = h.chunk(2, dim=1)
        h = torch.cat([a, F.relu(self.conv2(b))], dim=1)  # CSP
        h = torch.cat([h, self.cheap(h)], dim=1)[:, :12]  # Ghost
        p, q = torch.split(h, [6, 6], dim=1)
        h = p + q
        if self.shuffle == "view":  # ShuffleNetV2's channel_shuffle, written out
            n, c, hh, ww = h.shape
            h = torch.transpose(h.view(n, 2, c // 2, hh, ww), 1, 2).contiguous().view(n, c, hh, ww)
        else:
            h = F.channel_shuffle(h, 2)
        return self.head(self.norm(h))


@pytest.mark.parametrize("shuffle", ["view", "channel_shuffle"])
@pytest.mark.parametrize("rule", RULES)
def test_channel_groups(rule, shuffle):
    model, x = ChannelGroups(shuffle).eval(), torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pre1 = model.conv1(x)
        h = F.relu(pre1)
        pre2 = model.conv2(h[:, 4:])
        out = model(x)
    order = torch.arange(6).view(2, 3).t().reshape(-1)  # shuffled channel i came from order[i]

    def reference(rule: str, channel: int) -> Tensor:
        s = F.conv_transpose2d(_seed(out, channel), model.head.weight)  # GroupNorm passes
        unshuffled = torch.zeros_like(s)
        unshuffled[:, order] = s
        ghost = torch.cat([unshuffled, unshuffled], dim=1)  # split of p + q: both halves get it
        padded = torch.cat([ghost, torch.zeros_like(ghost[:, :4])], dim=1)  # the slice dropped 4 maps
        h = padded[:, :8] + F.conv_transpose2d(padded[:, 8:], model.cheap.weight, padding=1, groups=8)
        b = F.conv_transpose2d(_rectify(rule, h[:, 4:], pre2), model.conv2.weight, padding=1)
        h = torch.cat([h[:, :4], b], dim=1)
        return F.conv_transpose2d(_rectify(rule, h, pre1), model.conv1.weight)

    _check(model, x, "head", reference, rule)


def test_incremental_occlusion_follows_every_piece_of_a_chunk():
    model, x = ChannelGroups().eval(), torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    corners, size = [(0, 0), (3, 5), (6, 6)], 5
    occluded = x.repeat(len(corners), 1, 1, 1)
    for i, (row, col) in enumerate(corners):
        occluded[i, :, row : row + size, col : col + size] = 0.0
    with vizkit.instrument(model) as im:
        im(x)
        logits, _ = vizkit.engine.IncrementalOcclusion(im, x, "conv2").evaluate(corners, size, torch.zeros(3))
    with torch.no_grad():
        assert torch.allclose(logits, model(occluded), atol=1e-5)


class Centred(nn.Module):
    """Subtraction and division: each map centred on its mean and divided by a signal."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv1(x))
        return self.conv2((h - h.mean((2, 3), keepdim=True)) / (h.sum(1, keepdim=True) + 2.0))


@pytest.mark.parametrize("rule", RULES)
def test_differences_and_quotients(rule):
    model, x = Centred().eval(), torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        pre = model.conv1(x)
        h = F.relu(pre)
        centred, denominator = h - h.mean((2, 3), keepdim=True), h.sum(1, keepdim=True) + 2.0
        out = model(x)

    def reference(rule: str, channel: int) -> Tensor:
        s = F.conv_transpose2d(_seed(out, channel), model.conv2.weight)
        through_centre = s / denominator
        through_centre = through_centre - through_centre.mean((2, 3), keepdim=True)  # mean's adjoint
        through_denominator = (-s * centred / denominator**2).sum(1, keepdim=True).expand_as(s)
        return F.conv_transpose2d(_rectify(rule, through_centre + through_denominator, pre), model.conv1.weight)

    _check(model, x, "conv2", reference, rule)


# ------------------------------------------------ an op nothing handles
class Unknown(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)
        self.op = op

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x)
        h = torch.cumsum(h, 1) if self.op == "cumsum" else torch.std_mean(h, dim=1, keepdim=True)[1].expand_as(h)
        return self.conv2(h)


@pytest.mark.parametrize("op", ["cumsum", "std_mean"])
def test_an_op_nothing_handles_names_itself_in_one_line(op):
    model, x = Unknown(op).eval(), torch.randn(1, 3, 8, 8)
    with vizkit.instrument(model) as im:
        im(x)
        assert project(im, x, "conv2", [0]).images.abs().sum() > 0  # the autograd path goes through
        with pytest.raises(UnsupportedOpError) as error:
            project(im, x, "conv2", [0], method="explicit")
    assert f"'{op}'" in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------ torchvision's modern classification convnets
@pytest.mark.parametrize(
    "name",
    ["efficientnet_b0", "mobilenet_v3_small", "mobilenet_v2", "convnext_tiny", "regnet_y_400mf", "shufflenet_v2_x0_5"],
)
def test_paths_agree_on_torchvision_convnets(name):
    torch.manual_seed(0)
    model, x = getattr(tvm, name)(weights=None).eval(), torch.randn(1, 3, 64, 64)
    with vizkit.instrument(model) as im:
        im(x)
        layer = [n for n in im.layers if len(im.info(n).shape or ()) == 4][-1]  # crosses every op below
        channels = im.activation(layer)[0].flatten(1).amax(1).argsort(descending=True)[:2].tolist()
        for rule in RULES:
            a = project(im, x, layer, channels, method="autograd", rule=rule)
            e = project(im, x, layer, channels, method="explicit", rule=rule)
            assert a.images.abs().sum() > 0, (name, rule)
            assert relative_error(e.images, a.images) < 1e-5, (name, rule)
    assert_no_hooks(model)
