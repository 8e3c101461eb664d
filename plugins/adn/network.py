"""An Adaptive Deconvolutional Network: its settings, its filters, and inference of its maps.

Layer l has K_l feature maps z_l the size of the layer below's pooled maps p_{l-1} (the image
for l = 1), filters F_l (``[K_l, C_{l-1}, 7, 7]``, C_{l-1} the pooled maps below) and a 3D
pooling region (maps, height, width). Inference of layer l on images y (Zeiler, Taylor & Fergus,
ICCV 2011, Algorithm 1), with the switches of the layers below fixed at the ones their own
inference found: T iterations of

    z = shrink(z - beta * lambda_l * G^T (G z - y), beta);  p_l, s_l = pool3d(z);  z = U_{s_l} p_l

with ``G = F_1 U_1 ... F_{l-1} U_{l-1} F_l`` (so ``G z = R_l p_l``). Each image's step ``beta`` starts at
``0.9 / (lambda_l ||R_l||^2)`` with the norm estimated for the filters (power iteration, switches
in their regions' corners) and is halved, that image's step undone, whenever a step would raise
its cost, down to the guaranteed ``0.9 / (lambda_l B_l)``, ``B_l = prod_{i <= l} ||F_i||^2`` (an
upper bound of ``||R_l||^2``: unpooling with fixed switches is an isometry) from the filters'
spectra. So a step never raises an image's cost (but at that floor, where a moved switch
could, and is kept), and an image's code does not depend on its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .inference import descend
from .pooling import Switches, pool, pooled_size, unpool
from .reconstruction import operator_norm_squared, reconstruct_unpooled

PAPER_MAPS = (15, 50, 100, 150)
PAPER_LAMBDAS = (2.0, 0.1, 0.005, 0.001)
PAPER_REGIONS = ((3, 3, 3), (2, 3, 3), (2, 3, 3), (2, 3, 3))  # (maps, height, width)
STEP_MARGIN = 0.9  # beta = STEP_MARGIN / L
SPECTRUM_GRID = 32  # the DFT grid the filters' operator norms are taken on


@dataclass(frozen=True)
class AdnConfig:
    """What an ADN is: per layer its maps, lambda and pooling region; filter size; image size;
    ISTA iterations per layer per inference.

    The defaults are the paper's (ICCV 2011, section 4): 15, 50, 100, 150 maps, 7x7 filters,
    pooling 3x3x3 then 3x3x2, lambda 2, 0.1, 0.005, 0.001, 150x150 images.
    """

    maps: tuple[int, ...] = PAPER_MAPS
    lambdas: tuple[float, ...] = PAPER_LAMBDAS
    regions: tuple[tuple[int, int, int], ...] = PAPER_REGIONS
    filter_size: int = 7
    image_size: int = 150
    ista_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        layers = len(self.maps)
        if layers < 1 or len(self.lambdas) != layers or len(self.regions) != layers:
            raise ValueError(f"maps, lambdas and regions must name the same layers, got {self.to_dict()}")
        if self.filter_size < 1 or self.filter_size % 2 == 0:
            raise ValueError(f"the filter size must be odd and positive, not {self.filter_size}")
        if min(self.maps) < 1 or min(self.lambdas) <= 0 or self.ista_steps < 1 or self.image_size < 8:
            raise ValueError(f"maps, lambdas and ISTA steps must be positive, got {self.to_dict()}")

    @property
    def layers(self) -> int:
        """How many layers."""
        return len(self.maps)

    def channels_in(self, layer: int) -> int:
        """C_{l-1}: the pooled maps of the layer below layer ``layer`` (1-based; 1 for the image)."""
        if layer == 1:
            return 1
        return math.ceil(self.maps[layer - 2] / self.regions[layer - 2][0])

    def pooled_maps(self, layer: int) -> int:
        """How many pooled maps layer ``layer`` (1-based) has."""
        return math.ceil(self.maps[layer - 1] / self.regions[layer - 1][0])

    def map_size(self, layer: int, image: int | None = None) -> tuple[int, int]:
        """The (height, width) of layer ``layer``'s unpooled maps for a square image."""
        h = w = self.image_size if image is None else image
        for below in range(1, layer):
            _, h, w = pooled_size((self.maps[below - 1], h, w), self.regions[below - 1])
        return h, w

    def truncated(self, layers: int) -> AdnConfig:
        """The same settings for the first ``layers`` layers."""
        return AdnConfig(
            maps=self.maps[:layers],
            lambdas=self.lambdas[:layers],
            regions=self.regions[:layers],
            filter_size=self.filter_size,
            image_size=self.image_size,
            ista_steps=self.ista_steps,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (lists for tuples)."""
        return {
            key: (list(map(list, v)) if key == "regions" else list(v) if isinstance(v, tuple) else v)
            for key, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdnConfig:
        """The config :meth:`to_dict` wrote."""
        values = dict(data)
        values["maps"] = tuple(int(v) for v in values["maps"])
        values["lambdas"] = tuple(float(v) for v in values["lambdas"])
        values["regions"] = tuple((int(a), int(b), int(c)) for a, b, c in values["regions"])
        return cls(**values)


def random_filters(config: AdnConfig, layer: int, generator: torch.Generator) -> Tensor:
    """Layer ``layer``'s starting filters: Gaussian, each map's filter at unit norm (the paper
    starts from small random filters; the scale is irrelevant once they are normalised)."""
    k, c, s = config.maps[layer - 1], config.channels_in(layer), config.filter_size
    weight = torch.randn(k, c, s, s, generator=generator)
    return weight / weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def filter_norm_squared(weight: Tensor, grid: int = SPECTRUM_GRID, iterations: int = 40) -> float:
    """``||F||^2`` of the synthesis ``z -> sum_k f_k * z_k`` (for any map size): the largest
    squared singular value of the filters' DFT matrix ``[C, K]`` over frequencies, each by power
    iteration, on a ``grid`` x ``grid`` DFT, raised 5% for the frequencies between grid points and
    for the power iteration approaching from below (tests compare it with an exact SVD)."""
    spectra = torch.fft.fft2(weight.detach().double().cpu(), s=(grid, grid))  # [K, C, g, g]
    a = spectra.permute(2, 3, 1, 0).reshape(grid * grid, weight.shape[1], weight.shape[0])  # [f, C, K]
    if a.shape[1] < a.shape[2]:  # iterate on the smaller side: a a^H has the same top eigenvalue
        a = a.mH
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(a.shape[0], a.shape[2], 1, generator=generator, dtype=torch.float64).to(a.dtype)
    estimate = torch.zeros(a.shape[0], dtype=torch.float64)
    a, ah = a.contiguous(), a.mH.contiguous()  # contiguous: batched products 4x faster
    for _ in range(iterations):  # per frequency, power iteration on a^H a (batched matrix-vector)
        v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-300)
        w = ah @ (a @ v)
        estimate = (v.conj() * w).sum(dim=(1, 2)).real
        v = w
    return float(estimate.max()) * 1.05


@dataclass
class LayerCode:
    """Layer l's inferred code for a batch: unpooled maps z, pooled maps p, its switches, the
    cost ``(lambda/2)||R_l p - y||^2 + |p|_1`` (summed over the batch) before the first
    iteration and after each (``steps + 1`` values, never rising), and each image's final step."""

    z: Tensor
    p: Tensor
    switches: Switches
    costs: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)  # each image's step size at the end


