"""The featvis core (issue 29): parametrisations round-trip images, colour decorrelation inverts,
transforms reproduce by seed, the optimum on a known filter is that filter's pattern, several
units improve in one batch, and the caller's model is left exactly as it was (also on error)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vizkit
from helpers import assert_no_hooks
from vizkit_plugins.featvis import objectives
from vizkit_plugins.featvis import transforms as T
from vizkit_plugins.featvis.optimize import optimize
from vizkit_plugins.featvis.parametrization import ColorDecorrelation, FourierBasis, ImageParam, Normalize, make_image

pytestmark = pytest.mark.usefixtures("one_thread")  # many small forwards: one thread is faster


def _photo_like(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 0.9 + 0.05  # inside (0, 1): the sigmoid's inverse is finite


@pytest.mark.parametrize("size", [(16, 16), (15, 17), (9, 8)])
@pytest.mark.parametrize("param", ["fourier", "pixel"])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_parametrisations_round_trip_an_image(size, param, decorrelate):
    image = _photo_like((2, 3, *size))
    p = make_image(param, batch=2, size=size, decorrelate=decorrelate)
    back = p.from_image(image).image()
    assert back.shape == image.shape
    assert torch.allclose(back, image, atol=1e-4)
    assert all(t.is_leaf and t.requires_grad for t in p.params)


def test_fourier_parameters_are_the_scaled_spectrum():
    basis = FourierBasis(1, (12, 12), generator=torch.Generator().manual_seed(0))
    raw = basis.raw()
    assert raw.shape == (1, 3, 12, 12)
    # the lowest frequencies carry most of the image's energy at initialisation (1/f scaling)
    spectrum = torch.fft.rfft2(raw.detach()).abs()
    assert spectrum[..., 0, 1].mean() > spectrum[..., 6, 6].mean()
    raw.sum().backward()
    assert basis.spectrum.grad is not None


def test_colour_decorrelation_is_invertible():
    x = torch.randn(2, 3, 5, 6)
    imagenet = ColorDecorrelation.imagenet()
    assert torch.allclose(imagenet.matrix.norm(dim=0).max(), torch.tensor(1.0))
    assert torch.allclose(imagenet.inverse(imagenet.forward(x)), x, atol=1e-5)
    # estimated from images: the matrix is the covariance's Cholesky factor, up to the normalisation
    images = _photo_like((4, 3, 8, 8), seed=1)
    images[:, 0] = 0.7 * images[:, 0] + 0.3 * images[:, 1]  # correlated colours
    estimated = ColorDecorrelation.from_images(images)
    covariance = torch.cov(images.permute(1, 0, 2, 3).reshape(3, -1))
    product = estimated.matrix @ estimated.matrix.T
    assert torch.allclose(product / product[0, 0], covariance / covariance[0, 0], atol=1e-4)
    assert torch.allclose(estimated.inverse(estimated.forward(x)), x, atol=1e-4)
    with pytest.raises(vizkit.UsageError, match="fewer than 3"):
        ColorDecorrelation.from_images(images[:, :1].expand(-1, 3, -1, -1))


def _draws(make, seed: int, image: torch.Tensor, n: int = 6) -> list[torch.Tensor]:
    transform = make(torch.Generator().manual_seed(seed))
    return [transform(image) for _ in range(n)]


@pytest.mark.parametrize(
    "make",
    [
        lambda g: T.Jitter(4, g),
        lambda g: T.Scale([0.8, 0.9, 1.1, 1.2], g),
        lambda g: T.Rotate(list(range(-20, 21, 5)), g),
        lambda g: T.build("standard", g),
    ],
    ids=["jitter", "scale", "rotate", "standard"],
)
def test_each_transform_reproduces_by_seed(make):
    image = _photo_like((1, 3, 20, 20))
    first, again, other = _draws(make, 0, image), _draws(make, 0, image), _draws(make, 1, image)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(first, other))
    assert not all(a.shape == image.shape and torch.equal(a, image) for a in first)  # it does something


def test_padding_and_compose():
    image = _photo_like((1, 3, 6, 6))
    constant = T.Pad(2)(image)
    assert constant.shape == (1, 3, 10, 10) and torch.all(constant[..., 0, :] == 0.5)
    reflect = T.Pad(2, mode="reflect")(image)
    assert torch.equal(reflect[..., 0, 2:-2], image[..., 2, :])
    chained = T.compose(T.Pad(2), T.Jitter(1, torch.Generator().manual_seed(0)))(image)
    assert chained.shape == (1, 3, 10, 10)
    with pytest.raises(vizkit.UsageError, match="unknown transform"):
        T.build("jitter,spin")
    with pytest.raises(vizkit.UsageError, match="padding mode"):
        T.Pad(2, mode="wrap")


def _edge_and_colour_model() -> nn.Module:
    """One 7x7 conv: channel 0 a vertical edge (dark left, bright right, every colour), channel 1
    "red minus the other colours" everywhere in its window."""
    conv = nn.Conv2d(3, 2, 7, bias=False)
    with torch.no_grad():
        edge = torch.zeros(7, 7)
        edge[:, :3], edge[:, 4:] = -1.0, 1.0
        conv.weight[0] = edge.expand(3, 7, 7)
        conv.weight[1] = torch.tensor([1.0, -0.5, -0.5]).view(3, 1, 1).expand(3, 7, 7)
    return nn.Sequential(conv)


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_the_optimum_of_a_known_filter_is_its_pattern(param):
    model = _edge_and_colour_model()
    found = optimize(model, "0", [0], objective="neuron", steps=60, param=param, transforms=None, size=15, lr=0.1)
    image = found.images[0]
    centre = image[:, 4:11, 4:11]  # the centre neuron's 7x7 window of the 15 px image (9x9 map, centre 4)
    weight = model[0].weight[0]
    correlation = torch.corrcoef(torch.stack([centre.flatten(), weight.flatten()]))[0, 1]
    assert correlation > 0.8, correlation
    assert found.reached[0] > found.objective[0, 0]

    colour = optimize(model, "0", [1], objective="channel", steps=80, param=param, size=16, lr=0.1)
    red, green, blue = colour.images[0].mean(dim=(1, 2))
    assert red > 0.6 and red - max(green, blue) > 0.3, (red, green, blue)  # red, not the others


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    )


def _state(model: nn.Module) -> tuple[dict, list[bool], list[bool]]:
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    return weights, [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _assert_unchanged(model: nn.Module, before: tuple[dict, list[bool], list[bool]]) -> None:
    weights, modes, flags = _state(model)
    assert weights.keys() == before[0].keys()
    assert all(torch.equal(weights[name], before[0][name]) for name in weights)
    assert modes == before[1] and flags == before[2]
    assert_no_hooks(model)


def test_several_units_in_one_batch_each_improve_and_the_model_is_left_alone():
    model = _small_net()
    model.train()  # the BatchNorm's running stats must not move
    model[0].bias.requires_grad_(False)
    model[3].eval()
    before = _state(model)
    found = optimize(model, "3", [0, 2, 5], steps=30, size=16, lr=0.1, regularize="l2,tv,blur,clip")
    assert found.images.shape == (3, 3, 16, 16) and found.objective.shape == (30, 3)
    assert found.images.min() >= 0 and found.images.max() <= 1
    assert torch.all(found.reached > found.objective[0]), (found.reached, found.objective[0])
    _assert_unchanged(model, before)

    logits = optimize(model, None, [1, 3], objective="logit", steps=20, size=16, lr=0.1)
    assert torch.all(logits.reached > logits.objective[0])
    _assert_unchanged(model, before)

    with vizkit.instrument(model) as im:  # an instrumented model is reused as it is
        again = optimize(im, "3", [0, 2, 5], steps=30, size=16, lr=0.1, regularize="l2,tv,blur,clip")
    assert torch.equal(again.images, found.images)  # same seed, same result
    _assert_unchanged(model, before)


def test_the_model_is_left_alone_when_the_objective_raises(monkeypatch):
    model = _small_net()
    before = _state(model)

    def broken(activation, units):
        raise RuntimeError("objective failed")

    monkeypatch.setitem(objectives.OBJECTIVES, "channel", broken)
    with pytest.raises(RuntimeError, match="objective failed"):
        optimize(model, "3", [0], steps=3, size=8)
    _assert_unchanged(model, before)
    with pytest.raises(vizkit.UnknownLayerError):
        optimize(model, "nope", [0], steps=3, size=8)
    _assert_unchanged(model, before)


def test_direction_and_diversity():
    model = _small_net().eval()
    directions = torch.eye(6)[:2] + 0.5
    found = optimize(model, "3", directions, objective="direction", steps=15, size=12, lr=0.1)
    assert found.images.shape == (2, 3, 12, 12)
    assert torch.all(found.reached > found.objective[0])

    diverse = optimize(model, "3", [0, 1], steps=15, size=12, diversity=2, diversity_weight=5.0)
    assert diverse.images.shape == (4, 3, 12, 12) and diverse.objective.shape == (15, 4)
    assert not torch.allclose(diverse.images[0], diverse.images[1], atol=1e-3)
    # the term works: the same start, weighted, ends with less similar pictures than unweighted
    plain = optimize(model, "3", [0, 1], steps=30, size=12, diversity=3, diversity_weight=0.0, transforms=None)
    pushed = optimize(model, "3", [0, 1], steps=30, size=12, diversity=3, diversity_weight=5.0, transforms=None)
    normalise = Normalize.of(vizkit.Preprocess())
    with torch.no_grad():

        def similarity(images: torch.Tensor) -> float:  # mean Gram cosine to the unit's 2 others, up to 2
            return float(objectives.gram_similarity(model[:4](normalise.forward(images)), 3).mean())

        assert similarity(plain.images) > 1.9 and similarity(pushed.images) < 1.5
    same = torch.ones(2, 4, 3, 3)
    assert torch.allclose(objectives.gram_similarity(same, 2), torch.ones(2))
    assert torch.equal(objectives.gram_similarity(same, 1), torch.zeros(2))


def test_bad_options_are_usage_errors():
    model = _small_net()
    for kwargs, message in [
        ({"objective": "mean"}, "unknown objective"),
        ({"param": "wavelet"}, "unknown parametrisation"),
        ({"regularize": "l3"}, "unknown regulariser"),
        ({"transforms": "spin"}, "unknown transform"),
        ({"steps": 0}, "steps"),
    ]:
        with pytest.raises(vizkit.UsageError, match=message):
            optimize(model, "3", [0], size=8, **kwargs)
    assert isinstance(make_image("pixel", 1, 4), ImageParam)
    assert_no_hooks(model)
