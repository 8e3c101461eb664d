"""Linear probes in torch: a one-vs-rest squared-hinge SVM and multinomial logistic regression,
both L2-regularised, fitted by full-batch L-BFGS on the primal or, when features outnumber
samples, on the dual (kernel) form.

Objectives (scikit-learn's, so accuracies compare): ``svm``: for each class k,
0.5·||w_k||² + C·Σ_i max(0, 1 − y_ik (w_k·x_i + b_k))² with y_ik = ±1 (``LinearSVC``);
``softmax``: 0.5·||W||² + C·Σ_i CE(softmax(W x_i + b), y_i) (``LogisticRegression``). As in
scikit-learn, the SVM's bias is a weight on a constant feature 1 and is regularised with the rest
(liblinear's ``intercept_scaling=1``), the softmax bias is not. Inputs are standardised with the
training statistics.
With d > n the representer theorem gives w = Σ_i α_i x_i: the solver works on α [n, K] with the
Gram matrix G = X Xᵀ (decision values G α + b, regulariser 0.5·tr(αᵀ G α)), whose cost per
iteration does not grow with d.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vizkit.errors import UsageError

GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
KINDS = ("svm", "softmax")


@dataclass
class Standardizer:
    """Per-feature mean and std of the training split (std floored at 1e-6 for constant features)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        x = x.float()
        return cls(x.mean(dim=0), x.std(dim=0, unbiased=False).clamp(min=1e-6))

    def __call__(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


@dataclass
class LinearProbe:
    """A fitted probe: ``scores`` are the K decision values, ``predict`` the best class."""

    kind: str
    C: float
    classes: Tensor  # [K] the label values, sorted
    standardizer: Standardizer
    weight: Tensor | None  # [d, K] (primal)
    support: Tensor | None  # [n, d] standardised training points (dual)
    alpha: Tensor | None  # [n, K] (dual)
    bias: Tensor  # [K]
    iterations: int = 0

    def scores(self, x: Tensor) -> Tensor:
        z = _features(self.kind, self.standardizer(x.to(self.bias.device)))
        if self.weight is not None:
            return z @ self.weight + self.bias
        assert self.support is not None and self.alpha is not None
        return _gram(z, self.support) @ self.alpha + self.bias

    def predict(self, x: Tensor) -> Tensor:
        return self.classes[self.scores(x).argmax(dim=1)]


def _features(kind: str, z: Tensor) -> Tensor:
    """The SVM's inputs gain a constant feature 1 whose weight is its (regularised) bias."""
    return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], dim=1) if kind == "svm" else z


def _gram(a: Tensor, b: Tensor, chunk: int = 2048) -> Tensor:
    """a @ b.T, computed in row chunks of ``a``."""
    return torch.cat([a[i : i + chunk] @ b.T for i in range(0, a.shape[0], chunk)])


def _loss(kind: str, scores: Tensor, target: Tensor) -> Tensor:
    if kind == "softmax":
        return torch.nn.functional.cross_entropy(scores, target, reduction="sum")
    signs = torch.full_like(scores, -1.0)
    signs[torch.arange(scores.shape[0]), target] = 1.0
    return torch.relu(1.0 - signs * scores).pow(2).sum()