@dataclass
class AdnNetwork:
    """The filters learnt so far (``filters[i]`` is layer i+1's) under ``config``."""

    config: AdnConfig
    filters: list[Tensor] = field(default_factory=list)

    _norms: dict[int, tuple[Tensor, int, float]] = field(default_factory=dict, repr=False, compare=False)
    _steps: dict[int, tuple[tuple, float]] = field(default_factory=dict, repr=False, compare=False)

    def _norm_squared(self, weight: Tensor) -> float:
        """:func:`filter_norm_squared`, kept per filter tensor until it changes (an SVD per
        frequency is too slow to redo on every inference)."""
        key = id(weight)
        cached = self._norms.get(key)
        if cached is not None and cached[0] is weight and cached[1] == weight._version:
            return cached[2]
        value = filter_norm_squared(weight)
        self._norms[key] = (weight, weight._version, value)
        return value

    @property
    def trained_layers(self) -> int:
        """How many layers have filters."""
        return len(self.filters)

    def step_size(self, layer: int, filters: Sequence[Tensor] | None = None) -> float:
        """``beta_l = 0.9 / (lambda_l * prod_{i<=l} ||F_i||^2)`` for layer ``layer`` (1-based)."""
        banks = list(self.filters[:layer] if filters is None else filters)
        bound = math.prod(self._norm_squared(w) for w in banks)
        return STEP_MARGIN / (self.config.lambdas[layer - 1] * bound)

    def infer_layer(
        self,
        y: Tensor,
        layer: int,
        below: Sequence[Switches],
        z: Tensor | None = None,
        steps: int | None = None,
        filters: Sequence[Tensor] | None = None,
        track_cost: bool = True,
    ) -> LayerCode:
        """Layer ``layer``'s code for images ``y`` ``[N, 1, H, W]`` (contrast-normalised), the
        switches ``below`` of layers 1..l-1 fixed; ISTA from ``z`` (zeros when None).

        Args:
            y: the images.
            layer: which layer, 1-based.
            below: the switches of the layers below.
            z: where to start (warm start during training); None: all zeros.
            steps: ISTA iterations; None: the config's.
            filters: layers 1..l's filters (training's current ones); None: the network's.
            track_cost: record the batch's cost before the first iteration and after each.
        """
        banks = list(self.filters[:layer] if filters is None else filters)
        if len(banks) != layer or len(below) != layer - 1:
            raise ValueError(f"layer {layer} needs {layer} filter banks and {layer - 1} switches below")
        lam, region = self.config.lambdas[layer - 1], self.config.regions[layer - 1]
        steps = self.config.ista_steps if steps is None else steps
        if z is None:
            h, w = below[-1].pooled_shape[-2:] if below else y.shape[-2:]
            z = y.new_zeros(y.shape[0], self.config.maps[layer - 1], h, w)
        n = y.shape[0]
        beta = torch.full((n, 1, 1, 1), self.initial_step(layer, banks), dtype=y.dtype, device=y.device)
        floor = self.step_size(layer, banks)  # below it every step lowers the cost with the switches fixed

        def image_costs(residual: Tensor, pooled: Tensor) -> Tensor:
            return 0.5 * lam * residual.pow(2).flatten(1).sum(1) + pooled.abs().flatten(1).sum(1)

        with torch.no_grad():
            p, switches = pool(z, region)
            z = unpool(p, switches)
            residual = reconstruct_unpooled(z, banks, below) - y
            cost = image_costs(residual, p)
            costs = [float(cost.sum())] if track_cost else []
            for _ in range(steps):
                p_new, switches_new = descend(z, residual, banks, below, lam, beta, region)
                z_new = unpool(p_new, switches_new)
                residual_new = reconstruct_unpooled(z_new, banks, below) - y
                cost_new = image_costs(residual_new, p_new)
                # per image: a step that raised the cost is undone and the image's step halved
                # (never below the bound that guarantees descent), so an image's code does not
                # depend on the others in its batch
                keep = (cost_new <= cost) | (beta.view(-1) <= floor)
                k4 = keep.view(-1, 1, 1, 1)
                z = torch.where(k4, z_new, z)
                p = torch.where(k4, p_new, p)
                index = torch.where(k4, switches_new.index, switches.index)
                switches = Switches(index=index, shape=switches.shape, region=switches.region)
                residual = torch.where(k4, residual_new, residual)
                cost = torch.where(keep, cost_new, cost)
                beta = torch.where(k4, beta, (beta / 2).clamp(min=floor))
                if track_cost:
                    costs.append(float(cost.sum()))
        return LayerCode(z=z, p=p, switches=switches, costs=costs, steps=beta.view(-1).tolist())

    def initial_step(self, layer: int, filters: Sequence[Tensor] | None = None) -> float:
        """The step ISTA starts from at layer ``layer``: ``0.9 / (lambda_l * ||R_l||^2)`` with
        ``||R_l||^2`` estimated by power iteration for the filters alone (a 64-px canvas, every
        switch in its region's corner), never below :meth:`step_size`'s guaranteed one.
        The bound multiplies each layer's norm and ignores that unpooling spreads the maps
        out, so above layer 1 it is orders of magnitude too small; the estimate can be too
        large for some images, whose steps :meth:`infer_layer` then halves."""
        banks = list(self.filters[:layer] if filters is None else filters)
        key = -layer  # negative keys: step sizes; positive ids: filter norms
        versions = tuple((id(w), w._version) for w in banks)
        cached = self._steps.get(key)
        if cached is not None and cached[0] == versions:
            return cached[1]
        size = min(self.config.image_size, 64)
        switches = []
        h = w = size
        for i in range(layer):
            maps = torch.zeros(1, self.config.maps[i], h, w, dtype=banks[0].dtype)
            _, corner = pool(maps, self.config.regions[i])
            switches.append(corner)
            h, w = corner.pooled_shape[-2:]
        estimate = operator_norm_squared([w.detach() for w in banks], switches, iterations=30, seed=0)
        value = max(STEP_MARGIN / (self.config.lambdas[layer - 1] * estimate * 1.1), self.step_size(layer, banks))
        self._steps[key] = (versions, value)
        return value

    def infer(self, y: Tensor, layers: int | None = None, steps: int | None = None) -> list[LayerCode]:
        """Every layer's code for images ``y``, bottom-up: layer l inferred with the switches
        layers 1..l-1's own inference found (the paper's layer-wise scheme)."""
        layers = self.trained_layers if layers is None else layers
        if not 1 <= layers <= self.trained_layers:
            raise ValueError(f"the network has {self.trained_layers} trained layers, asked for {layers}")
        codes: list[LayerCode] = []
        for layer in range(1, layers + 1):
            below = [code.switches for code in codes]
            codes.append(self.infer_layer(y, layer, below, steps=steps, track_cost=False))
        return codes

    def state(self) -> dict[str, Any]:
        """What :meth:`from_state` needs: tensors and plain values only (``weights_only`` loads)."""
        return {
            "config": self.config.to_dict(),
            "filters": [w.detach().cpu().clone() for w in self.filters],
            "norms": [self._norm_squared(w) for w in self.filters],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AdnNetwork:
        """The network :meth:`state` described."""
        config = AdnConfig.from_dict(state["config"])
        filters = [torch.as_tensor(w, dtype=torch.float32) for w in state["filters"]]
        for layer, weight in enumerate(filters, start=1):
            expected = (config.maps[layer - 1], config.channels_in(layer), config.filter_size, config.filter_size)
            if tuple(weight.shape) != expected:
                raise ValueError(f"layer {layer}'s filters are {tuple(weight.shape)}, the config says {expected}")
        network = cls(config=config, filters=filters)
        network.prime_norms(filters, state.get("norms") or [])
        return network

    def prime_norms(self, filters: Sequence[Tensor], norms: Sequence[float]) -> None:
        """Take ``norms`` (from :meth:`state`) as the filter norms of ``filters``, so a loaded
        network need not recompute them."""
        for weight, value in zip(filters, norms):
            self._norms[id(weight)] = (weight, weight._version, float(value))
