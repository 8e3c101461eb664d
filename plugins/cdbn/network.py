"""A convolutional deep belief network: its settings and its stack of convolutional RBMs.

The paper's settings (Lee et al., ICML 2009, Sec. 4.1): layer 1 has 24 bases of 10x10 on
whitened natural images, layer 2 100 bases of 10x10, both with 2x2 probabilistic max-pooling;
the learning settings (sparsity target, weight decay 0.01, momentum 0.5 then 0.9, sigma 0.2
decaying to 0.1) are those of Lee's released code for layer 1; layers above need a much larger
step and much less weight decay (see ``learning_rates``). Each layer's input is the pooling units'
probabilities of the layer below (feed-forward, approximate inference).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from vizkit import UsageError

from .rbm import Crbm, Gradients, feed_forward_pass, mean_field
from .whitening import prepare


@dataclass(frozen=True)
class CdbnConfig:
    """A CDBN's shape and training settings, one value per layer where layers differ."""

    bases: tuple[int, ...] = (24, 100)
    filters: tuple[int, ...] = (10, 10)
    pools: tuple[int, ...] = (2, 2)
    sparsity: tuple[float, ...] = (0.002, 0.005)  # target mean P(h = 1) per layer
    # layer 2 sees layer 1's pooling units, on about 0.4 % of the time: its CD statistics per
    # position are ~100x smaller than layer 1's, so it needs a ~600x larger step and ~1000x less
    # decay to learn at all (at 0.05 and 0.01 its filters decay to zero and the reconstruction
    # stays at the data's mean); layer 3 sees units on ~2 % of the time: at 30 its weights grow
    # and its bases collapse to one pattern, at 300 it diverges, at 3 it learns (the CLI's
    # default; see the README)
    learning_rates: tuple[float, ...] = (0.05, 30.0)
    weight_decays: tuple[float, ...] = (0.01, 1e-5)
    sparsity_weight: float = 5.0
    momentum: tuple[float, float] = (0.5, 0.9)  # before and from epoch ``momentum_switch``
    momentum_switch: int = 5
    sigma: tuple[float, float] = (0.2, 0.1)  # layer 1's visible sigma: start, floor
    sigma_decay: float = 0.99  # per epoch
    scale: float = math.sqrt(0.1)  # the whitened images' standard deviation
    image_size: int = 150
    patch: int = 70  # layer 1 trains on random patch x patch crops
    batch_size: int = 2
    seed: int = 0
    frozen: int = 0  # lower layers taken from another run (trained there, not here)

    def __post_init__(self) -> None:
        layers = len(self.bases)
        if layers < 1:
            raise ValueError("a CDBN needs at least one layer")
        for name in ("filters", "pools", "sparsity", "learning_rates", "weight_decays"):
            if len(getattr(self, name)) != layers:
                raise ValueError(f"{name} needs one value for each of the {layers} layers")
        if min(self.bases) < 1 or min(self.filters) < 1 or min(self.pools) < 1:
            raise ValueError("bases, filter sizes and pools must be at least 1")
        if not all(0 < t < 1 for t in self.sparsity):
            raise ValueError("sparsity targets must be in (0, 1)")
        if self.batch_size < 1 or self.patch < self.filters[0] + self.pools[0] - 1:
            raise ValueError(
                f"batch size must be at least 1 and --patch at least {self.filters[0] + self.pools[0] - 1}"
            )
        if self.image_size < self.patch:
            raise ValueError(f"--size ({self.image_size}) must be at least --patch ({self.patch})")
        if self.sigma[0] <= 0 or self.sigma[1] <= 0:
            raise ValueError("sigma must be positive")

    @property
    def layers(self) -> int:
        return len(self.bases)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CdbnConfig:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def truncated(self, layers: int) -> CdbnConfig:
        """The settings of the first ``layers`` layers."""
        per_layer = ("bases", "filters", "pools", "sparsity", "learning_rates", "weight_decays")
        values = self.to_dict()
        for name in per_layer:
            values[name] = tuple(values[name][:layers])
        values["frozen"] = min(self.frozen, layers)
        return CdbnConfig(**values)

    def sigma_at(self, epoch: int) -> float:
        """Layer 1's visible sigma during epoch ``epoch`` (0-based)."""
        return max(self.sigma[1], self.sigma[0] * self.sigma_decay**epoch)

    def momentum_at(self, epoch: int) -> float:
        return self.momentum[0] if epoch < self.momentum_switch else self.momentum[1]


def new_layer(config: CdbnConfig, layer: int, generator: torch.Generator) -> Crbm:
    """Layer ``layer`` (1-based) before training: filters ~ N(0, 0.01^2), hidden biases -0.1
    (as Lee's code starts), visible biases 0; Gaussian visible units for layer 1 only."""
    channels = 1 if layer == 1 else config.bases[layer - 2]
    k = config.filters[layer - 1]
    return Crbm(
        weight=0.01 * torch.randn(config.bases[layer - 1], channels, k, k, generator=generator),
        hidden_bias=torch.full((config.bases[layer - 1],), -0.1),
        visible_bias=torch.zeros(channels),
        pool=config.pools[layer - 1],
        gaussian=layer == 1,
        sigma=config.sigma[0] if layer == 1 else 1.0,
    )


@dataclass
class CdbnNetwork:
    """The trained (or training) layers and their momentum state."""

    config: CdbnConfig
    layers: list[Crbm] = field(default_factory=list)
    velocities: list[Gradients] = field(default_factory=list)

    def visible(self, images: Tensor) -> Tensor:
        """RGB (or grey) images in [0, 1] as layer 1 sees them: grey, whitened, scaled."""
        return prepare(images, self.config.scale)

    @torch.no_grad()
    def infer(self, images: Tensor, layers: int | None = None) -> list[tuple[Tensor, Tensor]]:
        """Feed-forward inference for RGB images in [0, 1]: each layer's (detection, pooling)
        probabilities."""
        return feed_forward_pass(self.layers[: layers or len(self.layers)], self.visible(images))

    @torch.no_grad()
    def infer_combined(self, images: Tensor, iterations: int = 10) -> list[tuple[Tensor, Tensor]]:
        """The combined bottom-up / top-down inference (mean field, :func:`.rbm.mean_field`)."""
        return mean_field(self.layers, self.visible(images), iterations)

    def state(self) -> dict[str, Any]:
        """Plain tensors and values (loadable with ``weights_only=True``)."""
        return {
            "config": self.config.to_dict(),
            "layers": [
                {
                    "weight": r.weight,
                    "hidden_bias": r.hidden_bias,
                    "visible_bias": r.visible_bias,
                    "pool": r.pool,
                    "gaussian": r.gaussian,
                    "sigma": r.sigma,
                }
                for r in self.layers
            ],
            "velocities": [
                {"weight": v.weight, "hidden_bias": v.hidden_bias, "visible_bias": v.visible_bias}
                for v in self.velocities
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CdbnNetwork:
        try:
            config = CdbnConfig.from_dict(state["config"])
            layers = [
                Crbm(
                    weight=d["weight"].float(),
                    hidden_bias=d["hidden_bias"].float(),
                    visible_bias=d["visible_bias"].float(),
                    pool=int(d["pool"]),
                    gaussian=bool(d["gaussian"]),
                    sigma=float(d["sigma"]),
                )
                for d in state["layers"]
            ]
            velocities = [Gradients(v["weight"], v["hidden_bias"], v["visible_bias"]) for v in state["velocities"]]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UsageError(f"not a CDBN checkpoint ({type(error).__name__}: {error})") from None
        return cls(config=config, layers=layers, velocities=velocities)
