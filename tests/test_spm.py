"""Spatial pyramid matching (vizkit.toolkit.spm): each stage against a brute-force or hand-made
reference, the Caltech split protocol on fake folder trees, and the whole pipeline end to end on
synthetic images (and, slow, on five real Caltech-101 classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vizkit
from helpers import SHARED, needs_shared
from vizkit.toolkit import spm

CALTECH = SHARED / "data" / "caltech101"


# ------------------------------------------------------------------------------- descriptors
def brute_force_sums(maps: torch.Tensor, patch: int, stride: int, cells: int) -> torch.Tensor:
    """Unnormalised descriptors by plain loops: [N, P, K*cells*cells]."""
    n, k, height, width = maps.shape
    cell = patch // cells
    out = []
    for y0 in range(0, height - patch + 1, stride):
        for x0 in range(0, width - patch + 1, stride):
            values = torch.zeros(n, k, cells, cells, dtype=maps.dtype)
            for cy in range(cells):
                for cx in range(cells):
                    window = maps[:, :, y0 + cy * cell : y0 + (cy + 1) * cell, x0 + cx * cell : x0 + (cx + 1) * cell]
                    values[:, :, cy, cx] = window.abs().sum(dim=(2, 3))
            out.append(values.reshape(n, -1))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize(("patch", "stride", "cells"), [(8, 4, 4), (8, 6, 2), (6, 3, 3), (4, 5, 1)])
def test_dense_descriptors_match_loops(patch, stride, cells):
    torch.manual_seed(0)
    maps = torch.randn(2, 3, 21, 19, dtype=torch.float64)
    raw, centres = spm.dense_descriptors(maps, patch, stride, cells, normalise=False)
    expected = brute_force_sums(maps, patch, stride, cells)
    assert raw.shape == expected.shape
    torch.testing.assert_close(raw, expected, rtol=1e-12, atol=1e-12)
    ys = [(y0 + patch / 2) / 21 for y0 in range(0, 21 - patch + 1, stride)]
    xs = [(x0 + patch / 2) / 19 for x0 in range(0, 19 - patch + 1, stride)]
    torch.testing.assert_close(centres, torch.tensor([[y, x] for y in ys for x in xs], dtype=centres.dtype))
    assert ((centres > 0) & (centres < 1)).all()


def test_sift_normalisation():
    torch.manual_seed(0)
    maps = torch.rand(1, 2, 24, 24)
    maps[..., :8, :8] = 0  # the first patch sees nothing
    maps[0, 0, 20, 20] = 100.0  # one dominant value: clipping must bite there
    raw, _ = spm.dense_descriptors(maps, 8, 8, 2, normalise=False)
    descriptors, _ = spm.dense_descriptors(maps, 8, 8, 2)
    assert (descriptors[0, 0] == 0).all()
    norms = descriptors[0, 1:].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    unit = raw / raw.norm(dim=-1, keepdim=True).clamp(min=1e-30)
    assert (unit.max(dim=-1).values > 0.2).any()  # the dominant patch
    clipped = unit.clamp(max=0.2)
    assert clipped.max() <= 0.2
    torch.testing.assert_close(descriptors[0, 1:], (clipped / clipped.norm(dim=-1, keepdim=True))[0, 1:])
    # a hand example: [10, 1, 1, 1] -> clip the first entry of the unit vector at 0.2, renormalise
    by_hand = torch.tensor([0.2, 1 / 103**0.5, 1 / 103**0.5, 1 / 103**0.5], dtype=torch.float64)
    torch.testing.assert_close(
        spm.sift_normalise(torch.tensor([10.0, 1, 1, 1], dtype=torch.float64)), by_hand / by_hand.norm()
    )


def test_dense_descriptors_refuse_small_maps():
    with pytest.raises(vizkit.UsageError, match="smaller than one 16x16 patch"):
        spm.dense_descriptors(torch.rand(1, 2, 15, 40))
    with pytest.raises(vizkit.UsageError, match="multiple of cells"):
        spm.dense_descriptors(torch.rand(1, 2, 40, 40), patch=10, cells=4)


# ------------------------------------------------------------------------------- words
def test_quantise_is_the_nearest_centre(monkeypatch):
    torch.manual_seed(0)
    descriptors = torch.randn(3, 11, 5, dtype=torch.float64)
    centres = torch.randn(4, 5, dtype=torch.float64)
    expected = ((descriptors[..., None, :] - centres) ** 2).sum(-1).argmin(-1)
    assert torch.equal(spm.quantise(descriptors, centres), expected)
    monkeypatch.setattr(spm, "KERNEL_BUDGET", 8 * 20)  # two rows a chunk
    assert torch.equal(spm.quantise(descriptors, centres.numpy()), expected)
    assert torch.equal(spm.quantise(descriptors.half(), centres), spm.quantise(descriptors.half().double(), centres))


def test_fit_codebook_finds_the_clusters():
    rng = np.random.default_rng(0)
    truth = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]])
    data = np.concatenate([c + 0.1 * rng.standard_normal((300, 3)) for c in truth]).astype(np.float16)
    centres = spm.fit_codebook(data, words=3, seed=0, sample=500)
    assert centres.shape == (3, 3) and centres.dtype == np.float32
    assert np.abs(np.sort(centres, axis=0) - np.sort(truth, axis=0)).max() < 0.2
    np.testing.assert_array_equal(centres, spm.fit_codebook(data, words=3, seed=0, sample=500))
    with pytest.raises(vizkit.UsageError, match="cannot make 5 words"):
        spm.fit_codebook(data[:4], words=5)


def test_codebook_sample_spreads_the_budget_over_images():
    blocks = [spm._Block(torch.arange(2 * 10 * 3).reshape(2, 10, 3).half(), torch.zeros(10, 2)) for _ in range(2)]
    rng = np.random.default_rng(0)
    picked = spm._codebook_sample(blocks, np.array([1, 2]), per_image=1000, rng=rng, sample=6)
    assert picked.shape == (6, 3) and picked.dtype == np.float16
    images = picked[:, 0] // 30  # descriptor j of image i starts at 30 i + 3 j
    assert (images == 1).sum() == 3 and (images == 0).sum() == 3  # image 2 is block 1's image 0
    assert spm._codebook_sample(blocks, np.array([0, 3]), per_image=4, rng=rng).shape == (8, 3)


# ------------------------------------------------------------------------------- pyramid
def test_pyramid_histograms_by_hand():
    centres = torch.tensor([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [1.0, 1.0]])  # y = x = 1: the last cell
    words = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    hist = spm.pyramid_histograms(words, centres, vocabulary=2, levels=2)
    # levels=2 (L = 1): weights 1/2 (level 0) and 1/2 (level 1); each count / 4 descriptors
    q = 0.5 / 4
    expected = [
        [1 * q, 3 * q, 1 * q, 0, 0, 1 * q, 0, 1 * q, 0, 1 * q],
        [2 * q, 2 * q, 0, 1 * q, 0, 1 * q, 1 * q, 0, 1 * q, 0],
    ]
    torch.testing.assert_close(hist, torch.tensor(expected))
    assert spm.level_weights(3) == [0.25, 0.25, 0.5]
    assert spm.level_weights(1) == [1.0]
    three = spm.pyramid_histograms(words, centres, vocabulary=2, levels=3)
    assert three.shape == (2, 2 * (1 + 4 + 16))
    torch.testing.assert_close(three[:, :2], torch.tensor([[0.25 / 4, 0.75 / 4], [0.5 / 4, 0.5 / 4]]))
    assert three.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])
    cell_15 = 2 + 8 + 15 * 2  # level 2, cell (3, 3): the descriptor at (1, 1)
    assert three[0, cell_15 : cell_15 + 2].tolist() == pytest.approx([0, 0.5 / 4])


# ------------------------------------------------------------------------------- kernel and SVM
def test_intersection_kernel_matches_loops_in_any_chunks():
    torch.manual_seed(0)
    a, b = torch.rand(7, 13), torch.rand(5, 13)
    a[a < 0.5] = 0
    expected = torch.tensor(
        [[sum(min(float(a[i, d]), float(b[j, d])) for d in range(13)) for j in range(5)] for i in range(7)],
        dtype=torch.float64,
    )
    kernel = spm.intersection_kernel(a, b)
    assert kernel.dtype == torch.float64
    torch.testing.assert_close(kernel, expected, rtol=1e-7, atol=1e-7)
    for chunk in (1, 3, 100):
        assert torch.equal(spm.intersection_kernel(a, b, chunk=chunk), kernel)


def separable_histograms(seed: int, per_class: int, classes: int = 3, dims: int = 12):
    """Non-negative histograms whose class c puts most of its mass on dims 4c..4c+3."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    hist = rng.random((len(labels), dims)) * 0.2
    for row, label in enumerate(labels):
        hist[row, 4 * label : 4 * label + 4] += rng.random(4) + 0.5
    return torch.tensor(hist / hist.sum(1, keepdims=True), dtype=torch.float32), labels


