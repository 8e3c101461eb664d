"""Probabilistic max-pooling (Lee, Grosse, Ranganath & Ng, ICML 2009) as an op.

The probabilities are checked against a brute-force sum over each cell's 2^n binary
configurations; the switches (argmax, expected, sampled) against a hand computation, against
each other (the expected switches are the mean of the sampled ones) and across the two projection
paths; the switch mode's scoping; incremental occlusion through the op; and the deconvnet
analysis's ``--switches`` option, from Python and from the command line.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vizkit
from helpers import assert_no_hooks, cli
from vizkit.engine import ProbMaxPool2d, SwitchMode, prob_max_pool2d, prob_max_pool_probabilities, switch_mode
from vizkit.engine.ops import ProbabilisticMaxPool, ProbPoolSwitches
from vizkit.engine.ops.probpool import current_switch_mode, pool_cells, spread_weights

KINDS = ["argmax", "expected", "sampled"]
RULES = ["deconvnet", "guided", "gradient"]
IMAGE = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


# ------------------------------------------------------------------------ references
def brute_force_cell(inputs: list[float]) -> tuple[list[float], float]:
    """P(h_j = 1) for each unit of one cell and P(p = 1), by summing exp(-E) over the cell's
    2^n binary configurations, E = -sum_j h_j I_j, those with more than one unit on excluded
    (probability 0). Shifted by the largest allowed exponent, so +-1000 stays finite."""
    n = len(inputs)
    allowed = [h for h in itertools.product((0, 1), repeat=n) if sum(h) <= 1]
    exponents = [sum(hj * ij for hj, ij in zip(h, inputs)) for h in allowed]
    top = max(exponents)
    weights = [math.exp(e - top) for e in exponents]
    z = sum(weights)
    detection = [sum(w for h, w in zip(allowed, weights) if h[j]) / z for j in range(n)]
    pooled = sum(w for h, w in zip(allowed, weights) if any(h)) / z
    return detection, pooled


def brute_force(inputs: Tensor, kernel: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """:func:`prob_max_pool_probabilities` by plain loops over the cells of [N, C, H, W] inputs:
    a unit outside every whole cell is a cell of its own (on with probability sigmoid(I))."""
    n, c, h, w = inputs.shape
    kh, kw = kernel
    detection = torch.empty_like(inputs)
    pooled = torch.empty((n, c, h // kh, w // kw), dtype=inputs.dtype)
    for b, ch in itertools.product(range(n), range(c)):
        for y, x in itertools.product(range(h), range(w)):  # the units no cell holds
            if y >= (h // kh) * kh or x >= (w // kw) * kw:
                detection[b, ch, y, x] = brute_force_cell([float(inputs[b, ch, y, x])])[0][0]
        for r, col in itertools.product(range(h // kh), range(w // kw)):
            where = [(r * kh + i, col * kw + j) for i in range(kh) for j in range(kw)]  # row-major
            probabilities, on = brute_force_cell([float(inputs[b, ch, y, x]) for y, x in where])
            for (y, x), p in zip(where, probabilities):
                detection[b, ch, y, x] = p
            pooled[b, ch, r, col] = on
    return detection, pooled


def pooled_net(mixed: bool = False, seed: int = 0) -> nn.Sequential:
    """conv -> probabilistic pool -> conv -> probabilistic pool ("0" .. "3"); ``mixed``: ReLUs and
    an ordinary max-pool between them, and a 1x2 probabilistic pool on top ("0" .. "7")."""
    torch.manual_seed(seed)
    if not mixed:
        return nn.Sequential(nn.Conv2d(3, 4, 3), ProbMaxPool2d(2), nn.Conv2d(4, 5, 3), ProbMaxPool2d(2)).eval()
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        ProbMaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(5, 6, 3),
        ProbMaxPool2d((1, 2)),
    ).eval()


def plain_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3)).eval()


def randn(*shape: int, seed: int = 1, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------ the probabilities
@pytest.mark.parametrize(
    "kernel,shape",
    [((2, 2), (2, 3, 6, 8)), ((3, 3), (1, 2, 6, 9)), ((1, 2), (2, 2, 3, 6))],
    ids=["2x2", "3x3", "1x2"],
)
def test_probabilities_equal_a_brute_force_sum_over_each_cells_configurations(kernel, shape):
    inputs = randn(*shape, scale=2.0)
    detection, pooled = prob_max_pool_probabilities(inputs, kernel)
    want_detection, want_pooled = brute_force(inputs, kernel)
    assert detection.dtype == pooled.dtype == torch.float64
    assert detection.shape == inputs.shape and pooled.shape == want_pooled.shape
    torch.testing.assert_close(detection, want_detection, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(pooled, want_pooled, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(prob_max_pool2d(inputs, kernel), want_pooled, rtol=1e-12, atol=1e-14)
    # P(p = 1) is the cell's sum of P(h_j = 1): at most one unit is on
    torch.testing.assert_close(pool_cells(detection, kernel).sum(-1), pooled, rtol=1e-12, atol=1e-14)


def test_rows_and_columns_past_the_last_whole_cell_are_sigmoids_and_not_pooled():
    inputs = randn(2, 3, 7, 5)
    detection, pooled = prob_max_pool_probabilities(inputs, 2)
    assert pooled.shape == (2, 3, 3, 2)  # floor(H / 2), floor(W / 2)
    assert prob_max_pool2d(inputs, 3).shape == (2, 3, 2, 1)
    torch.testing.assert_close(detection[..., 6, :], torch.sigmoid(inputs[..., 6, :]))
    torch.testing.assert_close(detection[..., :, 4], torch.sigmoid(inputs[..., :, 4]))
    # the last row and column reach no pooling unit: changing them changes none
    changed = inputs.clone()
    changed[..., 6, :] += 5.0
    changed[..., :, 4] -= 5.0
    torch.testing.assert_close(prob_max_pool2d(changed, 2), pooled, rtol=0, atol=0)
    torch.testing.assert_close(detection, brute_force(inputs, (2, 2))[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_very_large_inputs_stay_finite_and_correct(dtype):
    cells_ = [
        [1000.0, -1000.0, 0.0, 999.0],
        [-1000.0, -1000.0, -1000.0, -1000.0],
        [1000.0, 1000.0, 1000.0, 1000.0],
        [-1000.0, 0.0, 1000.0, -3.0],
    ]
    inputs = torch.tensor(cells_, dtype=dtype).reshape(4, 1, 2, 2)
    inputs = torch.cat([inputs, torch.tensor([1000.0, -1000.0], dtype=dtype).reshape(1, 1, 2, 1).expand(4, 1, 2, 1)], 3)
    detection, pooled = prob_max_pool_probabilities(inputs, 2)
    assert bool(torch.isfinite(detection).all()) and bool(torch.isfinite(pooled).all())
    want_detection, want_pooled = brute_force(inputs.double(), (2, 2))
    tolerance = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-7}
    torch.testing.assert_close(detection.double(), want_detection, **tolerance)
    torch.testing.assert_close(pooled.double(), want_pooled, **tolerance)
    assert pooled[:, 0, 0, 0].tolist() == pytest.approx([1.0, 0.0, 1.0, 1.0])
    assert detection[2, 0, :, :2].flatten().tolist() == pytest.approx([0.25] * 4)
    assert detection[:, 0, :, 2].flatten().tolist() == pytest.approx([1.0, 0.0] * 4)  # sigmoid(+-1000)
    # the switches too: no NaN in the conditional probabilities, argmax on the largest input
    conditional, indices, _ = spread_weights(inputs, (2, 2), SwitchMode("expected"))
    assert bool(torch.isfinite(conditional).all())
    torch.testing.assert_close(conditional.sum(-1), torch.ones_like(conditional[..., 0]))
    assert indices[[0, 3], 0, 0, 0].tolist() == [0, 3]  # flat indices into the 2x3 plane


def test_float64_switches_are_computed_in_float64():
    """The conditional probabilities of a float64 model are not rounded to float32, and the
    argmax is the largest input even where float32 probabilities would tie."""
    inputs = torch.tensor([[[[0.0, 1e-12], [-1.0, -2.0]]]], dtype=torch.float64)
    conditional, indices, weights = spread_weights(inputs, (2, 2), SwitchMode("argmax"))
    torch.testing.assert_close(conditional, pool_cells(inputs, (2, 2)).softmax(-1), rtol=1e-15, atol=0)
    assert conditional[0, 0, 0, 0, 1] > conditional[0, 0, 0, 0, 0]
    assert indices.flatten().tolist() == [1] and weights.flatten().tolist() == [0.0, 1.0, 0.0, 0.0]


def test_stride_other_than_the_kernel_and_bad_kernels_are_refused():
    x = randn(1, 2, 6, 6)
    for call in (
        lambda: prob_max_pool2d(x, 2, 1),
        lambda: prob_max_pool2d(x, 2, (2, 1)),
        lambda: prob_max_pool_probabilities(x, 3, 2),
        lambda: prob_max_pool2d(x, 0),
        lambda: ProbMaxPool2d((2, 2, 2)),
    ):
        with pytest.raises(ValueError):
            call()
    torch.testing.assert_close(prob_max_pool2d(x, 2, 2), prob_max_pool2d(x, 2), rtol=0, atol=0)
    torch.testing.assert_close(prob_max_pool2d(x, 2, (2, 2)), prob_max_pool2d(x, 2), rtol=0, atol=0)


def test_the_module_equals_the_functional():
    x = randn(2, 3, 9, 8)
    assert torch.equal(ProbMaxPool2d(2)(x), prob_max_pool2d(x, 2))
    assert torch.equal(ProbMaxPool2d((1, 2))(x), prob_max_pool2d(x, (1, 2)))
    assert torch.equal(ProbMaxPool2d(3)(x), prob_max_pool_probabilities(x, 3)[1])
    assert ProbMaxPool2d((1, 2)).kernel_size == (1, 2) and "probabilistic" in repr(ProbMaxPool2d(2))


# ------------------------------------------------------------------------ recording and projecting
@pytest.mark.parametrize("mixed", [False, True], ids=["prob-pools", "mixed"])
@pytest.mark.parametrize("kind", KINDS)
def test_explicit_and_autograd_projections_agree_in_every_switch_mode(kind, mixed):
    model = pooled_net(mixed).double()
    x = randn(2, 3, 21, 22, seed=2)
    top = "7" if mixed else "3"
    rules = RULES if mixed else ["deconvnet"]  # a ReLU to cross: each rule
    with switch_mode(kind, seed=4) as mode, vizkit.instrument(model) as im:
        out = im(x)
        torch.testing.assert_close(out, model(x), rtol=0, atol=0)  # the forward is the model's own
        for rule, target in itertools.product(rules, ["max", "map"]):
            auto = vizkit.engine.project(im, x, top, [0, 2], target=target, method="autograd", rule=rule)
            explicit = vizkit.engine.project(im, x, top, [0, 2], target=target, method="explicit", rule=rule)
            assert float(auto.images.abs().amax()) > 0
            torch.testing.assert_close(explicit.images, auto.images, rtol=1e-10, atol=1e-12 * auto.images.abs().max())
            torch.testing.assert_close(explicit.values, auto.values, rtol=0, atol=0)
    assert mode.uses > 0
    assert_no_hooks(model)


def test_a_float32_model_agrees_too_and_the_modes_project_differently():
    model, x = pooled_net(mixed=True), randn(1, 3, 24, 24, seed=3, dtype=torch.float32)
    images, values = {}, {}
    for kind in KINDS:
        with switch_mode(kind), vizkit.instrument(model) as im:
            im(x)
            auto = vizkit.engine.project(im, x, "6", [1], method="autograd")
            explicit = vizkit.engine.project(im, x, "6", [1], method="explicit")
        scale = float(auto.images.abs().max())
        assert scale > 0 and float((explicit.images - auto.images).abs().max()) <= 1e-5 * scale
        images[kind], values[kind] = auto.images, auto.values
    assert not torch.allclose(images["argmax"], images["expected"])
    assert torch.equal(values["argmax"], values["expected"]) and torch.equal(values["argmax"], values["sampled"])
    assert_no_hooks(model)


def test_the_pools_are_listed_and_their_switches_recorded():
    model, x = pooled_net(mixed=True).double(), randn(2, 3, 20, 21, seed=5)
    with switch_mode("expected"), vizkit.instrument(model) as im:
        im(x)
        assert im.pools == ["2", "5", "7"]  # two probabilistic, one ordinary max-pool
        assert im.info("2").has_switches and im.info("7").has_switches
        for layer, below, kernel in (("2", "1", (2, 2)), ("7", "6", (1, 2))):
            inputs = im.activation(below)
            switches = im.pool_switches(layer)
            assert isinstance(switches, ProbPoolSwitches) and switches.kind == "expected"
            assert switches.input_shape == tuple(inputs.shape) and switches.window.kernel == kernel
            assert switches.window.stride == kernel
            blocks = pool_cells(inputs, kernel)
            torch.testing.assert_close(switches.conditional, blocks.softmax(-1), rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(switches.weights, switches.conditional, rtol=0, atol=0)
            # the indices: each cell's largest input, as a flat index into the input's plane
            best = blocks.argmax(-1)
            rows = torch.arange(blocks.shape[2]).view(-1, 1) * kernel[0] + best // kernel[1]
            cols = torch.arange(blocks.shape[3]).view(1, -1) * kernel[1] + best % kernel[1]
            assert torch.equal(im.switches(layer), rows * inputs.shape[-1] + cols)
            gathered = inputs.flatten(2).gather(2, im.switches(layer).flatten(2))
            torch.testing.assert_close(gathered, blocks.amax(-1).flatten(2), rtol=0, atol=0)
            torch.testing.assert_close(im.activation(layer), prob_max_pool2d(inputs, kernel), rtol=0, atol=0)
        ordinary = im.pool_switches("5")
        assert not isinstance(ordinary, ProbPoolSwitches)
        assert torch.equal(ordinary.indices, F.max_pool2d(im.activation("4"), 2, return_indices=True)[1])
    assert_no_hooks(model)


def test_the_argmax_indices_equal_a_max_pools_on_the_same_inputs():
    model, x = pooled_net().double(), randn(2, 3, 17, 18, seed=6)
    with vizkit.instrument(model) as im:
        im(x)
        assert im.pools == ["1", "3"]
        for layer, below in (("1", "0"), ("3", "2")):
            expected = F.max_pool2d(im.activation(below), 2, return_indices=True)[1]
            assert torch.equal(im.switches(layer), expected)
            assert im.pool_switches(layer).kind == "argmax"  # outside any switch_mode block
    assert_no_hooks(model)


def _unpool_by_hand(kind: str, inputs: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A one-pool model's projection of its only pooling unit, by both paths: [2, 1, H, W]."""
    model = nn.Sequential(ProbMaxPool2d(2)).eval()
    images = []
    with switch_mode(kind, seed=seed), vizkit.instrument(model) as im:
        im(inputs)
        for method in ("explicit", "autograd"):
            projection = vizkit.engine.project(im, inputs, "0", [0], method=method)
            images.append(projection.images[0, 0])
    assert_no_hooks(model)
    return torch.stack(images), projection.values[0, 0]


