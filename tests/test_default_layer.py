"""The one default layer (``vizkit.toolkit.default_layer``) every analysis uses when ``--layer``
is left out: a declared default is resolved through the model's aliases (occlusion once kept the
alias while attribution resolved it), functional ops and reused modules are skipped only where a
module hook must attach (captum's layer methods)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vizkit
from vizkit.toolkit import default_layer


class AliasedDefault(nn.Module):
    """A user's model that names its layers by aliases and declares its default by one."""

    vizkit_aliases = {"top": "block.conv", "head": "fc"}  # noqa: RUF012 (read, never changed)
    vizkit_default_layer = "top"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.block = nn.Sequential()
        self.block.add_module("conv", nn.Conv2d(6, 8, 3, padding=1))
        self.block.add_module("relu", nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.block(F.relu(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class FunctionalLast(nn.Module):
    """DenseNet's shape: the last spatial layer is a functional ReLU, the conv before it is
    followed by one module (``relu``) called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.norm(self.relu(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(F.relu(x), 1).flatten(1))


@pytest.fixture
def instrumented():
    """``make(model)``: the model instrumented (until the test ends) after one forward, and its
    number of classes."""
    with contextlib.ExitStack() as stack:

        def make(model: nn.Module) -> tuple[vizkit.Instrumented, int]:
            torch.manual_seed(0)
            im = stack.enter_context(vizkit.instrument(model.eval()))
            with torch.no_grad():
                num_classes = im(torch.randn(1, 3, 16, 16)).shape[1]
            return im, num_classes

        yield make


def test_a_declared_alias_is_resolved_to_its_layer(instrumented):
    model = AliasedDefault()
    im, num_classes = instrumented(model)
    assert default_layer(model, im, num_classes) == "block.conv"
    assert default_layer(model, im, num_classes, hookable=True) == "block.conv"


def test_functional_ops_and_reused_modules_are_skipped_only_for_module_hooks(instrumented):
    model = FunctionalLast()
    im, num_classes = instrumented(model)
    last = default_layer(model, im, num_classes)
    assert im.info(last).functional  # vizkit records the functional ReLU: the last feature map
    assert default_layer(model, im, num_classes, hookable=True) == "norm"  # a module that runs once


def test_a_model_without_spatial_maps_asks_for_a_layer(instrumented):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    im, num_classes = instrumented(model)
    for hookable in (False, True):
        with pytest.raises(vizkit.UsageError, match="pass --layer"):
            default_layer(model, im, num_classes, hookable=hookable)


def test_occlusion_and_attribution_agree_on_a_declared_alias():
    """Both analyses report the layer the alias names (occlusion used to report the alias)."""
    model = AliasedDefault().eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    occlusion = vizkit.run("occlusion", model, images=x, size=8, stride=8, check=0)
    attribution = vizkit.run("attribution", model, images=x, method="saliency", deletion_steps=2)
    assert occlusion["layer"] == attribution["layer"] == "block.conv"
