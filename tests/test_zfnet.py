"""The bundled ZF backbone: the paper's layout and feature scale clipping."""

from __future__ import annotations

import torch

import vizkit
from vizkit.models.zfnet import ZFConfig, ZFNet, clip_feature_scale, filter_rms, zfnet

PAPER_SHAPES = {
    "conv1": (96, 55, 55),
    "conv1.pool": (96, 55, 55),
    "conv1.norm": (96, 55, 55),
    "conv2": (256, 13, 13),
    "conv2.pool": (256, 13, 13),
    "conv3": (384, 13, 13),
    "conv4": (384, 13, 13),
    "conv5": (256, 6, 6),
    "fc6": (4096,),
    "fc7": (4096,),
    "fc8": (1000,),
}


def test_layout_matches_the_paper():
    model = zfnet().eval()
    with vizkit.instrument(model, layers=None) as im, torch.no_grad():
        im(torch.zeros(1, 3, 224, 224))
        for layer, shape in PAPER_SHAPES.items():
            assert im.info(layer).shape[1:] == shape, layer
        assert im.pools == ["conv1.pool", "conv2.pool", "conv5.pool"]
        conv1 = model.conv1.conv
        assert conv1.kernel_size == (7, 7) and conv1.stride == (2, 2) and conv1.padding == (1, 1)
        assert model.conv2.conv.kernel_size == (5, 5) and model.conv2.conv.stride == (2, 2)
        assert isinstance(model.conv1.norm, torch.nn.LocalResponseNorm)
        assert model.fc6.fc.in_features == 9216


def test_initialisation_is_small_gaussian():
    torch.manual_seed(0)
    model = zfnet()
    weight = model.conv3.conv.weight
    assert abs(weight.std().item() - 0.01) < 0.001 and model.conv3.conv.bias.abs().max() == 0


def test_compact_configuration_keeps_the_topology():
    model = ZFNet(ZFConfig(channels=(32, 64, 96, 96, 64), fc_width=256, input_size=160, num_classes=10)).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 160, 160)).shape == (2, 10)


def test_feature_scale_clipping():
    torch.manual_seed(0)
    model = zfnet()
    with torch.no_grad():
        model.conv1.conv.weight[:5] *= 50  # five filters far above the radius
        model.conv2.conv.weight[0] *= 30
    before = filter_rms(model.conv1.conv).clone()
    clipped = clip_feature_scale(model, radius=0.1)
    assert clipped == 6
    after = filter_rms(model.conv1.conv)
    assert torch.all(after <= 0.1 + 1e-6)
    assert torch.allclose(after[:5], torch.full((5,), 0.1))
    assert torch.equal(after[5:], before[5:])  # filters under the radius are untouched
    assert clip_feature_scale(model, radius=0.1) == 0
