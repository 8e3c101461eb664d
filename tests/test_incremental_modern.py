"""Exact incremental occlusion on the ops of today's convnets: depthwise convolutions,
channels-last LayerNorm / Linear blocks with layer scale (ConvNeXt), SE gates (EfficientNet,
MobileNetV3), chunk / cat, channel shuffles written out (ShuffleNet), slicing (Ghost), average
pooling, constant padding (timm's TF 'same' convolutions) and means over the channels.

Each tiny model's logits and tracked layer equal one-occluded-image-at-a-time forwards of the
bare model. The models without a global pool inside keep a window to the end: their cost report
names no place where the window became the whole map, and the bound shows the saving; an SE
block legitimately makes everything after it the whole map, and the report says where and why.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor, nn

import vizkit
from vizkit.engine.incremental import COVERED, SE_GATE, IncrementalOcclusion, OcclusionCost
from vizkit_plugins.occlusion.analysis import explain_cost
from vizkit_plugins.occlusion.grid import OcclusionGrid, occluded_batch

SIZE, OCCLUDER, STRIDE = 40, 8, 4  # an 9 x 9 grid of positions, several at the borders


class ChannelsLastBlock(nn.Module):
    """ConvNeXt's block: depthwise 7x7 conv -> NHWC -> LayerNorm over channels -> Linear ->
    GELU -> Linear -> layer scale (a [C] parameter, channels-last) -> NCHW -> layer scale again
    (a [C, 1, 1] parameter, as torchvision's) -> residual added in place."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (y * self.gamma).permute(0, 3, 1, 2)
        y = self.layer_scale * y
        y += x
        return y


class LayerNorm2d(nn.LayerNorm):
    """A LayerNorm over the channels of an NCHW map, by permuting (timm's and torchvision's)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias).permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    """Patchify stem, two channels-last blocks around a downsampling, then the head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), LayerNorm2d(8))
        self.block1 = ChannelsLastBlock(8)
        self.down = nn.Sequential(LayerNorm2d(8), nn.Conv2d(8, 16, 2, stride=2))
        self.block2 = ChannelsLastBlock(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block2(self.down(self.block1(self.stem(x))))
        return self.head(x.mean((2, 3)))


class ShuffleGhost(nn.Module):
    """chunk along channels, a channel shuffle written out (view / transpose / contiguous /
    view), a Ghost-style slice and cat, a depthwise conv with hardswish, average pooling, a
    constant padding before an unpadded conv, and a spatial-attention-style mean over channels
    that multiplies the map (point-wise in space)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.Hardswish())
        self.cheap = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.same = nn.Conv2d(12, 12, 4, stride=2)
        self.head = nn.Linear(12, 5)
        for bn in (self.branch[1], self.depthwise[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        x = self.depthwise(x)
        ghost = torch.cat([x, self.cheap(x)], dim=1)[:, :12]
        x = F.avg_pool2d(ghost, 3, stride=1, padding=1)
        x = x * torch.sigmoid(x.mean(1, keepdim=True))
        x = self.same(F.pad(x, (1, 2, 1, 2)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(silu(fc1(mean(x))))): the gate depends on the whole map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv2d(dim, 4, 1), nn.SiLU(), nn.Conv2d(4, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class TinySE(nn.Module):
    """Stem conv, depthwise conv with SiLU, an SE block, then two convs and the head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU())
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.SiLU())
        self.se = SqueezeExcite(8)
        self.project = nn.Conv2d(8, 8, 3, padding=1)
        self.last = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.last(self.project(self.se(self.depthwise(self.stem(x)))))
        return self.head(x.mean((2, 3)))


