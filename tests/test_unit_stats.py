"""Per-unit statistics for the unit atlas (issue 28): streamed, exact, mergeable, resumable;
checked against a brute-force computation over all images and against hand examples of
Morcos et al.'s class-selectivity index."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vizkit.toolkit import UnitStatistics


def _data(seed: int = 0, images: int = 200, units: int = 6, classes: int = 4):
    rng = np.random.default_rng(seed)
    maxima = rng.normal(size=(images, units)) * np.array([0.01, 1, 10, 100, 1e-3, 3])
    maxima[:, 5] = np.abs(maxima[:, 5])  # a post-ReLU unit
    maxima[:, 0] = 0.0  # a silent one
    means = maxima / 3
    labels = rng.integers(0, classes, size=images)
    return torch.from_numpy(maxima), torch.from_numpy(means), torch.from_numpy(labels)


def _stream(maxima, means, labels, batch=17, classes=4, bins=16):
    stats = UnitStatistics(maxima.shape[1], classes, bins)
    for start in range(0, len(maxima), batch):
        stats.update(maxima[start : start + batch], means[start : start + batch], labels[start : start + batch])
    return stats


def test_streamed_statistics_equal_brute_force():
    maxima, means, labels = _data()
    stats = _stream(maxima, means, labels)
    m, a, y = maxima.numpy(), means.numpy(), labels.numpy()
    assert stats.count == len(m)
    assert np.allclose(stats.mean.numpy(), a.mean(0))
    assert np.allclose(stats.mean_max.numpy(), m.mean(0))
    assert np.array_equal(stats.active_fraction.numpy(), (m > 0).mean(0))
    expected = np.stack([m[y == c].mean(0) for c in range(4)], axis=1)
    assert np.allclose(stats.class_mean.numpy(), expected)
    edges, counts = stats.histogram()
    for unit in range(m.shape[1]):
        reference, _ = np.histogram(m[:, unit], bins=edges[unit].numpy())
        top = m[:, unit] == edges[unit, -1].item()  # numpy closes the last bin; ours are half-open
        assert not top.any()
        assert np.array_equal(counts[unit].numpy(), reference), unit
        assert counts[unit].sum() == len(m)
    # the range is the smallest power of two above every |maximum|: exact bins, tight range
    for unit in range(1, 6):
        scale = edges[unit, -1].item()
        assert scale > np.abs(m[:, unit]).max() >= scale / 2 and math.log2(scale).is_integer()
    assert counts[0, 8] == len(m)  # the silent unit: every image in the bin that starts at 0


def test_order_shards_and_resume_give_the_same_statistics():
    maxima, means, labels = _data(seed=1)
    whole = _stream(maxima, means, labels)
    order = torch.randperm(len(maxima), generator=torch.Generator().manual_seed(2))
    shuffled = _stream(maxima[order], means[order], labels[order], batch=5)
    first = _stream(maxima[:80], means[:80], labels[:80])
    second = _stream(maxima[80:], means[80:], labels[80:])
    first.merge(second)  # two torchrun ranks' shards
    resumed = UnitStatistics(6, 4, 16)
    resumed.load_state_dict(_stream(maxima[:80], means[:80], labels[:80]).state_dict())
    for start in range(80, len(maxima), 17):
        resumed.update(maxima[start : start + 17], means[start : start + 17], labels[start : start + 17])
    for other in (shuffled, first, resumed):
        assert torch.equal(other.counts, whole.counts)
        assert torch.equal(other.scale, whole.scale)
        assert torch.equal(other.active, whole.active) and torch.equal(other.class_count, whole.class_count)
        assert torch.allclose(other.sum_max, whole.sum_max) and torch.allclose(other.class_sum_max, whole.class_sum_max)
        assert torch.allclose(other.selectivity(), whole.selectivity(), equal_nan=True)


def test_class_selectivity_against_hand_examples():
    # 3 classes, 2 images each; units: only class 0 / the same for all / means 3,1,1 / silent / negative
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    maxima = torch.tensor(
        [
            [2.0, 1.0, 3.0, 0.0, -1.0],
            [4.0, 1.0, 3.0, 0.0, -2.0],
            [0.0, 1.0, 1.0, 0.0, 1.0],
            [0.0, 1.0, 1.0, 0.0, 1.0],
            [0.0, 1.0, 0.5, 0.0, 1.0],
            [0.0, 1.0, 1.5, 0.0, 1.0],
        ]
    )
    stats = UnitStatistics(5, 3, 8)
    stats.update(maxima, maxima, labels)
    assert torch.allclose(stats.class_mean[0], torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64))
    selectivity = stats.selectivity()
    assert selectivity[0] == pytest.approx(1.0)  # (3 - 0) / (3 + 0)
    assert selectivity[1] == pytest.approx(0.0)  # (1 - 1) / (1 + 1)
    assert selectivity[2] == pytest.approx(0.5)  # (3 - 1) / (3 + 1)
    assert selectivity[3] == 0.0  # silent
    assert math.isnan(selectivity[4])  # a negative class mean: the index is undefined
    assert stats.top_classes(2)[0].tolist() == [0, 1]  # ties (classes 1 and 2 at 0): the lower index
    assert stats.top_classes(2)[2].tolist() == [0, 1]


def test_bad_input_is_refused():
    stats = UnitStatistics(3, 2)
    with pytest.raises(ValueError, match="labels"):
        stats.update(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="class indices"):
        stats.update(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="\\[B, 3\\]"):
        stats.update(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same layer"):
        stats.merge(UnitStatistics(3, 2, bins=8))
    with pytest.raises(ValueError, match="even"):
        UnitStatistics(3, 2, bins=7)
    assert math.isnan(UnitStatistics(2, 0).selectivity()[0])  # no classes: no selectivity
