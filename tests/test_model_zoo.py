"""The model zoo: the smallest member of every torchvision classification family, and the same
families from timm, at random weights and a small input, through every analysis that must work on
any convnet.

For each entry of :data:`ZOO` (one model, built once and shared by its checks):

* ``projection``: the explicit (op-by-op) and the autograd projection paths agree, relative error
  below 1e-5, under every built-in rule, for the strongest map of the deepest spatial layer (the
  default layer; the gradient rule: the strongest one not saturated), and the projection is not
  all zeros;
* ``occlusion``: exact incremental occlusion equals batched full forwards (1e-4) on a 3 x 3 grid,
  and the occluder does change the tracked map (the comparison is not between two constants);
* ``top9``: the winners over a few real Imagenette images are the brute-force top-k of each map's
  per-image maximum, with finite, non-zero projections;
* ``invariance``: the identity step is at distance 0 with the plain forward's probability, and a
  transformed image moves the deep layer;
* ``attribution``: saliency and guided backprop give finite, non-zero maps of the input's shape.

A sample of four different designs (a plain ResNet, an SE + SiLU EfficientNet, a LayerNorm + GELU
ConvNeXt, timm's concatenating DenseNet) runs in the fast suite; the matrix's other models are
marked slow, so that the full suite runs every model once.
``bench/zoo.py`` reads :data:`ZOO` for the README's table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import vizkit
from helpers import IMAGENETTE, assert_no_hooks, relative_error
from vizkit.engine.rules import BUILTIN_RULES
from vizkit_plugins import timm_source
from vizkit_plugins.occlusion.grid import OcclusionGrid
from vizkit_plugins.occlusion.maps import occlusion_maps

# torchvision's GoogLeNet and Inception v3 say their default initialisation will change
pytestmark = [
    pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning"),
    pytest.mark.usefixtures("one_thread"),  # small forwards at 64 px
]

RULES = [rule.name for rule in BUILTIN_RULES]
CHECKS = ("projection", "occlusion", "top9", "invariance", "attribution")
ATTRIBUTION_METHODS = ("saliency", "guidedbackprop")


@dataclass(frozen=True)
class Entry:
    """One model of the matrix: its ``vizkit.load_model`` spec, the family it stands for, the
    input side (Inception v3 needs at least 75 px), and the checks known to fail, each with its
    reason (run as strict xfails: a fix makes them fail until the mark goes)."""

    spec: str
    family: str
    size: int = 64
    known_failures: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        """The spec without ``torchvision:``: ``resnet18``, ``timm:resnet10t``."""
        return self.spec.removeprefix("torchvision:")


ZOO: list[Entry] = [
    # torchvision: the smallest member of each classification family
    Entry("torchvision:alexnet", "AlexNet"),
    Entry("torchvision:vgg11_bn", "VGG-BN"),
    Entry("torchvision:resnet18", "ResNet"),
    Entry("torchvision:resnext50_32x4d", "ResNeXt"),
    Entry("torchvision:wide_resnet50_2", "Wide ResNet"),
    Entry("torchvision:densenet121", "DenseNet"),
    Entry("torchvision:squeezenet1_1", "SqueezeNet"),
    Entry("torchvision:googlenet", "GoogLeNet"),
    Entry("torchvision:inception_v3", "Inception v3", size=75),
    Entry("torchvision:mobilenet_v2", "MobileNetV2"),
    Entry("torchvision:mobilenet_v3_small", "MobileNetV3"),
    Entry("torchvision:mnasnet0_5", "MNASNet"),
    Entry("torchvision:shufflenet_v2_x0_5", "ShuffleNetV2"),
    Entry("torchvision:efficientnet_b0", "EfficientNet"),
    Entry("torchvision:efficientnet_v2_s", "EfficientNetV2"),
    Entry("torchvision:regnet_x_400mf", "RegNetX"),
    Entry("torchvision:regnet_y_400mf", "RegNetY"),
    Entry("torchvision:convnext_tiny", "ConvNeXt"),
    # timm: the same families where timm has them (no AlexNet, SqueezeNet, GoogLeNet, ShuffleNetV2)
    Entry("timm:vgg11_bn", "VGG-BN"),
    Entry("timm:resnet10t", "ResNet"),
    Entry("timm:resnext26ts", "ResNeXt"),
    Entry("timm:wide_resnet50_2", "Wide ResNet"),
    Entry("timm:densenet121", "DenseNet"),
    Entry("timm:inception_v3", "Inception v3", size=75),
    Entry("timm:mobilenetv2_035", "MobileNetV2"),
    Entry("timm:mobilenetv3_small_050", "MobileNetV3"),
    Entry("timm:mnasnet_small", "MNASNet"),
    Entry("timm:efficientnet_b0", "EfficientNet"),
    Entry("timm:tf_efficientnetv2_b0", "EfficientNetV2"),
    Entry("timm:regnetx_002", "RegNetX"),
    Entry("timm:regnety_002", "RegNetY"),
    Entry("timm:convnext_atto", "ConvNeXt"),
]
# the fast suite's sample: residual sums, SE gates and SiLU, LayerNorm and GELU, concatenation
SAMPLE = {"torchvision:resnet18", "torchvision:efficientnet_b0", "torchvision:convnext_tiny", "timm:densenet121"}

IMAGENETTE_VAL = IMAGENETTE / "val"


def images(count: int) -> list[Path]:
    """``count`` real Imagenette validation images, one class after another, in a fixed order
    (the calling test is skipped without ../shared)."""
    if not IMAGENETTE_VAL.is_dir():
        pytest.skip(f"shared data not available: {IMAGENETTE_VAL}")
    folders = sorted(IMAGENETTE_VAL.iterdir())
    per_class = [sorted(folder.glob("*.jpg")) for folder in folders]
    return [per_class[i % len(folders)][i // len(folders)] for i in range(count)]


@functools.cache
def app() -> vizkit.framework.App:
    """The installed plugins, with the timm source registered as its entry point does (a
    checkout not yet reinstalled lacks the entry point)."""
    installed = vizkit.make_app()
    return installed if "timm" in installed.model_sources else vizkit.make_app(extra=[("timm", timm_source)])


def build(entry: Entry) -> nn.Module:
    """The entry's model at random weights (seeded), in eval mode."""
    torch.manual_seed(0)
    return vizkit.load_model(entry.spec, app=app())