def test_unpooling_one_cell_by_hand():
    inputs = torch.tensor([[[[0.5, 2.0], [-1.0, 1.0]]]], dtype=torch.float64)
    flat = inputs.flatten()
    signal = 1 - 1 / (1 + flat.exp().sum())  # P(p = 1), the pooling unit's value: the seed
    softmax = flat.exp() / flat.exp().sum()  # P(h_j = 1 | p = 1): no "off" state
    images, value = _unpool_by_hand("expected", inputs)
    torch.testing.assert_close(value, signal, rtol=1e-14, atol=0)
    for image in images:
        torch.testing.assert_close(image.flatten(), signal * softmax, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(image.sum(), signal, rtol=1e-12, atol=0)
    images, _ = _unpool_by_hand("argmax", inputs)
    for image in images:
        assert image.flatten().tolist() == pytest.approx([0.0, float(signal), 0.0, 0.0], abs=1e-15)
    chosen = set()
    for seed in range(40):
        images, _ = _unpool_by_hand("sampled", inputs, seed)
        assert torch.equal(images[0], images[1])  # both paths draw the same unit
        (on,) = images[0].flatten().nonzero().flatten().tolist()  # all of it on one unit
        torch.testing.assert_close(images[0].flatten()[on], signal, rtol=1e-14, atol=0)
        chosen.add(on)
    assert len(chosen) >= 2 and 1 in chosen  # a draw, not the argmax every time


def test_unpooling_leaves_the_units_outside_every_cell_at_zero():
    inputs = randn(1, 1, 5, 5, seed=7)
    model = nn.Sequential(ProbMaxPool2d(2)).eval()
    with switch_mode("expected"), vizkit.instrument(model) as im:
        im(inputs)
        for method in ("explicit", "autograd"):
            image = vizkit.engine.project(im, inputs, "0", [0], target="map", method=method).images[0, 0, 0]
            assert bool((image[4, :] == 0).all()) and bool((image[:, 4] == 0).all())
            pooled = prob_max_pool2d(inputs, 2)[0, 0]
            spread = pool_cells(inputs, (2, 2)).softmax(-1)[0, 0] * pooled.unsqueeze(-1)
            torch.testing.assert_close(pool_cells(image[None, None], (2, 2))[0, 0], spread, rtol=1e-12, atol=1e-15)
    assert_no_hooks(model)


# ------------------------------------------------------------------------ sampled and expected switches
def test_the_expected_switches_are_the_mean_of_the_sampled_ones():
    inputs = randn(2, 3, 6, 6, seed=8, scale=1.5)  # 2 x 3 x 9 cells of 4 units
    expected_ = spread_weights(inputs, (2, 2), SwitchMode("expected"))[2]
    total = torch.zeros_like(expected_)
    seeds = 2000
    for seed in range(seeds):
        conditional, _, weights = spread_weights(inputs, (2, 2), SwitchMode("sampled", seed))
        total += weights
    assert torch.equal(conditional, expected_)
    mean = total / seeds
    # each entry is a mean of 2000 Bernoulli draws: standard error at most 0.011
    assert float((mean - expected_).abs().max()) < 0.06
    assert float((mean - expected_).abs().mean()) < 0.012
    assert bool((mean[expected_ > 0.01] > 0).all())  # every unit with a real chance was drawn
    assert bool((expected_[mean > 0] > 0).all())


def test_the_recorded_sampled_switches_are_one_hot_and_reproducible():
    model, x = pooled_net().double(), randn(1, 3, 30, 30, seed=9)

    def record(seed: int) -> tuple[ProbPoolSwitches, Tensor, Tensor]:
        with switch_mode("sampled", seed=seed), vizkit.instrument(model) as im:
            im(x)
            switches = im.pool_switches("1")
            assert isinstance(switches, ProbPoolSwitches) and switches.kind == "sampled"
            image = vizkit.engine.project(im, x, "3", [0, 1], method="explicit").images
            return switches, im.activation("0"), image

    first, inputs, image = record(3)
    assert first.weights is not None and first.conditional is not None
    weights = first.weights
    assert set(weights.unique().tolist()) == {0.0, 1.0} and bool((weights.sum(-1) == 1).all())
    assert bool((first.conditional[weights == 1] > 0).all())
    assert torch.equal(weights, spread_weights(inputs, (2, 2), SwitchMode("sampled", 3))[2])  # what the op ran
    again, _, image_again = record(3)
    assert torch.equal(again.weights, weights) and torch.equal(image_again, image)
    other, _, image_other = record(4)
    assert not torch.equal(other.weights, weights) and not torch.equal(image_other, image)
    assert torch.equal(other.indices, first.indices)  # the most probable unit does not depend on the draw
    assert_no_hooks(model)


# ------------------------------------------------------------------------ the switch mode's scope
def test_the_mode_is_argmax_outside_any_block_and_restored_after_one():
    assert current_switch_mode().kind == "argmax"
    with switch_mode("expected", seed=2) as outer:
        assert current_switch_mode() is outer and (outer.kind, outer.seed, outer.uses) == ("expected", 2, 0)
        with switch_mode("sampled", seed=5) as inner:
            assert current_switch_mode() is inner and inner.seed == 5
        assert current_switch_mode() is outer
        with pytest.raises(RuntimeError, match="inside"), switch_mode("argmax"):
            assert current_switch_mode().kind == "argmax"
            raise RuntimeError("inside")
        assert current_switch_mode() is outer
        with pytest.raises(ValueError, match="switches must be one of"), switch_mode("nosuch"):
            pass  # pragma: no cover
        assert current_switch_mode() is outer
    assert current_switch_mode().kind == "argmax"
    with pytest.raises(ValueError, match="argmax, expected, sampled"), switch_mode("Expected"):
        pass  # pragma: no cover


def test_projections_outside_a_block_use_argmax_switches():
    model, x = pooled_net().double(), randn(1, 3, 20, 20, seed=10)
    with vizkit.instrument(model) as im:
        im(x)
        plain = vizkit.engine.project(im, x, "3", [0], method="explicit").images
        with switch_mode("argmax"):
            argmax = vizkit.engine.project(im, x, "3", [0], method="explicit").images
        with switch_mode("expected"):
            expected_ = vizkit.engine.project(im, x, "3", [0], method="explicit").images
        again = vizkit.engine.project(im, x, "3", [0], method="autograd").images
    assert torch.equal(plain, argmax) and not torch.allclose(plain, expected_)
    torch.testing.assert_close(again, plain, rtol=1e-10, atol=1e-14)
    assert_no_hooks(model)


def test_uses_counts_the_probabilistic_pools_that_served():
    x = randn(1, 3, 20, 20, seed=11, dtype=torch.float32)
    with switch_mode("expected") as mode:
        model = plain_net()
        model(x)
        with vizkit.instrument(model) as im:
            im(x)
            vizkit.engine.project(im, x, "3", [0], method="explicit")
            vizkit.engine.project(im, x, "3", [0], method="autograd")
        assert mode.uses == 0  # no probabilistic pool: nothing to serve
        pooled = pooled_net()
        pooled(x)
        assert mode.uses == 0  # a plain forward records nothing
        with vizkit.instrument(pooled) as im:
            im(x)
            assert mode.uses == 2  # the recording forward: two pools
            vizkit.engine.project(im, x, "3", [0], method="explicit")
            assert mode.uses == 4
            vizkit.engine.project(im, x, "0", [0], method="autograd")  # from below both pools
            assert mode.uses == 4
    assert_no_hooks(model)
    assert_no_hooks(pooled)


def test_hooks_are_removed_also_after_an_error_inside_a_block():
    model, x = pooled_net(), randn(1, 3, 20, 20, seed=12, dtype=torch.float32)
    with pytest.raises(vizkit.VizkitError), switch_mode("sampled"), vizkit.instrument(model) as im:
        im(x)
        vizkit.engine.project(im, x, "nosuch", [0])
    assert_no_hooks(model)
    assert current_switch_mode().kind == "argmax"


def test_the_op_is_registered_under_its_calls_name():
    op = vizkit.engine.op_of(prob_max_pool2d)
    assert isinstance(op, ProbabilisticMaxPool) and op.name == "prob_max_pool2d" and op.layer
    assert vizkit.engine.ops.op_of_module(ProbMaxPool2d(2)) is op


# ------------------------------------------------------------------------ incremental occlusion
class _Classifier(nn.Module):
    """conv (padded) -> probabilistic pool -> relu -> conv -> probabilistic pool (1x2) -> mean -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.pool1 = nn.Conv2d(3, 4, 3, padding=1), ProbMaxPool2d(2)
        self.conv2, self.pool2 = nn.Conv2d(4, 5, 3), ProbMaxPool2d((1, 2))
        self.fc = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool2(self.conv2(torch.relu(self.pool1(self.conv1(x)))))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("layer", ["pool1", "pool2"])
def test_incremental_occlusion_through_probabilistic_pools_equals_full_forwards(layer):
    model = _Classifier().eval()
    x = randn(1, 3, 23, 21, seed=13, dtype=torch.float32)  # odd sizes: rows and columns left over
    size, fill = 5, torch.tensor([0.5, -1.0, 2.0])
    corners = [(0, 0), (3, 7), (9, 2), (18, 16), (17, 0), (0, 16), (11, 11)]
    module = dict(model.named_modules())[layer]
    captured: dict[str, Tensor] = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.update(a=o.detach().clone()))
    try:
        with torch.no_grad():
            reference = []
            for y0, x0 in corners:
                occluded = x.clone()
                occluded[:, :, y0 : y0 + size, x0 : x0 + size] = fill.view(1, 3, 1, 1)
                reference.append((model(occluded), captured["a"]))
    finally:
        handle.remove()
    logits_ref = torch.cat([r[0] for r in reference])
    layer_ref = torch.cat([r[1] for r in reference])
    with vizkit.instrument(model) as im, torch.no_grad():
        assert im(x).shape == (1, 3) and im.pools == ["pool1", "pool2"]
        engine = vizkit.engine.IncrementalOcclusion(im, x, layer)
        logits, layer_out = engine.evaluate(corners, size, fill)
        sums = engine.evaluate(corners, size, fill, channel=1)[1]
    assert engine.cost.whole_maps == [], [entry.layer for entry in engine.cost.whole_maps]  # slid, not redone
    assert engine.cost.bound > 1.0  # fewer multiply-adds than full forwards
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer_out, layer_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sums, layer_ref[:, 1].flatten(1).sum(1), rtol=1e-5, atol=1e-5)
    assert_no_hooks(model)


# ------------------------------------------------------------------------ the deconvnet analysis's --switches
def _projected(model: nn.Module, x: Tensor, layer: str, channels: list[int], kind: str, seed: int = 0) -> np.ndarray:
    with switch_mode(kind, seed=seed), vizkit.instrument(model) as im:
        im(x)
        images = vizkit.engine.project(im, x, layer, channels).images
    return images[0].float().numpy()


def test_the_deconvnet_analysis_projects_by_the_switches_asked_for():
    model, x = pooled_net(mixed=True), randn(1, 3, 26, 26, seed=14, dtype=torch.float32)
    results = {}
    for kind in KINDS:
        result = vizkit.run("deconvnet", model, images=x, layer="6", top=3, switches=kind, seed=7)
        assert result["switches"] == kind and result.meta["params"]["switches"] == kind
        channels = result["channels"]
        np.testing.assert_allclose(
            result.arrays["projections"], _projected(model, x, "6", channels, kind, seed=7), rtol=1e-6, atol=1e-9
        )
        results[kind] = result.arrays["projections"]
        assert_no_hooks(model)
    assert not np.allclose(results["argmax"], results["expected"])
    assert not np.allclose(results["sampled"], results["expected"])
    default = vizkit.run("deconvnet", model, images=x, layer="6", top=3)
    assert default["switches"] == "argmax"
    np.testing.assert_array_equal(default.arrays["projections"], results["argmax"])
    reseeded = vizkit.run("deconvnet", model, images=x, layer="6", top=3, switches="sampled", seed=8)
    np.testing.assert_allclose(
        reseeded.arrays["projections"], _projected(model, x, "6", channels, "sampled", seed=8), rtol=1e-6, atol=1e-9
    )
    assert not np.allclose(reseeded.arrays["projections"], results["sampled"])


def test_switches_on_a_model_without_probabilistic_pools_is_a_usage_error():
    model = plain_net()
    x = randn(1, 3, 20, 20, seed=15, dtype=torch.float32)
    for kind in ("expected", "sampled"):
        with pytest.raises(vizkit.UsageError, match=f"--switches {kind} applies to probabilistic max-pooling"):
            vizkit.run("deconvnet", model, images=x, layer="3", top=1, switches=kind)
        assert_no_hooks(model)
    assert vizkit.run("deconvnet", model, images=x, layer="3", top=1, switches="argmax")["switches"] == "argmax"


def test_switches_from_below_every_probabilistic_pool_change_nothing_and_say_so(capsys):
    model, x = pooled_net(), randn(1, 3, 20, 20, seed=16, dtype=torch.float32)
    argmax = vizkit.run("deconvnet", model, images=x, layer="0", top=2)
    capsys.readouterr()
    expected_ = vizkit.run("deconvnet", model, images=x, layer="0", top=2, switches="expected")
    assert "--switches expected changes nothing from layer '0'" in capsys.readouterr().err
    np.testing.assert_array_equal(expected_.arrays["projections"], argmax.arrays["projections"])


_SPEC = """
import torch
from torch import nn
from vizkit.engine import ProbMaxPool2d


def plain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3))


