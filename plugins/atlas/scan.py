"""The atlas's one pass over the data: for every listed layer at once, each unit's exact top-k
images (the top9 analysis's running top-k, its tie rule), its streamed statistics (activity,
histogram of per-image maxima, class means), and between consecutive listed layers the moments
of the per-image maxima that their correlation needs. Memory: O(units x (k + bins + classes))
per layer plus units_a x units_b per pair of consecutive layers, whatever the data's size.
Every accumulator merges across torchrun shards and round-trips through a checkpoint."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

import vizkit
from vizkit.toolkit import ProcessGroup


class CrossMoments:
    """Sums of two layers' per-image maxima, their squares and their products: the Pearson
    correlation of every unit of one with every unit of the other, streamed (float64)."""

    def __init__(self, units_a: int, units_b: int) -> None:
        self.count = 0
        self.sum_a = torch.zeros(units_a, dtype=torch.float64)
        self.sum_b = torch.zeros(units_b, dtype=torch.float64)
        self.squares_a = torch.zeros(units_a, dtype=torch.float64)
        self.squares_b = torch.zeros(units_b, dtype=torch.float64)
        self.products = torch.zeros(units_a, units_b, dtype=torch.float64)

    _FIELDS = ("sum_a", "sum_b", "squares_a", "squares_b", "products")

    def update(self, a: Tensor, b: Tensor) -> None:
        """Add a batch of per-image maxima, ``a`` [B, units_a] and ``b`` [B, units_b]."""
        a, b = a.to("cpu", torch.float64), b.to("cpu", torch.float64)
        self.count += a.shape[0]
        self.sum_a += a.sum(0)
        self.sum_b += b.sum(0)
        self.squares_a += (a * a).sum(0)
        self.squares_b += (b * b).sum(0)
        self.products += a.T @ b

    def correlation(self) -> Tensor:
        """[units_a, units_b] Pearson correlation; 0 where a unit is constant over the images."""
        n = max(self.count, 1)
        mean_a, mean_b = self.sum_a / n, self.sum_b / n
        covariance = self.products / n - mean_a[:, None] * mean_b[None, :]
        spread_a = (self.squares_a / n - mean_a**2).clamp_min(0).sqrt()
        spread_b = (self.squares_b / n - mean_b**2).clamp_min(0).sqrt()
        scale = spread_a[:, None] * spread_b[None, :]
        # a spread that is float rounding of a constant unit counts as none
        tiny = 1e-12 * (mean_a.abs()[:, None] * mean_b.abs()[None, :] + 1e-30)
        return torch.where(scale > tiny, covariance / scale.clamp_min(1e-300), 0.0).clamp(-1, 1)

    def merge(self, other: CrossMoments) -> None:
        self.count += other.count
        for name in self._FIELDS:
            getattr(self, name).add_(getattr(other, name))

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, **{name: getattr(self, name).clone() for name in self._FIELDS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        for name in self._FIELDS:
            setattr(self, name, state[name].clone())


class AtlasState:
    """Everything the scan accumulates, per listed layer and per pair of consecutive layers."""

    def __init__(self, layers: list[str], units: dict[str, int], k: int, classes: int, bins: int) -> None:
        self.layers = layers
        self.topk = {layer: vizkit.toolkit.RunningTopK.empty(units[layer], k) for layer in layers}
        self.stats = {layer: vizkit.toolkit.UnitStatistics(units[layer], classes, bins) for layer in layers}
        self.pairs = {(a, b): CrossMoments(units[a], units[b]) for a, b in itertools.pairwise(layers)}

    def update(self, activations: dict[str, Tensor], indices: Tensor, labels: Tensor | None) -> None:
        """Fold in one batch: each layer's activation [B, C, h, w] or [B, C] of images ``indices``."""
        maxima = {}
        for layer in self.layers:
            activation = activations[layer].detach()
            flat = activation.flatten(2).float() if activation.dim() > 2 else activation.float()[:, :, None]
            peak = flat.amax(2)
            maxima[layer] = peak
            self.topk[layer].update(activation, indices, maxima=peak)
            self.stats[layer].update(peak, flat.mean(2), labels)
        for (a, b), moments in self.pairs.items():
            moments.update(maxima[a], maxima[b])

    def state_dict(self) -> dict[str, Any]:
        return {
            "topk": {
                layer: {"values": t.values.cpu(), "images": t.images.cpu(), "positions": t.positions.cpu()}
                for layer, t in self.topk.items()
            },
            "stats": {layer: s.state_dict() for layer, s in self.stats.items()},
            "pairs": {f"{a}\n{b}": m.state_dict() for (a, b), m in self.pairs.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for layer in self.layers:
            saved = state["topk"][layer]
            self.topk[layer] = vizkit.toolkit.RunningTopK(saved["values"], saved["images"], saved["positions"])
            self.stats[layer].load_state_dict(state["stats"][layer])
        for (a, b), moments in self.pairs.items():
            moments.load_state_dict(state["pairs"][f"{a}\n{b}"])

    def merge_shards(self, group: ProcessGroup) -> None:
        """Every process's accumulators into one (a collective: all ranks call it; every rank
        ends with the whole data set's state). The top-k merge keeps the single-process answer
        exactly (ties: the smaller image index); the sums agree to float64 rounding."""
        if group.world == 1:
            return
        for layer in self.layers:
            mine = self.topk[layer]
            merged = vizkit.toolkit.RunningTopK.empty(mine.values.shape[0], mine.k)
            for values, images, positions in zip(
                group.all_gather(mine.values.contiguous()),
                group.all_gather(mine.images.contiguous()),
                group.all_gather(mine.positions.contiguous()),
            ):
                merged.merge(values.cpu(), images.cpu(), positions.cpu())
            self.topk[layer] = merged
            self.stats[layer] = _merged(self.stats[layer], group, vizkit.toolkit.UnitStatistics)
        for pair, moments in self.pairs.items():
            self.pairs[pair] = _merged(moments, group, None)


def _merged(accumulator: Any, group: ProcessGroup, kind: Any) -> Any:
    """The sum over processes of an accumulator with ``state_dict`` / ``merge``: each tensor of
    its state gathered, rebuilt per rank and merged in rank order (the same order on every rank)."""
    state = accumulator.state_dict()
    gathered: list[dict[str, Any]] = [dict() for _ in range(group.world)]
    for name, value in state.items():
        tensor = value if isinstance(value, Tensor) else torch.tensor(value)
        for rank, piece in enumerate(group.all_gather(tensor.contiguous())):
            gathered[rank][name] = piece.cpu() if isinstance(value, Tensor) else type(value)(piece.item())
    total = None
    for rank_state in gathered:
        if kind is not None:
            part = kind(accumulator.units, accumulator.classes, accumulator.bins)
        else:
            part = CrossMoments(len(accumulator.sum_a), len(accumulator.sum_b))
        part.load_state_dict(rank_state)
        if total is None:
            total = part
        else:
            total.merge(part)
    return total