def preprocess(entry: Entry) -> vizkit.Preprocess:
    """The entry's small input: shorter side resized to ``size``, centre crop of ``size``."""
    return vizkit.Preprocess(resize=entry.size, crop=entry.size)


@dataclass
class Prepared:
    """A built model, one real image at the entry's size, its deepest spatial layer (the default
    layer), that layer's output and strongest map on the image, and the model's top-1 class."""

    model: nn.Module
    x: torch.Tensor
    layer: str
    activation: torch.Tensor
    channel: int
    top1: int


@functools.lru_cache(maxsize=1)  # one model at a time: the checks of an entry run one after another
def prepared(entry: Entry) -> Prepared:
    """The entry's :class:`Prepared` model and input, built on first use."""
    model = build(entry)
    x = vizkit.load_images(images(1), preprocess(entry))
    with vizkit.instrument(model) as im, torch.no_grad():
        logits = im(x)
        layer = vizkit.toolkit.default_layer(model, im, logits.shape[1])
        activation = im.activation(layer)
    channel = int(activation[0].flatten(1).amax(1).argmax())
    return Prepared(model, x, layer, activation, channel, int(logits[0].argmax()))


# ------------------------------------------------------------------------------- the checks
def check_projection(entry: Entry, candidates: int = 6) -> dict[str, float]:
    """Both projection paths agree under every built-in rule, for a map of the deepest spatial
    layer that the rule projects to something non-zero; returns each rule's relative error.

    The deconvnet and guided rules project the strongest map. The gradient rule takes the
    strongest of the ``candidates`` strongest maps whose autograd projection is not zero: a unit
    held at a ReLU6's ceiling has a gradient of zero (the strongest three maps of timm's
    MobileNetV2-0.35 peak at exactly 6)."""
    p = prepared(entry)
    strongest = p.activation[0].flatten(1).amax(1).argsort(descending=True)[:candidates].tolist()
    errors: dict[str, float] = {}
    with vizkit.instrument(p.model, layers=[p.layer]) as im:
        for rule in RULES:
            for channel in strongest if rule == "gradient" else strongest[:1]:
                autograd = vizkit.project(im, p.x, p.layer, [channel], method="autograd", rule=rule).images
                if autograd.abs().amax() > 0:
                    break
            else:
                raise AssertionError(f"{rule}: the strongest maps all project to zero")
            explicit = vizkit.project(im, p.x, p.layer, [channel], method="explicit", rule=rule).images
            assert torch.isfinite(explicit).all(), rule
            errors[rule] = relative_error(explicit, autograd)
            assert errors[rule] < 1e-5, (rule, channel, errors[rule])
    assert_no_hooks(p.model)
    return errors