def probabilistic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), ProbMaxPool2d(2), nn.Conv2d(4, 5, 3), ProbMaxPool2d(2))
"""


def _deconvnet_argv(spec: str, out: Path, *extra: str) -> list:
    inputs = ["--model", spec, "--image", IMAGE, "--resize", "32", "--crop", "32"]
    return ["run", "deconvnet", *inputs, "--layer", "3", "--top", "2", "--out", out, "--quiet", *extra]


def test_the_cli_refuses_switches_on_a_model_without_probabilistic_pools(capsys, tmp_path):
    models = tmp_path / "models.py"
    models.write_text(_SPEC)
    out = tmp_path / "plain"
    code, stdout, err = cli(capsys, *_deconvnet_argv(f"{models}:plain", out, "--switches", "expected"))
    assert code == 2, (code, stdout, err)
    assert "Traceback" not in stdout + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vizkit: error: --switches expected applies to"), err
    assert "has none" in lines[0] and "argmax switches" in lines[0]
    assert not out.exists() or not any(out.iterdir())  # no result files written
    code, _, err = cli(capsys, *_deconvnet_argv(f"{models}:plain", out, "--switches", "nosuch"))
    assert code == 2 and "argmax" in err and "expected" in err and "sampled" in err


def test_the_cli_runs_with_switches_and_records_them(capsys, tmp_path):
    models = tmp_path / "models.py"
    models.write_text(_SPEC)
    documents = {}
    for kind in ("argmax", "Expected"):
        out = tmp_path / kind
        code, stdout, err = cli(capsys, *_deconvnet_argv(f"{models}:probabilistic", out, "--switches", kind))
        assert code == 0, (code, stdout, err)
        documents[kind.lower()] = (json.loads((out / "result.json").read_text()), vizkit.load_result(out)[1])
    for kind, (document, _) in documents.items():
        assert document["switches"] == kind and document["params"]["switches"] == kind
    assert not np.allclose(documents["argmax"][1]["projections"], documents["expected"][1]["projections"])
    code, stdout, _ = cli(capsys, "run", "deconvnet", "--help")
    assert code == 0 and "--switches" in stdout and "probabilistic" in stdout


def test_the_option_is_declared_as_a_choice():
    analysis = vizkit.framework.get_app().analyses["deconvnet"]
    (option,) = [option for option in analysis.options if option.name == "switches"]
    assert option.type == ("argmax", "expected", "sampled") and option.default == "argmax"
    assert "ordinary max-pools always use argmax switches" in option.help
