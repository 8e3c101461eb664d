"""filters: diagnostics checked on hand-built filters, and on real first layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import vizkit
from helpers import assert_no_hooks


class Known(nn.Module):
    """Four 4x4 filters: flat (low frequency), checkerboard (high), all-zero (dead), and one whose
    bias keeps it below zero on any image (never active)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4)
        checker = torch.tensor([[(-1.0) ** (i + j) for j in range(4)] for i in range(4)])
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0] = 1.0
            self.conv.weight[1] = checker
            self.conv.weight[3] = 0.01
            self.conv.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -100.0]))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(self.conv(x))


def test_known_filters(dog_image):
    model = Known().eval()
    result = vizkit.run("filters", model, images=[dog_image], top=1)
    assert_no_hooks(model)
    assert result["layer"] == "conv" and result["filters"] == 4
    assert np.allclose(result.arrays["rms"], [1.0, 1.0, 0.0, 0.01])
    bands = result.arrays["band_energy"]
    assert (
        bands[0, 0] > 0.7 > 0.2 > bands[0, 2] and bands[1, 2] > 0.99
    )  # flat -> low (a 4-tap box leaks), checkerboard -> high
    assert result.arrays["dead"].tolist() == [False, False, True, True]
    assert result["dead_low_rms"] == 2 and result["dead_never_active"] == 2  # zero filter and the biased one
    assert result["dominance"] == pytest.approx(1.0 / 2.01)
    assert result["high_frequency_filters"] == 1


@pytest.mark.parametrize("spec,layer,count", [("zfnet", "conv1.conv", 96), ("torchvision:alexnet", "features.0", 64)])
def test_first_layer_of_other_models(spec, layer, count):
    torch.manual_seed(0)
    model = vizkit.load_model(spec)
    result = vizkit.run("filters", model)
    assert result["layer"] == layer and result["filters"] == count and result["dead_never_active"] is None
    assert set(result.figures) == {"filters", "filter_diagnostics"}
    with pytest.raises(vizkit.UsageError, match="not a Conv2d"):
        vizkit.run("filters", model, layer="features" if "alexnet" in spec else "conv1")
    assert_no_hooks(model)


def test_real_squeezenet_filters_are_alive(squeezenet, dog_image):
    result = vizkit.run("filters", squeezenet, images=[dog_image])
    assert result["layer"] == "features.0" and result["filters"] == 96 and result["kernel"] == [7, 7]
    assert result["dead"] == 0
    assert 0.05 < result["dominance"] < 0.2  # no filter dominates a trained first layer


def test_grid_of_a_deeper_layer_shows_each_filter_at_full_contrast():
    """Filters over many input channels are drawn as their channel mean scaled to its own range;
    scaling every channel by the filter's largest weight and then averaging 64 of them left each
    tile a near-uniform grey (conv2 of the bundled model looked blank)."""
    from vizkit_plugins.filters import _grid

    torch.manual_seed(0)
    weight = torch.randn(4, 64, 5, 5)
    figure = _grid(weight, np.ones(4), np.zeros(4, dtype=bool), "conv2")
    canvas = np.asarray(figure.axes[0].images[0].get_array())
    for index in range(4):
        r, c = divmod(index, 2)  # a 2x2 grid of 5x5 tiles with one-pixel gaps
        tile = canvas[1 + r * 6 : 6 + r * 6, 1 + c * 6 : 6 + c * 6, 0]
        assert tile.max() - tile.min() >= 0.5, (index, tile.max() - tile.min())
        mean = weight[index].mean(0)
        assert np.corrcoef(tile.ravel(), mean.ravel())[0, 1] > 0.999  # the channel mean's pattern
    assert "mean over the 64 input channels" in figure.axes[0].get_title()
    ones = _grid(torch.randn(3, 16, 1, 1), np.ones(3), np.zeros(3, dtype=bool), "squeeze")
    assert "1x1: no spatial pattern" in ones.axes[0].get_title()  # said, not left as blank grey tiles