OCCLUDER, OCCLUDER_STRIDE = 24, 20  # a 3 x 3 grid at 64 and 75 px


def check_occlusion(entry: Entry) -> vizkit.engine.OcclusionCost:
    """Exact incremental occlusion equals batched full forwards on a 3 x 3 grid: the tracked
    map's activity (to 1e-4 of its largest value) and the top-1 class's probability (to 1e-4).
    Returns the exact run's cost (its bound: what incremental inference can save here)."""
    p = prepared(entry)
    grid = OcclusionGrid(entry.size, entry.size, OCCLUDER, OCCLUDER_STRIDE)
    costs: list[vizkit.engine.OcclusionCost] = []
    with vizkit.instrument(p.model) as im:
        args = (im, p.x, p.layer, torch.tensor([p.channel]), torch.tensor([p.top1]), grid, torch.zeros(3))
        exact = occlusion_maps(*args, mode="exact", costs=costs)
        batched = occlusion_maps(*args, mode="batched")
    activity, reference = exact["feature_activity"], batched["feature_activity"]
    assert np.ptp(reference) > 0, "the occluder never changed the tracked map: nothing was compared"
    scale = max(1.0, float(np.abs(reference).max()))
    assert np.abs(activity - reference).max() <= 1e-4 * scale, np.abs(activity - reference).max() / scale
    assert np.abs(exact["true_class_prob"] - batched["true_class_prob"]).max() <= 1e-4
    assert_no_hooks(p.model)
    return costs[0]


def check_top9(entry: Entry, count: int = 6, k: int = 3) -> None:
    """top9 over ``count`` real images: each map's winners are the brute-force top ``k`` of its
    per-image maximum (three of the maps that fire on at least ``k`` images), with finite, non-zero
    projections."""
    p = prepared(entry)
    paths = images(count)
    with vizkit.instrument(p.model, layers=[p.layer]) as im, torch.no_grad():
        im(vizkit.load_images(paths, preprocess(entry)))
        maxima = im.activation(p.layer).flatten(2).amax(2)  # [images, channels]
    firing = torch.nonzero((maxima > 0).sum(0) >= k).flatten()
    channels = firing[maxima[:, firing].amax(0).argsort(descending=True)[:3]].sort().values.tolist()
    assert channels, "no map fires on enough images"
    result = vizkit.run(
        "top9",
        p.model,
        data=vizkit.data.ImageList(paths=paths, preprocess=preprocess(entry)),
        preprocess=preprocess(entry),
        layer=p.layer,
        channels=",".join(map(str, channels)),
        k=k,
        patch_size=16,
        workers=0,
        pages=1,
        batch_size=count,
        app=app(),
    )
    assert result["channels"] == channels
    expected = maxima[:, channels].t().sort(dim=1, descending=True)
    assert result.arrays["image_index"].tolist() == expected.indices[:, :k].tolist()
    assert np.allclose(result.arrays["values"], expected.values[:, :k].numpy(), rtol=1e-4, atol=1e-5)
    projections = result.arrays["projections"]
    assert np.isfinite(projections).all() and (np.abs(projections).reshape(len(channels), k, -1).max(2) > 0).all()
    assert_no_hooks(p.model)


