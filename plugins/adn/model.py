"""A trained ADN as a torch model vizkit analyses run on: the model spec ``adn:RUN``.

Its forward infers every layer's code (ISTA, as training does, hidden from vizkit's recorder)
and then walks the chain of :mod:`.ops` calls ``layer1.code -> layer1.pool -> layer2.code -> ...``
with those codes, so recorded activations are the inferred maps (``layerL.code``: the unpooled
z_l; ``layerL.pool``: the pooled p_l) and the recorded switches the inferred ones. The output is
the top layer's pooled maps. Input: RGB in [0, 1] (mean 0, std 1 preprocessing at the run's
image size), made grey and contrast-normalised inside, as in training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .contrast import prepare
from .network import AdnNetwork
from .ops import AdnCode, AdnPool3d


class AdnLayer(nn.Module):
    """One ADN layer as vizkit sees it: its code (the filters) and its 3D pooling."""

    def __init__(self, weight: Tensor, region: tuple[int, int, int]) -> None:
        super().__init__()
        self.code = AdnCode(weight)
        self.pool = AdnPool3d(region)


class AdnModel(nn.Module):
    """An ADN whose forward is inference (``steps`` ISTA iterations per layer, from zero)."""

    vizkit_default_layer = None

    def __init__(self, network: AdnNetwork, steps: int | None = None) -> None:
        super().__init__()
        self.config = network.config
        self.steps = network.config.ista_steps if steps is None else steps
        self.layers = nn.ModuleList(
            AdnLayer(weight, network.config.regions[i]) for i, weight in enumerate(network.filters)
        )
        self._norms = [network._norm_squared(w) for w in network.filters]  # known after loading

    def adn_layers(self) -> list[AdnLayer]:
        """The layers, typed."""
        return [layer for layer in self.layers if isinstance(layer, AdnLayer)]

    def network(self) -> AdnNetwork:
        """The filters as an :class:`AdnNetwork` (sharing the modules' weights; kept, with the
        step sizes it derives from them, until a weight is replaced)."""
        weights: list[Tensor] = [layer.code.weight for layer in self.adn_layers()]
        cached = self.__dict__.get("_network")
        if cached is None or any(a is not b for a, b in zip(cached.filters, weights)):
            cached = AdnNetwork(config=self.config.truncated(len(self.layers)), filters=weights)
            cached.prime_norms(weights, self._norms)
            self.__dict__["_network"] = cached
        return cached

    def infer(self, images: Tensor) -> list:
        """Every layer's code for RGB images in [0, 1] (:meth:`AdnNetwork.infer`)."""
        with torch._C.DisableTorchFunction(), torch.no_grad():
            return self.network().infer(prepare(images.float()), steps=self.steps)

    def forward(self, x: Tensor) -> Tensor:
        codes = self.infer(x)
        out = x
        for layer, code in zip(self.adn_layers(), codes):
            out = layer.pool(layer.code(out, code.z.to(x.dtype)))
        return out


def layer_aliases(layers: int) -> dict[str, str]:
    """``z1``/``p1``...: short names for each layer's unpooled and pooled maps."""
    aliases = {}
    for i in range(layers):
        aliases[f"z{i + 1}"] = f"layers.{i}.code"
        aliases[f"p{i + 1}"] = f"layers.{i}.pool"
    return aliases


def load_adn_model(run: Path, steps: int | None = None) -> AdnModel:
    """The finished layers of the ADN trained in ``run`` as a model with its vizkit metadata."""
    import vizkit
    from vizkit.models import ModelInfo

    from .training import CHECKPOINT, finished_network

    network = finished_network(run)
    model = AdnModel(network, steps=steps).eval()
    size = network.config.image_size
    model.vizkit_info = ModelInfo(  # type: ignore[assignment]
        spec=f"adn:{run}",
        weights=str(run / CHECKPOINT),
        preprocess=vizkit.Preprocess(resize=size, crop=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        default_layer=f"layers.{len(model.layers) - 1}.pool",
        aliases=layer_aliases(len(model.layers)),
    )
    return model