def _exact_against_one_at_a_time(
    model: nn.Module, layer: str, size: int = SIZE, occluder: int = OCCLUDER, stride: int = STRIDE
) -> OcclusionCost:
    """Exact incremental logits and the tracked layer (whole, and one channel's sum) for every
    position of the grid (batches of 7: blocks of mixed positions) equal forwards of the bare
    model, one occluded image each; returns the cost."""
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(1, 3, size, size)
    grid = OcclusionGrid(size, size, occluder, stride)
    corners, fill = list(grid.corners()), torch.tensor([0.5, -1.0, 2.0])
    module = dict(model.named_modules())[layer]
    captured: dict[str, Tensor] = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.update(a=o.detach().clone()))
    try:
        with torch.no_grad():
            expected = [(model(occluded_batch(x[0], [c], occluder, fill)), captured["a"]) for c in corners]
            model(x)
            unoccluded = captured["a"]
    finally:
        handle.remove()
    logits_ref = torch.cat([e[0] for e in expected])
    layer_ref = torch.cat([e[1] for e in expected])
    with vizkit.instrument(model) as im, torch.no_grad():
        engine = IncrementalOcclusion(im, x, layer)
        parts = [engine.evaluate(corners[s : s + 7], occluder, fill) for s in range(0, len(corners), 7)]
        sums = torch.cat([engine.evaluate(corners[s : s + 7], occluder, fill, channel=1)[1] for s in (0, 7)])
    logits, layer_out = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    changed = (layer_ref - unoccluded).abs().amax(dim=(1, 2, 3))
    assert bool((changed > 1e-2 * layer_ref.abs().max()).all()), "a position left the tracked layer as it was"
    scale = float(logits_ref.abs().max())
    assert float((logits - logits_ref).abs().max()) <= 1e-5 * scale
    assert float((layer_out - layer_ref).abs().max()) <= 1e-5 * float(layer_ref.abs().max())
    sums_ref = layer_ref[:14, 1].flatten(1).sum(1)
    assert float((sums - sums_ref).abs().max()) <= 1e-5 * float(sums_ref.abs().max())
    return engine.cost  # the channel sums ran the first 14 positions again


def test_channels_last_layernorm_linear_and_layer_scale_keep_the_window():
    """ConvNeXt's block stays incremental: a window that knows its layout crosses the permutes,
    the LayerNorm and Linears over channels and both layer scales, so no map is recomputed whole
    and only part of the multiply-adds is needed."""
    cost = _exact_against_one_at_a_time(TinyConvNeXt(), "block2")
    assert cost.whole_maps == [] and cost.as_dict()["whole_map"] == []
    assert cost.bound > 1.5, cost.as_dict()
    assert cost.as_dict()["macs_whole_map_per_position"] == 0


def test_chunk_shuffle_slice_pool_pad_and_channel_mean_keep_the_window():
    cost = _exact_against_one_at_a_time(ShuffleGhost(), "same")
    assert cost.whole_maps == [], [entry.describe(cost.needed) for entry in cost.whole_maps]
    assert cost.bound > 1.5, cost.as_dict()


def test_an_se_block_makes_the_rest_whole_and_the_cost_model_says_where_and_why():
    cost = _exact_against_one_at_a_time(TinySE(), "last")
    (entry,) = cost.whole_maps
    assert (entry.layer, entry.op, entry.reason, entry.first_map) == ("se", "mean", SE_GATE, "se")
    # after the gate every map is whole: project, last and the head are the whole forward's
    # share, and so are the gate's two 1x1 convolutions; the stem and depthwise conv were windows
    whole_macs = 2 * 8 * 4 + 8 * 8 * 9 * SIZE * SIZE * 2 + 8 * 5
    assert entry.macs == whole_macs * cost.positions
    assert cost.bound < cost.full / whole_macs
    (reported,) = cost.as_dict()["whole_map"]
    assert reported["layer"] == "se" and reported["reason"] == SE_GATE
    assert 0.9 < reported["share_of_needed"] < 1
    lines = explain_cost(cost).splitlines()
    assert len(lines) == 2 and lines[0].startswith("full forward")
    assert lines[1].strip().startswith(f"from se ({SE_GATE}) on, every position recomputes the whole map")


def test_a_window_grown_to_the_whole_map_is_reported_where_it_covered_it():
    """A 9x9 convolution on an 8x8 map: every occluder position changes all of its output, so
    from there on whole maps are computed (plain calls, no window bookkeeping); the report says
    where and why, and the results stay exact."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 9, padding=4), nn.Conv2d(4, 4, 1)
    )
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    cost = _exact_against_one_at_a_time(model, "3", size=16, occluder=8, stride=2)
    (entry,) = cost.whole_maps
    assert (entry.layer, entry.reason, entry.first_map) == ("2", COVERED, "2")
    assert entry.macs == 4 * 4 * 8 * 8 * cost.positions  # the 1x1 convolution after it, whole
    assert cost.needed > cost.full * cost.positions * 0.9  # little left to save: the bound says so


def test_torchvision_se_block_is_reported_at_its_pool():
    """torchvision's SqueezeExcitation pools with a module: the report names that module."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), tvm.efficientnet.SqueezeExcitation(8, 4), nn.Conv2d(8, 4, 3, padding=1)
    )
    with vizkit.instrument(model.eval()) as im, torch.no_grad():
        engine = IncrementalOcclusion(im, torch.randn(1, 3, 24, 24), "2")
        engine.evaluate([(0, 0), (16, 16)], 8, torch.zeros(3))
    (entry,) = engine.cost.whole_maps
    assert (entry.layer, entry.reason, entry.first_map) == ("1.avgpool", SE_GATE, "1")
    assert entry.describe(engine.cost.needed).startswith(f"from 1.avgpool ({SE_GATE}) on")