def check_invariance(entry: Entry) -> None:
    """invariance under translation and rotation (three steps each, plus the identity): the
    identity is at distance 0 with the plain forward's probability, and moving the image moves the
    deep layer."""
    p = prepared(entry)
    result = vizkit.run(
        "invariance",
        p.model,
        images=images(1),
        preprocess=preprocess(entry),
        layers=[p.layer],
        transforms="translate,rotate",
        steps=3,
        range_translate=f"{-entry.size // 4},{entry.size // 4}",
        app=app(),
    )
    with torch.no_grad():
        plain = p.model(p.x).softmax(1)[0]
    assert result["target"] == [p.top1]
    for transform, identity in (("translate", 0.0), ("rotate", 0.0)):
        steps = list(result.arrays[f"{transform}_steps"])
        at = steps.index(identity)
        distance = result.arrays[f"{transform}_distance_{p.layer}"][0]
        assert distance[at] == 0.0 and np.isfinite(distance).all()
        assert distance.max() > 0, transform
        assert result.arrays[f"{transform}_prob"][0, at] == pytest.approx(float(plain[p.top1]), abs=1e-5)
    assert_no_hooks(p.model)


def check_attribution(entry: Entry) -> None:
    """Two of captum's methods through the attribution analysis: finite, non-zero maps of the
    input's shape."""
    p = prepared(entry)
    result = vizkit.run(
        "attribution",
        p.model,
        images=images(1),
        preprocess=preprocess(entry),
        method=",".join(ATTRIBUTION_METHODS),
        deletion_steps=2,
        app=app(),
    )
    for method in ATTRIBUTION_METHODS:
        maps = result.arrays[method]
        assert maps.shape == (1, 3, entry.size, entry.size), method
        assert np.isfinite(maps).all() and np.abs(maps).max() > 0, method
    assert_no_hooks(p.model)


CHECK_FUNCTIONS: dict[str, Callable[[Entry], object]] = {
    "projection": check_projection,
    "occlusion": check_occlusion,
    "top9": check_top9,
    "invariance": check_invariance,
    "attribution": check_attribution,
}


# ------------------------------------------------------------------------------- the tests
def _params() -> list[Any]:
    """(entry, check) in entry-major order, so that each model is built once for its checks;
    entries outside the sample are slow, known failures strict xfails."""
    params = []
    for entry in ZOO:
        for check in CHECKS:
            marks: list[pytest.MarkDecorator] = [] if entry.spec in SAMPLE else [pytest.mark.slow]
            if check in entry.known_failures:
                marks.append(pytest.mark.xfail(strict=True, reason=entry.known_failures[check]))
            params.append(pytest.param(entry, check, marks=marks, id=f"{entry.name}-{check}"))
    return params


@pytest.fixture(autouse=True, scope="module")
def shared_images() -> None:
    """The real images the checks run on (../shared); the module is skipped without them."""
    if not IMAGENETTE_VAL.is_dir():
        pytest.skip(f"shared data not available: {IMAGENETTE_VAL}")


@pytest.fixture(autouse=True, scope="module")
def release_models() -> Iterator[None]:
    """The last model is not kept for the rest of the session."""
    yield
    prepared.cache_clear()


@pytest.mark.parametrize(("entry", "check"), _params())
def test_model_zoo(entry: Entry, check: str) -> None:
    CHECK_FUNCTIONS[check](entry)


def test_the_matrix_covers_every_family_once_per_source() -> None:
    """Every family the issue names is in the matrix from torchvision, and every one timm has
    from timm; no model twice; the sample is part of the matrix and spans both sources."""
    families = {
        "AlexNet", "VGG-BN", "ResNet", "ResNeXt", "Wide ResNet", "DenseNet", "SqueezeNet", "GoogLeNet",
        "Inception v3", "MobileNetV2", "MobileNetV3", "MNASNet", "ShuffleNetV2", "EfficientNet",
        "EfficientNetV2", "RegNetX", "RegNetY", "ConvNeXt",
    }  # fmt: skip
    not_in_timm = {"AlexNet", "SqueezeNet", "GoogLeNet", "ShuffleNetV2"}
    by_source: dict[str, list[str]] = {}
    for entry in ZOO:
        by_source.setdefault(entry.spec.split(":")[0], []).append(entry.family)
    assert sorted(by_source["torchvision"]) == sorted(families)
    assert sorted(by_source["timm"]) == sorted(families - not_in_timm)
    assert len({entry.spec for entry in ZOO}) == len(ZOO)
    assert {entry.spec for entry in ZOO} >= SAMPLE and {s.split(":")[0] for s in SAMPLE} == {"torchvision", "timm"}
    assert all(set(entry.known_failures) <= set(CHECKS) for entry in ZOO)
