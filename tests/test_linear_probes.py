"""The torch linear probes (vizkit.toolkit.linear): the paper's metric by hand, perfect scores on
separable data in both the primal and the dual form, the two forms agreeing, the same accuracy as
scikit-learn on a small real problem, and model selection that only sees the training split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vizkit.errors import UsageError
from vizkit.toolkit import linear
from vizkit.toolkit.linear import GRID, Standardizer, fit_probe, mean_class_accuracy, select_probe


def blobs(per_class: int, dims: int, seed: int = 0, classes: int = 4, spread: float = 4.0):
    """Well-separated Gaussian blobs: (points, labels)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=generator) * spread
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + torch.randn(len(labels), dims, generator=generator), labels


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits (1797 × 64, 10 classes) with a fixed 1200/597 train/test split."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return x, y, order[:1200], order[1200:]


# ------------------------------------------------------------------------------------ the metric
def test_mean_class_accuracy_by_hand():
    mean, per_class = mean_class_accuracy(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))
    assert per_class.tolist() == pytest.approx([2 / 3, 1.0]) and mean == pytest.approx(5 / 6)
    # tensors work too, and the mean is over classes, not samples (plain accuracy would be 3/4)
    mean, _ = mean_class_accuracy(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))
    assert mean == pytest.approx(5 / 6)


def test_a_class_absent_from_the_truth_is_nan_and_left_out_of_the_mean():
    mean, per_class = mean_class_accuracy(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), classes=[1, 7, 0])
    assert per_class[0] == 1.0 and np.isnan(per_class[1]) and per_class[2] == pytest.approx(2 / 3)
    assert mean == pytest.approx(5 / 6)  # the mean of the two classes that have samples
    with pytest.raises(UsageError):
        mean_class_accuracy(np.array([0, 1]), np.array([0, 1, 1]))


# ------------------------------------------------------------------------------------ standardiser
def test_standardizer_uses_training_statistics_and_floors_constant_features():
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    scaler = Standardizer.fit(train)
    assert scaler.mean.tolist() == [2.0, 5.0] and scaler.std.tolist() == pytest.approx([1.0, 1e-6])
    assert scaler(torch.tensor([[4.0, 5.0]])).tolist() == [[2.0, 0.0]]  # constant feature → 0


# ------------------------------------------------------------------------------------ the fits
@pytest.mark.parametrize("kind", ["svm", "softmax"])
@pytest.mark.parametrize("dims", [8, 400])  # 120 training points: primal (d < n) and dual (d > n)
def test_separable_blobs_are_classified_perfectly(kind, dims):
    points, labels = blobs(60, dims)
    train, test = torch.arange(0, 240, 2), torch.arange(1, 240, 2)
    probe = fit_probe(points[train], labels[train] * 10 + 3, kind, C=1.0)  # any label values
    assert probe.dual == (dims > 120)
    assert probe.scores(points[test]).shape == (120, 4)
    assert (probe.predict(points[test]) == labels[test] * 10 + 3).all()


@pytest.mark.parametrize("dims", [40, 300])  # 150 points: each form where it is the natural one, and forced
@pytest.mark.parametrize("kind", ["svm", "softmax"])
def test_primal_and_dual_give_the_same_decision_values(kind, dims):
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(150, dims, generator=generator), torch.randint(0, 3, (150,), generator=generator)
    x_new = torch.randn(50, dims, generator=generator)
    primal = fit_probe(x, y, kind, 0.1, dual=False, max_iter=1000, tol=1e-9)
    dual = fit_probe(x, y, kind, 0.1, dual=True, max_iter=1000, tol=1e-9)
    assert not primal.dual and dual.dual and dual.alpha is not None and dual.alpha.shape == (150, 3)
    for points in (x, x_new):
        assert torch.allclose(primal.scores(points), dual.scores(points), atol=5e-3)
    # the dual's weights are Zᵀα: its decision values are (Z_new Zᵀ) α + b, the kernel form
    z, z_new = dual.standardizer(x), dual.standardizer(x_new)
    assert torch.allclose(dual.scores(x_new), (z_new @ z.T) @ dual.alpha + dual.bias, atol=1e-3)


def test_fitting_works_under_inference_mode_and_rejects_bad_input():
    points, labels = blobs(10, 5)
    with torch.inference_mode():
        probe = fit_probe(points, labels, "softmax", 1.0)
    assert (probe.predict(points) == labels).all()
    with pytest.raises(UsageError):
        fit_probe(points, labels, "knn", 1.0)
    with pytest.raises(UsageError):
        fit_probe(points, torch.zeros(len(labels), dtype=torch.long), "svm", 1.0)  # one class
    with pytest.raises(UsageError):
        fit_probe(points, labels, "svm", 0.0)
    with pytest.raises(UsageError):
        probe.predict(points[:, :3])  # wrong feature count


