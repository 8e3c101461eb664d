"""The op table: one object per op kind, the only place the engine learns about an op.

An op added in a test (a stochastic pool that reuses the max-pool's unpooling) is recorded as a
layer with switches and reversed by the explicit path, equal to the autograd path, under every
built-in rule; nothing else in the engine had to change for it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function_unary

import vizkit
from helpers import REPO, assert_no_hooks
from vizkit.engine import ops
from vizkit.engine.deconv import project, receptive_boxes
from vizkit.engine.geometry import Window, pool_window
from vizkit.engine.ops import UnsupportedOpError
from vizkit.engine.rules import BUILTIN_RULES

RULES = [rule.name for rule in BUILTIN_RULES]


# ------------------------------------------------------------------------ a test-only op
def _sample(x: torch.Tensor, kernel: int, stride: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic pooling (Zeiler & Fergus 2013): each window's output is one of its inputs,
    drawn with probability proportional to its activation (uniformly in an all-zero window);
    the draw is seeded, so a forward repeats. Returns the output and the flat indices drawn."""
    n, c, h, w = x.shape
    oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    patches = F.unfold(x.detach().reshape(n * c, 1, h, w), kernel, stride=stride)  # [n*c, k*k, oh*ow]
    weights = patches.clamp(min=0).transpose(1, 2).reshape(-1, kernel * kernel) + 1e-12
    pick = torch.multinomial(weights, 1, generator=torch.Generator().manual_seed(seed)).reshape(n, c, oh, ow)
    rows = torch.arange(oh)[:, None] * stride + pick // kernel
    cols = torch.arange(ow)[None, :] * stride + pick % kernel
    indices = rows * w + cols
    return x.flatten(2).gather(2, indices.flatten(2)).reshape(n, c, oh, ow), indices


def stochastic_pool2d(input: torch.Tensor, kernel_size: int, stride: int | None = None, seed: int = 0) -> torch.Tensor:
    """A functional torch op of its own: seen by a ``TorchFunctionMode`` under its name."""
    if has_torch_function_unary(input):
        return handle_torch_function(stochastic_pool2d, (input,), input, kernel_size, stride=stride, seed=seed)
    return _sample(input, kernel_size, stride or kernel_size, seed)[0]


class StochasticPool2d(ops.MaxPool2d):
    """The whole extension: records the drawn positions as switches; unpools with them (the
    max-pool's reverse, inherited) and steps occlusion by recomputing (the default)."""

    name = "stochastic_pool2d"
    calls = ("stochastic_pool2d",)
    signature = ops.parse_signature("(input, kernel_size, stride=None, seed=0)")
    owner = None

    def window(self, p: dict) -> Window:
        return pool_window(p["kernel_size"], p["stride"])

    def forward(self, func, args, kwargs, rule, record):
        if not record:
            return func(*args, **kwargs), None
        p = self.bind(args, kwargs)
        x, window = p["input"], self.window(p)
        out, indices = _sample(x, window.kernel[0], window.stride[0], p["seed"])
        return out, ops.PoolSwitches(indices, tuple(x.shape), window, ceil_mode=False)

    def step(self, occlusion, index, call, windows):
        return None


@pytest.fixture
def stochastic_op() -> Iterator[ops.Op]:
    op = ops.register_op(StochasticPool2d())
    try:
        yield op
    finally:
        ops.unregister_op(op)
    assert ops.op_of(stochastic_pool2d) is None


class _StochasticNet(nn.Module):
    def __init__(self, stochastic: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 3)
        self.pool = None if stochastic else nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        h = stochastic_pool2d(h, 3, 2) if self.pool is None else self.pool(h)
        return F.relu(self.conv2(h))


# ------------------------------------------------------------------------ the tests
def test_an_unknown_op_is_followed_and_named_by_the_explicit_path():
    model, x = _StochasticNet().eval(), torch.randn(2, 3, 19, 19)
    with vizkit.instrument(model) as im:
        im(x)
        assert im.pools == [] and "stochastic_pool2d" not in im.layers
        with pytest.raises(UnsupportedOpError, match="stochastic_pool2d"):
            project(im, x, "conv2", [0], method="explicit")
    assert_no_hooks(model)