def test_classify_separable_and_same_as_sklearn():
    from sklearn.svm import SVC

    train, y_train = separable_histograms(0, 10)
    test, y_test = separable_histograms(1, 7)
    result = spm.classify(train, y_train, test, y_test, C=1.0)
    assert result["mean_class_accuracy"] == 1.0 and result["accuracy"] == 1.0
    assert result["confusion"] == np.diag([7, 7, 7]).tolist()
    assert result["classes"] == [0, 1, 2]

    a, b = train.double().numpy(), test.double().numpy()
    k_train = np.minimum(a[:, None, :], a[None]).sum(-1)
    k_test = np.minimum(b[:, None, :], a[None]).sum(-1)
    reference = SVC(kernel="precomputed", C=0.05).fit(k_train, y_train).predict(k_test)
    ours = spm.classify(train, y_train, test, torch.as_tensor(y_test), C=0.05)
    assert ours["predicted"] == reference.tolist()
    assert ours["accuracy"] == pytest.approx(float(np.mean(reference == y_test)))


# ------------------------------------------------------------------------------- splits
def write_tree(root: Path, counts: dict[str, int], size: int = 4) -> None:
    """Tiny PNGs: counts[name] images in root/name (plus a non-image file in each)."""
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("not an image")
        for i in range(count):
            Image.new("RGB", (size, size), (i * 20 % 256, 0, 0)).save(folder / f"image_{i:04d}.png")


