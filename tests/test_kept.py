"""Kept activations are the model's own outputs, copied only before something writes over them
(vizkit.engine.kept): every in-place write the function mode sees copies first, one it cannot
see is caught by the version counter and the forward runs again copying, and what the caller
does to the output or the input afterwards never changes what was recorded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor, nn

import vizkit
from helpers import assert_no_hooks
from vizkit.engine.ops.in_place import overwritten


def _copied_each(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Every kept activation of a forward that copies each output as it appears (the reference)."""
    with vizkit.instrument(model) as im, torch.no_grad(), im._settings_changed(copy_kept=True):
        im(x)
        return {name: im.activation(name).clone() for name in im.layers if name in im._rec.acts}


def _kept(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    with vizkit.instrument(model) as im, torch.no_grad():
        im(x)
        return {name: im.activation(name).clone() for name in im.layers if name in im._rec.acts}


class InPlaceWrites(nn.Module):
    """Every way a forward writes into a tensor an earlier layer produced."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)  # module, keyword
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = nn.Hardswish(inplace=True)  # F.hardswish(x, True): positional
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.conv4 = nn.Conv2d(4, 4, 1)
        self.conv5 = nn.Conv2d(4, 4, 1)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        a = self.relu1(self.conv1(x))
        b = self.act2(self.conv2(a))
        c = self.conv3(b)
        c += a  # __iadd__ on a layer's output
        d = self.conv4(c)
        d[:, :2] = 0  # __setitem__ through a view
        e = self.conv5(d)
        torch.add(e, 1.0, out=e)  # out=
        e.view(-1).mul_(0.5)  # an in-place method on a view of the storage
        return F.silu(e, inplace=True).mean((2, 3))


def test_every_in_place_write_the_mode_sees_copies_first():
    model, x = InPlaceWrites().eval(), torch.randn(2, 3, 8, 8)
    reference = _copied_each(model, x)
    model.calls = 0
    kept = _kept(model, x)
    assert model.calls == 1, "a write was caught only afterwards (the forward ran again)"
    assert reference.keys() == kept.keys() and {"conv1", "conv2", "conv3", "conv4", "conv5"} <= kept.keys()
    for name in reference:
        assert torch.equal(kept[name], reference[name]), name
    with torch.no_grad():  # and the reference is what the layers really output
        assert torch.equal(reference["conv1"], model.conv1(x))


def test_outputs_nothing_writes_over_are_not_copied():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)).eval()
    produced: dict[str, Tensor] = {}
    for name, module in model.named_children():
        module.register_forward_hook(lambda _m, _a, out, name=name: produced.__setitem__(name, out))
    with vizkit.instrument(model) as im, torch.no_grad():
        im(torch.randn(1, 3, 8, 8))
        for name in ("0", "1"):  # the model's own tensors, not copies
            assert im.activation(name).data_ptr() == produced[name].data_ptr()


class UnseenWrite(nn.Module):
    """A write into a layer's output the function mode cannot see (as a C++ extension's)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Conv2d(4, 2, 1)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        y = self.conv(x)
        with torch._C.DisableTorchFunction():
            y.mul_(-1.0)
        return self.head(y)


def test_a_write_the_mode_cannot_see_runs_the_forward_again_copying():
    torch.manual_seed(0)
    model, x = UnseenWrite().eval(), torch.randn(1, 3, 8, 8)
    with vizkit.instrument(model) as im, torch.no_grad():
        output = im(x)
        assert model.calls == 2, "the stale recording was not redone"
        assert torch.equal(im.activation("conv"), model.conv(x))
        assert torch.equal(output, model.head(-model.conv(x)))
        model.calls = 0
        im(x)  # every forward is checked, not the first only
        assert model.calls == 2
    assert_no_hooks(model)


def test_the_caller_changing_output_or_input_afterwards_changes_nothing_recorded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.Conv2d(3, 2, 3), nn.Flatten()).eval()
    x = torch.randn(1, 3, 6, 6)
    with vizkit.instrument(model) as im, torch.no_grad():
        out = im(x)
        first, last = im.activation("0").clone(), im.activation("2").clone()
        out.zero_()
        x.zero_()  # a caller reusing its input buffer
        assert torch.equal(im.activation("0"), first) and first.abs().sum() > 0
        assert torch.equal(im.activation("2"), last) and last.abs().sum() > 0


class Cache(nn.Module):
    """Keeps a layer's output where code outside the forward can reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.head = nn.Linear(2, 2)
        self.cached: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.cached = self.conv(x)
        return self.head(self.cached.mean((2, 3)))


def test_an_output_changed_after_the_forward_is_refused_in_one_line():
    model = Cache().eval()
    with vizkit.instrument(model) as im, torch.no_grad():
        im(torch.randn(1, 3, 6, 6))
        assert model.cached is not None
        model.cached.add_(1.0)
        with pytest.raises(vizkit.VizkitError, match="layer 'conv' was changed in place after the forward"):
            im.activation("conv")


def test_inference_mode_copies_as_before():
    model = tvm.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    reference = _copied_each(model, x)
    with vizkit.instrument(model) as im, torch.inference_mode():
        im(x)
        for name in ("conv1", "bn1", "layer1.0.bn2", "layer4"):
            assert torch.equal(im.activation(name), reference[name]), name


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "mobilenet_v3_small", "densenet121"])
def test_kept_activations_equal_copies_on_torchvision_models(name):
    torch.manual_seed(0)
    model, x = tvm.get_model(name, weights=None).eval(), torch.randn(2, 3, 64, 64)
    reference, kept = _copied_each(model, x), _kept(model, x)
    assert reference.keys() == kept.keys()
    assert all(torch.equal(kept[layer], reference[layer]) for layer in reference)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda t: (torch.relu_, (t,), {}), True),
        (lambda t: (Tensor.__iadd__, (t, 1), {}), True),
        (lambda t: (Tensor.__setitem__, (t, 0, 1.0), {}), True),
        (lambda t: (F.relu, (t, True), {}), True),
        (lambda t: (F.relu, (t,), {"inplace": True}), True),
        (lambda t: (F.dropout, (t, 0.5, False, True), {}), True),
        (lambda t: (torch.add, (t, 1), {"out": t}), True),
        (lambda t: (F.relu, (t,), {}), False),
        (lambda t: (Tensor.__invert__, (t,), {}), False),
        (lambda t: (Tensor.__add__, (t, 1), {}), False),
    ],
)
def test_which_calls_write_into_their_input(call, expected):
    t = torch.zeros(2)
    func, args, kwargs = call(t)
    assert any(target is t for target in overwritten(func, args, kwargs)) is expected