def fit_probe(
    x: Tensor, y: Tensor, kind: str, C: float, max_iter: int = 200, tol: float = 1e-6, dual: bool | None = None
) -> LinearProbe:
    """A probe fitted on features ``x`` and labels ``y``.

    Args:
        x: [n, d] training features (any float dtype; standardised here with their own statistics).
        y: [n] integer labels (any values; at least two classes).
        kind: ``svm`` or ``softmax`` (see the module docstring for the objectives).
        C: inverse regularisation strength, as in scikit-learn.
        max_iter: L-BFGS iterations at most.
        tol: stop when the largest gradient entry of the (n·C-scaled) objective falls below it.
        dual: force the dual (True) or primal (False) form; None: dual when d > n.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown classifier '{kind}'; use svm or softmax")
    classes, target = torch.unique(y.cpu(), return_inverse=True)
    if classes.numel() < 2:
        raise UsageError("a probe needs at least two classes in its training data")
    standardizer = Standardizer.fit(x)
    z = _features(kind, standardizer(x))
    use_dual = z.shape[1] > z.shape[0] if dual is None else dual
    gram = _gram(z, z) if use_dual else None
    coef, bias, iterations = _solve(z, gram, target.to(x.device), classes.numel(), kind, C, max_iter, tol)
    return LinearProbe(
        kind,
        C,
        classes.to(x.device),
        standardizer,
        None if use_dual else coef,
        z if use_dual else None,
        coef if use_dual else None,
        bias,
        iterations,
    )


def _solve(
    z: Tensor,
    gram: Tensor | None,
    target: Tensor,
    k: int,
    kind: str,
    C: float,
    max_iter: int,
    tol: float,
    start: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, int]:
    """L-BFGS on the primal (``gram`` None: coefficients [d, K]) or the dual (coefficients [n, K])
    of standardised features ``z``; ``start`` warm-starts it (e.g. from the previous C)."""
    n = z.shape[0]
    rows = n if gram is not None else z.shape[1]
    coef = (start[0].clone() if start else torch.zeros((rows, k), device=z.device)).requires_grad_(True)
    bias = (start[1].clone() if start else torch.zeros(k, device=z.device)).requires_grad_(kind == "softmax")
    optimiser = torch.optim.LBFGS(
        [coef, bias] if kind == "softmax" else [coef],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    scale = 1.0 / (n * C)

    def closure() -> Tensor:
        optimiser.zero_grad()
        if gram is not None:
            projected = gram @ coef
            scores = projected + bias
            penalty = 0.5 * (coef * projected).sum()
        else:
            scores = z @ coef + bias
            penalty = 0.5 * coef.pow(2).sum()
        objective = scale * (penalty + C * _loss(kind, scores, target))
        objective.backward()
        return objective

    optimiser.step(closure)
    iterations = int(optimiser.state[coef].get("n_iter", 0))
    return coef.detach(), bias.detach(), iterations


def mean_class_accuracy(
    predicted: Tensor | np.ndarray, truth: Tensor | np.ndarray, classes: Sequence[int] | None = None
) -> tuple[float, np.ndarray]:
    """The mean over classes of the per-class accuracy (the paper's metric), and the per-class
    accuracies in ``classes`` order (default: the classes present in ``truth``). A class with no
    test sample gets NaN and is left out of the mean.

    Args:
        predicted: [m] predicted labels.
        truth: [m] true labels.
        classes: the classes to report, in order.
    """
    predicted = np.asarray(predicted.cpu() if isinstance(predicted, Tensor) else predicted)
    truth = np.asarray(truth.cpu() if isinstance(truth, Tensor) else truth)
    order = list(classes) if classes is not None else sorted(set(truth.tolist()))
    per_class = np.array([np.mean(predicted[truth == c] == c) if np.any(truth == c) else np.nan for c in order])
    present = per_class[~np.isnan(per_class)]
    return (float(present.mean()) if present.size else float("nan")), per_class


def select_probe(
    x: Tensor, y: Tensor, kind: str, grid: Sequence[float] = GRID, cv_folds: int = 3, seed: int = 0, max_iter: int = 200
) -> tuple[LinearProbe, float, dict[float, float]]:
    """The C of ``grid`` with the best mean per-class accuracy in stratified ``cv_folds``-fold
    cross-validation on (``x``, ``y``) only (ties: the smaller C), refitted on all of them.

    For speed the cross-validation standardises with the statistics of all of ``x`` (labels play
    no part in them), computes the Gram matrix once for the dual form, and warm-starts each C from
    the previous one; the final refit is :func:`fit_probe` on all of ``x``.

    Args:
        x: [n, d] training features.
        y: [n] training labels.
        kind: ``svm`` or ``softmax``.
        grid: the C values tried.
        cv_folds: cross-validation folds (stratified: each class spread evenly over them).
        seed: seeds the assignment of samples to folds.
        max_iter: L-BFGS iterations at most per fit.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown classifier '{kind}'; use svm or softmax")
    labels = y.cpu().numpy()
    classes, target = torch.unique(y.cpu(), return_inverse=True)
    target = target.to(x.device)
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = np.arange(len(members)) % cv_folds
    z = _features(kind, Standardizer.fit(x)(x))
    dual = z.shape[1] > z.shape[0] * (cv_folds - 1) / cv_folds
    gram = _gram(z, z) if dual else None
    per_fold: dict[float, list[float]] = {float(value): [] for value in grid}
    for fold in range(cv_folds):
        train = torch.from_numpy(np.flatnonzero(fold_of != fold)).to(x.device)
        held = torch.from_numpy(np.flatnonzero(fold_of == fold)).to(x.device)
        sub_gram = gram[train][:, train] if gram is not None else None
        start = None
        for value in sorted(float(v) for v in grid):
            coef, bias, _ = _solve(
                z[train], sub_gram, target[train], classes.numel(), kind, value, max_iter, 1e-6, start
            )
            start = (coef, bias)
            scores = (gram[held][:, train] @ coef if gram is not None else z[held] @ coef) + bias
            predicted = classes.to(x.device)[scores.argmax(dim=1)]
            per_fold[value].append(mean_class_accuracy(predicted, labels[held.cpu().numpy()])[0])
    scores_by_c = {value: float(np.mean(results)) for value, results in per_fold.items()}
    best = max(scores_by_c.values())
    chosen = min(value for value, score in scores_by_c.items() if score == best)
    return fit_probe(x, y, kind, chosen, max_iter=max_iter), chosen, scores_by_c