def test_caltech_splits(tmp_path):
    write_tree(tmp_path, {"b": 6, "a": 9, "Faces": 5, "Faces_easy": 5, "BACKGROUND_Google": 20})
    split = spm.caltech_splits(tmp_path, train=3, test=4, seed=0)
    assert split.class_names == ("Faces", "Faces_easy", "a", "b")
    assert split.train_labels == (0,) * 3 + (1,) * 3 + (2,) * 3 + (3,) * 3
    assert split.test_labels == (0,) * 2 + (1,) * 2 + (2,) * 4 + (3,) * 3
    assert not set(split.train_paths) & set(split.test_paths)
    assert len(set(split.train_paths)) == 12 and len(set(split.test_paths)) == 11
    for paths, labels in ((split.train_paths, split.train_labels), (split.test_paths, split.test_labels)):
        assert all(p.parent.name == split.class_names[label] for p, label in zip(paths, labels))
        assert all(p.suffix == ".png" for p in paths)
    assert spm.caltech_splits(tmp_path, train=3, test=4, seed=0) == split
    assert spm.caltech_splits(tmp_path, train=3, test=4, seed=1) != split
    first_two = spm.caltech_splits(tmp_path, train=3, test=4, seed=0, classes=2)
    assert first_two.class_names == ("Faces", "Faces_easy")
    assert first_two.train_paths == split.train_paths[:6]


