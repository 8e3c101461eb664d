"""Per-unit statistics of a layer over a data set, streamed: what a unit atlas says of each unit
beside its exemplars (how often it fires, how strongly, for which classes).

:class:`UnitStatistics` keeps counts and sums only: memory is O(units x (bins + classes)),
whatever the data set's size; two accumulators over disjoint shards merge into the one a single
pass would give (torchrun), and the state round-trips through a plain dict of tensors (resume).
Everything is exact: the histogram of each unit's per-image maxima keeps exact counts in bins
whose width doubles (adjacent bins merged) whenever a value falls outside the range so far, so its
edges never depend on the order the images came in.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class UnitStatistics:
    """Streaming per-unit statistics of one layer.

    Args:
        units: the layer's units (channels).
        classes: the data set's classes (0: no labels; no class statistics).
        bins: histogram bins per unit, even: half for negative maxima, half for positive ones.

    Per image, a unit contributes its maximum over the map (its activation, for a linear
    layer) and its mean over the map; :meth:`update` takes both, [B, units].
    """

    def __init__(self, units: int, classes: int = 0, bins: int = 32) -> None:
        if bins < 2 or bins % 2:
            raise ValueError(f"bins must be even and at least 2, not {bins}")
        self.units, self.classes, self.bins = int(units), int(classes), int(bins)
        self.count = 0
        self.sum_mean = torch.zeros(units, dtype=torch.float64)
        self.sum_max = torch.zeros(units, dtype=torch.float64)
        self.active = torch.zeros(units, dtype=torch.long)
        self.scale = torch.zeros(units, dtype=torch.float64)  # half-range R of each unit's histogram (0: none yet)
        self.counts = torch.zeros(units, bins, dtype=torch.long)
        self.class_count = torch.zeros(max(classes, 0), dtype=torch.long)
        self.class_sum_max = torch.zeros(units, max(classes, 0), dtype=torch.float64)

    # ------------------------------------------------------------------ accumulating
    def update(self, maxima: Tensor, means: Tensor, labels: Tensor | None = None) -> None:
        """Add a batch: each image's per-unit maximum and mean ([B, units]) and its class ([B])."""
        maxima = maxima.detach().to("cpu", torch.float64)
        means = means.detach().to("cpu", torch.float64)
        if maxima.shape != means.shape or maxima.dim() != 2 or maxima.shape[1] != self.units:
            raise ValueError(f"update needs [B, {self.units}] maxima and means, not {tuple(maxima.shape)}")
        self.count += maxima.shape[0]
        self.sum_mean += means.sum(0)
        self.sum_max += maxima.sum(0)
        self.active += (maxima > 0).sum(0)
        self._histogram(maxima)
        if self.classes:
            if labels is None:
                raise ValueError("update needs the images' labels: the statistics were made with classes")
            labels = labels.detach().to("cpu", torch.long).reshape(-1)
            if labels.numel() != maxima.shape[0] or bool(((labels < 0) | (labels >= self.classes)).any()):
                raise ValueError(f"labels must be {maxima.shape[0]} class indices below {self.classes}")
            self.class_count += torch.bincount(labels, minlength=self.classes)
            self.class_sum_max.index_add_(1, labels, maxima.T)

    def _histogram(self, maxima: Tensor) -> None:
        largest = maxima.abs().amax(0)
        needed = torch.where(largest > 0, torch.exp2(torch.ceil(torch.log2(largest.clamp_min(1e-300)))), 0.0)
        needed = torch.where(needed <= largest, needed * 2, needed)  # the range is half-open: [-R, R)
        self._grow(needed)
        half = self.bins // 2
        scale = self.scale.clamp_min(1e-300)[None, :]
        index = torch.floor(maxima / scale * half).long() + half  # [B, U] in [0, bins)
        index = index.clamp(0, self.bins - 1)
        flat = index + torch.arange(self.units)[None, :] * self.bins  # unit u's bin i: u * bins + i
        self.counts += torch.bincount(flat.reshape(-1), minlength=self.units * self.bins).view(self.units, self.bins)

    def _grow(self, needed: Tensor) -> None:
        """Double each unit's range (merging adjacent bins on each side of 0) until it holds
        ``needed`` (a power of two per unit, 0 where nothing is needed)."""
        start = (self.scale == 0) & (needed > 0)
        self.scale = torch.where(start, needed, self.scale)
        half = self.bins // 2
        while True:
            short = (self.scale > 0) & (self.scale < needed)
            if not bool(short.any()):
                return
            rows = self.counts[short]
            negative, positive = rows[:, :half], rows[:, half:]
            merged_pos = positive.reshape(-1, half // 2 if half > 1 else 1, 2 if half > 1 else 1).sum(-1)
            merged_neg = negative.reshape(-1, half // 2 if half > 1 else 1, 2 if half > 1 else 1).sum(-1)
            new = torch.zeros_like(rows)
            if half > 1:
                new[:, half : half + half // 2] = merged_pos  # [0, 2R) in the first half of the positive side
                new[:, half - half // 2 : half] = merged_neg  # [-2R, 0) in the last half of the negative side
            else:
                new = rows
            self.counts[short] = new
            self.scale = torch.where(short, self.scale * 2, self.scale)

    def merge(self, other: UnitStatistics) -> None:
        """Add another accumulator's images (another shard of the same data set)."""
        if (other.units, other.classes, other.bins) != (self.units, self.classes, self.bins):
            raise ValueError("only statistics of the same layer, classes and bins merge")
        common = torch.maximum(self.scale, other.scale)
        self._grow(common)
        theirs = UnitStatistics(self.units, self.classes, self.bins)
        theirs.load_state_dict(other.state_dict())
        theirs._grow(common)
        self.count += other.count
        self.sum_mean += other.sum_mean
        self.sum_max += other.sum_max
        self.active += other.active
        self.counts += theirs.counts
        self.class_count += other.class_count
        self.class_sum_max += other.class_sum_max

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Tensor | int]:
        """Everything, as tensors and ints (``torch.save`` with ``weights_only`` reads it)."""
        return {
            "units": self.units,
            "classes": self.classes,
            "bins": self.bins,
            "count": self.count,
            **{
                name: getattr(self, name).clone()
                for name in ("sum_mean", "sum_max", "active", "scale", "counts", "class_count", "class_sum_max")
            },
        }

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        if (state["units"], state["classes"], state["bins"]) != (self.units, self.classes, self.bins):
            raise ValueError("these statistics are of another layer, classes or bins")
        self.count = int(state["count"])
        for name in ("sum_mean", "sum_max", "active", "scale", "counts", "class_count", "class_sum_max"):
            value = state[name]
            assert isinstance(value, Tensor)
            setattr(self, name, value.clone())

    # ------------------------------------------------------------------ results
    @property
    def mean(self) -> Tensor:
        """[units] mean over images of each unit's mean activation over the map."""
        return self.sum_mean / max(self.count, 1)

    @property
    def mean_max(self) -> Tensor:
        """[units] mean over images of each unit's per-image maximum."""
        return self.sum_max / max(self.count, 1)

    @property
    def active_fraction(self) -> Tensor:
        """[units] the fraction of images in which the unit's maximum is above 0."""
        return self.active.double() / max(self.count, 1)

    def histogram(self) -> tuple[Tensor, Tensor]:
        """Each unit's per-image maxima as (edges [units, bins + 1], counts [units, bins]); a unit
        that was 0 on every image has all its counts in the bin starting at 0, edges [-1, 1)."""
        half = self.bins // 2
        scale = torch.where(self.scale > 0, self.scale, 1.0)
        steps = torch.arange(-half, half + 1, dtype=torch.float64)
        return scale[:, None] * steps[None, :] / half, self.counts.clone()

    @property
    def class_mean(self) -> Tensor:
        """[units, classes] mean of the per-image maximum over each class's images (NaN for a
        class without images)."""
        counts = self.class_count.double()
        return torch.where(counts > 0, self.class_sum_max / counts.clamp_min(1), math.nan)

    def selectivity(self) -> Tensor:
        """[units] class-selectivity index (Morcos et al. 2018): (mu_max - mu_rest) /
        (mu_max + mu_rest), mu_max the largest class mean of the per-image maximum and mu_rest the
        mean of the other classes' means. 0: the same for every class; 1: only one class drives
        it. 0 for a unit silent on every class; NaN where it is undefined (fewer than two classes
        seen, or means that are not positive: a layer before its ReLU)."""
        means = self.class_mean
        seen = ~torch.isnan(means[0]) if self.units else torch.zeros(0, dtype=torch.bool)
        if int(seen.sum()) < 2:
            return torch.full((self.units,), math.nan, dtype=torch.float64)
        means = means[:, seen]
        top = means.amax(1)
        rest = (means.sum(1) - top) / (means.shape[1] - 1)
        total = top + rest
        index = (top - rest) / total.where(total != 0, 1.0)
        silent = (top == 0) & (rest == 0)
        return torch.where(silent, 0.0, torch.where((means.amin(1) < 0) | (total <= 0), math.nan, index))

    def top_classes(self, n: int = 3) -> Tensor:
        """[units, n] the classes with the largest mean per-image maximum, largest first (ties:
        the lower class index first)."""
        means = torch.nan_to_num(self.class_mean, nan=-math.inf)
        order = torch.sort(-means, dim=1, stable=True).indices
        return order[:, : min(n, self.classes)]
