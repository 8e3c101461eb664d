"""A trained CDBN as a torch model vizkit analyses run on: the model spec ``cdbn:RUN``.

Its forward is the CDBN's feed-forward inference: the image made grey and whitened (as in
training), then per layer ``layers.L.conv`` (the detection units' input I = (W * v + b) /
sigma^2, a plain ``nn.Conv2d``) and ``layers.L.pool`` (vizkit's probabilistic max-pooling op:
the pooling units' P(p = 1), the next layer's input). So an instrumented forward records the
probabilistic switches, and the deconvnet projects a feature down through them by the
``--switches`` mode: argmax (the paper's deconvnet), expected or sampled.

The whitening is a fixed linear filter of the grey image followed by a division by the
whitened image's own standard deviation, applied here as a correction the projection does not
cross: a projection stops at the whitened grey image and is spread evenly over the three
channels (what the bases are drawn in). Because of that division every unit's receptive field is
the whole image, and vizkit is told so.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vizkit.engine import ProbMaxPool2d

from .network import CdbnNetwork
from .whitening import prepare


class WhitenedGrey(nn.Module):
    """RGB in [0, 1] -> the whitened grey image ``[N, 1, H, W]``. The value is the whitening's;
    the recorded path (and its gradient) is the channel mean's."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        grey = x.mean(dim=1, keepdim=True)
        with torch._C.DisableTorchFunction(), torch.no_grad():
            correction = prepare(x.float(), self.scale).to(x.dtype) - grey
        # every unit depends on the whole image (the whitened image is scaled by its own
        # standard deviation): ``whole * 0`` tells vizkit's receptive fields so, and so top9
        # measures a winner on the whole image, not on a cut whose whitening would differ,
        # while adding nothing to the value or to a projection
        whole = grey.mean(dim=(2, 3), keepdim=True)
        return grey + whole * 0.0 + correction


class CdbnLayer(nn.Module):
    """One layer as vizkit sees it: ``conv`` gives I, ``pool`` the pooling units' P(p = 1)."""

    def __init__(self, weight: Tensor, bias: Tensor, pool: int, scale: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1])
        with torch.no_grad():
            self.conv.weight.copy_(weight * scale)
            assert self.conv.bias is not None
            self.conv.bias.copy_(bias * scale)
        self.conv.requires_grad_(False)
        self.pool = ProbMaxPool2d(pool)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(x))


class CdbnModel(nn.Module):
    """A CDBN whose forward is feed-forward inference; the output is the top pooling layer."""

    vizkit_default_layer = None

    def __init__(self, network: CdbnNetwork) -> None:
        super().__init__()
        self.config = network.config
        self.input = WhitenedGrey(network.config.scale)
        self.layers = nn.ModuleList(
            CdbnLayer(rbm.weight, rbm.hidden_bias, rbm.pool, rbm.scale) for rbm in network.layers
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.input(x)
        for layer in self.layers:
            out = layer(out)
        return out


def layer_aliases(layers: int) -> dict[str, str]:
    """``i1``/``p1``...: short names for each layer's detection input and pooling units."""
    aliases = {}
    for i in range(layers):
        aliases[f"i{i + 1}"] = f"layers.{i}.conv"
        aliases[f"p{i + 1}"] = f"layers.{i}.pool"
    return aliases


def load_cdbn_model(run: Path) -> CdbnModel:
    """The finished layers of the CDBN trained in ``run`` as a model with its vizkit metadata."""
    import vizkit
    from vizkit.models import ModelInfo

    from .training import CHECKPOINT, finished_network

    network = finished_network(run)
    model = CdbnModel(network).eval()
    size = network.config.image_size
    model.vizkit_info = ModelInfo(  # type: ignore[assignment]
        spec=f"cdbn:{run}",
        weights=str(run / CHECKPOINT),
        preprocess=vizkit.Preprocess(resize=size, crop=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        default_layer=f"layers.{len(model.layers) - 1}.pool",
        aliases=layer_aliases(len(model.layers)),
    )
    return model