def test_an_op_added_in_a_test_is_recorded_as_a_layer_with_switches(stochastic_op):
    model, x = _StochasticNet().eval(), torch.randn(2, 3, 19, 19)
    with vizkit.instrument(model) as im:
        out = im(x)
        assert torch.equal(out, model(x))  # the forward is the model's own
        assert im.pools == ["stochastic_pool2d"]
        info = im.info("stochastic_pool2d")
        assert info.functional and info.type == "F.stochastic_pool2d" and info.has_switches
        pooled, inputs = im.activation("stochastic_pool2d"), F.relu(model.conv(x))
        switches = im.pool_switches("stochastic_pool2d")
        assert torch.equal(pooled.flatten(2), inputs.flatten(2).gather(2, switches.indices.flatten(2)))
        assert switches.window == pool_window(3, 2)
    assert_no_hooks(model)


@pytest.mark.parametrize("rule", RULES)
def test_an_op_added_in_a_test_is_reversed_like_the_autograd_path(stochastic_op, rule):
    model, x = _StochasticNet().eval(), torch.randn(2, 3, 19, 19, generator=torch.Generator().manual_seed(1))
    with vizkit.instrument(model) as im:
        im(x)
        auto = project(im, x, "conv2", [0, 3], method="autograd", rule=rule)
        explicit = project(im, x, "conv2", [0, 3], method="explicit", rule=rule)
    assert auto.images.abs().sum() > 0
    assert torch.allclose(auto.images, explicit.images, atol=1e-6, rtol=1e-5)
    assert_no_hooks(model)


def test_an_op_added_in_a_test_has_its_windows_receptive_field(stochastic_op):
    x = torch.randn(1, 3, 19, 19)
    boxes = []
    for stochastic in (True, False):
        model = _StochasticNet(stochastic).eval()
        with vizkit.instrument(model) as im:
            im(x)
            boxes.append(receptive_boxes(im, x, "conv2"))
    assert torch.equal(boxes[0], boxes[1])  # the max-pool's window arithmetic, reused


def test_the_table_knows_each_call_once():
    for name, op in ops.OPS.items():
        assert op.name == name and op.calls
        assert all(ops.op_of(SimpleNamespace(__name__=call)) is op for call in op.calls)
    with pytest.raises(ValueError, match="already registered"):
        ops.register_op(type("Another", (ops.ReLU,), {"name": "another_relu"})())
    assert ops.op_of(F.relu) is ops.RELU and ops.op_of_module(nn.ReLU()) is ops.RELU
    assert isinstance(ops.op_of_module(nn.BatchNorm2d(3)), ops.Normalisation)
    assert ops.op_of_module(nn.Conv2d(3, 3, 1)) is None  # a conv module's call is not a layer of its own


def _string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_only_the_op_table_spells_op_names():
    """The engine dispatches through the table: no other engine module (nor a plugin) names an
    op or one of its calls, but for a plugin's module that defines and registers its own ops (the
    ADN's code and 3D pooling)."""
    names = set(ops.OPS) | {call for op in ops.OPS.values() for call in op.calls}
    root = REPO / "vizkit" / "engine"
    engine = [path for path in root.rglob("*.py") if path.relative_to(root).parts[0] != "ops"]
    public = set(vizkit.engine.__all__)  # a function the engine exports under the op's own name
    spelled = {path.name: sorted(_string_constants(path) & names - public) for path in engine}
    assert not any(spelled.values()), spelled
    activations = {op.name for op in ops.OPS.values() if op.layer}  # relu, max_pool2d, ...
    defining = [path for path in (REPO / "plugins").rglob("*.py") if "register_op(" in path.read_text()]
    assert [path.relative_to(REPO).as_posix() for path in defining] == ["plugins/adn/ops.py"]
    plugins = {
        path.name: sorted(_string_constants(path) & activations)
        for path in (REPO / "plugins").rglob("*.py")
        if path not in defining
    }
    assert not any(plugins.values()), plugins