# ------------------------------------------------------------------------------------ vs scikit-learn
def accuracies_on_digits(digits, kind: str, C: float, estimator) -> tuple[float, float]:
    """Test accuracy of a vizkit probe and of a scikit-learn estimator fitted on the same
    standardised training split."""
    from sklearn.preprocessing import StandardScaler

    x, y, train, test = digits
    probe = fit_probe(torch.tensor(x[train], dtype=torch.float32), torch.tensor(y[train]), kind, C)
    mine = float((probe.predict(torch.tensor(x[test], dtype=torch.float32)).numpy() == y[test]).mean())
    scaler = StandardScaler().fit(x[train])  # the probes' standardisation
    estimator.fit(scaler.transform(x[train]), y[train])
    theirs = float((estimator.predict(scaler.transform(x[test])) == y[test]).mean())
    return mine, theirs


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_accuracy_matches_scikit_learn_on_digits(digits, C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    # the default svm objective is liblinear's (bias regularised as a constant feature's weight)
    mine, theirs = accuracies_on_digits(digits, "svm", C, LinearSVC(C=C, max_iter=20000))
    assert abs(mine - theirs) <= 0.015, ("svm", C, mine, theirs)
    mine, theirs = accuracies_on_digits(digits, "softmax", C, LogisticRegression(C=C, max_iter=5000))
    assert abs(mine - theirs) <= 0.015, ("softmax", C, mine, theirs)


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_with_a_free_bias_the_svm_matches_linearsvc_with_a_large_intercept_scaling(digits, C, monkeypatch):
    """``_SVM_BIAS_PENALTY = False`` frees the bias: liblinear's problem as intercept_scaling grows."""
    from sklearn.svm import LinearSVC

    monkeypatch.setattr(linear, "_SVM_BIAS_PENALTY", False)
    svc = LinearSVC(C=C, intercept_scaling=100, max_iter=20000)
    mine, theirs = accuracies_on_digits(digits, "svm", C, svc)
    assert abs(mine - theirs) <= 0.015, (C, mine, theirs)


# ------------------------------------------------------------------------------------ model selection
@pytest.mark.parametrize("dims", [6, 200])  # 90 training points: primal and dual cross-validation
def test_selection_sees_only_the_training_split(dims, monkeypatch):
    points, labels = blobs(45, dims, seed=2, classes=3, spread=0.4)
    index = torch.arange(135)
    train, test = index[index % 3 != 2], index[index % 3 == 2]  # 90 training and 45 test points
    rows: list[int] = []  # the number of samples of every fit
    solve = linear._solve

    def spy(design, *args, **kwargs):
        rows.append(design.shape[0])
        return solve(design, *args, **kwargs)

    monkeypatch.setattr(linear, "_solve", spy)
    probe, chosen, scores = select_probe(points[train], labels[train], "softmax", grid=(0.01, 1.0), cv_folds=3)
    assert chosen in (0.01, 1.0) and list(scores) == [0.01, 1.0] and chosen == probe.C
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert rows == [60] * 6 + [90]  # 3 folds × 2 Cs on two thirds of the training split, then the refit
    # the test split plays no part: shuffling its labels changes neither the choice nor the scores
    shuffled = labels.clone()
    shuffled[test] = labels[test][torch.randperm(len(test), generator=torch.Generator().manual_seed(0))]
    assert not torch.equal(shuffled[test], labels[test])
    again, chosen_again, scores_again = select_probe(points[train], shuffled[train], "softmax", grid=(0.01, 1.0))
    assert chosen_again == chosen and scores_again == scores  # (and seeded folds make it repeatable)
    assert torch.equal(again.predict(points[test]), probe.predict(points[test]))
    assert probe.dual == (dims > 90)


def test_selection_returns_a_grid_value_and_breaks_ties_towards_the_smaller_c():
    points, labels = blobs(20, 5, seed=3, classes=3, spread=10.0)  # every C separates them perfectly
    for kind in ("svm", "softmax"):
        probe, chosen, scores = select_probe(points, labels, kind, grid=(10.0, 0.1, 1.0), cv_folds=3)
        assert set(scores.values()) == {1.0}
        assert chosen == 0.1 and list(scores) == [10.0, 0.1, 1.0]
        assert (probe.predict(points) == labels).all()
    _probe, chosen, scores = select_probe(points, labels, "svm")
    assert chosen in GRID and list(scores) == list(GRID) and chosen == min(GRID)
    with pytest.raises(UsageError):
        select_probe(points, labels, "svm", grid=())
    with pytest.raises(UsageError):
        select_probe(points, labels, "svm", cv_folds=1)


def test_a_small_fit_runs_on_one_thread_and_restores_the_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        solve = linear._solve

        def spy(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return solve(*args, **kwargs)

        linear._solve = spy
        try:
            x, y = torch.randn(40, 8), torch.arange(40) % 2
            linear.select_probe(x, y, "svm", grid=[0.1, 1.0], cv_folds=2)
            assert seen and set(seen) == {1}
            assert torch.get_num_threads() == 2
            with pytest.raises(UsageError):
                linear.fit_probe(x, y, "svm", C=-1.0)
            linear.fit_probe(x, y, "softmax", C=1.0)
            assert torch.get_num_threads() == 2
        finally:
            linear._solve = solve
    finally:
        torch.set_num_threads(before)