def test_an_op_outside_the_table_is_reported_by_name():
    """A spatial op vizkit does not know (a flip of the rows) is recomputed whole, and the
    report names it; the results stay exact."""

    class Flipped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv2(torch.rot90(self.conv1(x), 1, (2, 3))).mean((2, 3))

    model = nn.Sequential(Flipped())
    cost = _exact_against_one_at_a_time(model, "0.conv2")
    (entry,) = cost.whole_maps
    assert entry.reason == "'rot90' is not in vizkit's op table" and entry.first_map == "0"


SLOW_MODELS = {
    "convnext_tiny": ("torchvision:convnext_tiny", 64, True),
    "shufflenet_v2_x0_5": ("torchvision:shufflenet_v2_x0_5", 64, True),
    "densenet121": ("torchvision:densenet121", 64, True),
    "efficientnet_b0": ("torchvision:efficientnet_b0", 64, False),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW_MODELS))
def test_real_architectures_exact_and_reported(name):
    """Real architectures at random weights (no trivial layer scale or batch norm): exact equals
    batched full forwards, and the cost report names an SE block's pool exactly where there is
    one (EfficientNet); in ConvNeXt, ShuffleNet and DenseNet only where the window grew to cover
    the whole map."""
    from vizkit_plugins.occlusion.maps import occlusion_maps

    spec, size, windowed = SLOW_MODELS[name]
    torch.manual_seed(0)
    model = vizkit.load_model(spec).eval()
    with torch.no_grad():
        for parameter_name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.dim() == 1 and tensor.is_floating_point():
                scale = 0.1 if parameter_name.endswith(("bias", "running_mean")) else 1.0
                tensor.copy_(torch.rand(tensor.shape) * scale + (0 if scale < 1 else 0.5))
    x = torch.randn(1, 3, size, size)
    grid = OcclusionGrid(size, size, 16, 16)
    costs: list[OcclusionCost] = []
    with vizkit.instrument(model) as im:
        with torch.no_grad():
            logits = im(x)
        layer = vizkit.toolkit.default_layer(model, im, logits.shape[1])
        channel = torch.tensor([int(im.activation(layer)[0].flatten(1).amax(1).argmax())])
        target = logits.argmax(1)
        args = (im, x, layer, channel, target, grid, torch.zeros(3))
        exact = occlusion_maps(*args, mode="exact", costs=costs, batch_size=5)
        batched = occlusion_maps(*args, mode="batched", batch_size=5)
    reference = batched["feature_activity"]
    assert np.ptp(reference) > 0
    assert np.abs(exact["feature_activity"] - reference).max() <= 1e-4 * np.abs(reference).max()
    assert np.abs(exact["true_class_prob"] - batched["true_class_prob"]).max() <= 1e-4
    (cost,) = costs
    if windowed:  # windows to where they grew to cover the whole map; no op needed the whole map
        assert all(entry.reason == COVERED for entry in cost.whole_maps), cost.as_dict()
        assert cost.bound > 1.05, cost.as_dict()
    else:
        (entry,) = cost.whole_maps
        assert entry.reason == SE_GATE and entry.layer == "features.1.0.block.1.avgpool"


def test_the_run_reports_the_se_block_in_result_json_and_explain(photo_path, capsys):
    """``vizkit.run("occlusion", ..., explain=True)``: result.json's ``cost`` keeps its keys and
    adds the whole-map report; ``--explain`` prints its line under the image's cost line."""
    torch.manual_seed(0)
    result = vizkit.run("occlusion", TinySE().eval(), images=[photo_path], size=48, stride=44, explain=True)
    (cost,) = result["cost"]
    assert {"macs_full_forward", "macs_needed_per_position", "bound", "padding_overhead"} <= set(cost)
    (entry,) = cost["whole_map"]
    assert (entry["layer"], entry["op"], entry["reason"], entry["first_map"]) == ("se", "mean", SE_GATE, "se")
    assert cost["macs_whole_map_per_position"] > 0.9 * cost["macs_needed_per_position"]
    err = capsys.readouterr().err
    assert f"  from se ({SE_GATE}) on, every position recomputes the whole map" in err


def test_an_adaptive_pool_to_the_input_size_passes_the_window_on():
    """AlexNet's and VGG's ``AdaptiveAvgPool2d`` at 224 px (6x6 to 6x6, 7x7 to 7x7) is the
    identity: the window passes unchanged (replaying the pool on the window would stretch it)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(SIZE), nn.Conv2d(4, 4, 3, padding=1))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    cost = _exact_against_one_at_a_time(model, "2")
    assert cost.whole_maps == [] and cost.bound > 3, cost.as_dict()