def test_caltech_splits_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(vizkit.UsageError, match="no class folders"):
        spm.caltech_splits(tmp_path / "empty")
    write_tree(tmp_path / "tree", {"a": 5, "b": 3})
    with pytest.raises(vizkit.UsageError, match=r"fewer than train \+ 1 = 4 images: b \(3\)"):
        spm.caltech_splits(tmp_path / "tree", train=3)
    with pytest.raises(vizkit.UsageError, match="not a folder"):
        spm.caltech_splits(tmp_path / "missing")


# ------------------------------------------------------------------------------- end to end
def pattern(kind: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """A noisy synthetic image: horizontal stripes, vertical stripes or a grid of dots."""
    period = int(rng.integers(5, 9))
    phase = int(rng.integers(0, period))
    y, x = np.mgrid[:size, :size]
    on_y, on_x = (y + phase) % period < period // 2, (x + phase) % period < period // 2
    image = {"horizontal": on_y, "vertical": on_x, "dots": on_y & on_x}[kind].astype(float)
    image = np.clip(image * 0.8 + 0.1 + 0.1 * rng.standard_normal((size, size)), 0, 1)
    return Image.fromarray((image * 255).astype(np.uint8), "L")


def edge_filters() -> nn.Module:
    """A fixed oriented-edge layer: |Sobel| in four directions of the grey level, then ReLU."""
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    diagonal = torch.tensor([[0.0, 1, 2], [-1, 0, 1], [-2, -1, 0]])
    kernels = torch.stack([sobel, sobel.T, diagonal, diagonal.flip(1)])
    conv = nn.Conv2d(3, 4, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(kernels[:, None].expand(4, 3, 3, 3) / 3)
    return nn.Sequential(conv, nn.ReLU()).eval()


def test_evaluate_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    for kind in ("dots", "horizontal", "vertical", "BACKGROUND_Google"):
        (tmp_path / kind).mkdir()
        for i in range(10):
            pattern("dots" if kind == "BACKGROUND_Google" else kind, rng).save(tmp_path / kind / f"{i}.png")
    inner = spm.module_features(edge_filters(), 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    seen: list[Path] = []

    def features(paths):
        assert len(paths) <= 8
        seen.extend(paths)
        maps = inner(paths)
        assert maps.shape[1:] == (4, 30, 30)
        return iter([maps[:1], maps[1:]])  # an iterable of tensors is concatenated

    result = spm.evaluate(
        features, tmp_path, splits=2, train=4, test=6, words=8, levels=2, progress=False,
        batch_size=8, patch=8, stride=4, cells=2,
    )  # fmt: skip
    assert len(seen) == len(set(seen)) == 30  # each image described once, for both splits
    assert all(p.parent.name != "BACKGROUND_Google" for p in seen)
    assert result.class_names == ["dots", "horizontal", "vertical"]
    assert len(result.accuracies) == 2 and result.mean >= 0.9, result.accuracies
    assert result.std == pytest.approx(float(np.std(result.accuracies, ddof=1)))
    assert result.settings["descriptors_per_image"] == 36 and result.settings["descriptor_dims"] == 16
    assert set(result.timings) == {"descriptors", "codebook", "histograms", "kernel", "svm"}
    assert "% mean per-class accuracy (2 splits, 3 classes)" in result.summary()


@pytest.mark.slow
def test_evaluate_on_five_caltech_classes():
    needs_shared(CALTECH)
    features = spm.module_features(edge_filters(), 96)
    result = spm.evaluate(
        features, CALTECH, splits=1, words=50, levels=3, classes=5, progress=False, patch=16, stride=8, cells=4
    )
    assert result.settings["classes"] == 5
    assert result.mean > 0.5, result.summary()  # chance: 0.2
