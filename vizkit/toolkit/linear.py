"""Linear probes in torch: how linearly separable are the classes in a layer's frozen features?

Two classifiers (Zeiler & Fergus score each layer with one, Table 7), both L2-regularised and
defined as in scikit-learn so that accuracies compare:

* ``svm``: one-vs-rest linear SVM with the squared hinge loss, for each class k
  ``0.5·||w_k||² + C·Σ_i max(0, 1 − y_ik (w_k·x_i + b_k))²`` with ``y_ik = ±1``
  (``LinearSVC(loss="squared_hinge", penalty="l2", C=C)``); the class is the argmax of the K
  decision values. As in liblinear (``LinearSVC``), the bias b_k is regularised as the weight of
  a constant feature (``intercept_scaling=1``), so accuracies match ``LinearSVC(C=C)`` (to 0.1
  point on ``load_digits``) and the benchmark compares the same problem. A free bias is the
  better probe with many rare classes: on random 101-class problems (30 samples per class,
  C = 0.1) the regularised bias scored 82.9% vs 93.6% (d = 512) and 46.5% vs 92.4% (d = 4,096),
  and on ``load_digits`` 94.8% vs 96.5% at C = 0.01; ``_SVM_BIAS_PENALTY = False`` gives it.
* ``softmax``: multinomial logistic regression,
  ``C·Σ_i CE(softmax(W x_i + b), y_i) + 0.5·||W||²`` (``LogisticRegression(C=C)``, lbfgs,
  multinomial); the bias is not regularised (as in scikit-learn).

Inputs are standardised with the training split's per-feature mean and std (:class:`Standardizer`)
and the same transform is applied at prediction time.

Solver: full-batch L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search, history 20, analytic
gradients, so it also runs under ``torch.inference_mode``) in float32 on ``objective / (n·C)``,
i.e. ``mean loss + ||W||² / (2·n·C)`` (scikit-learn's scaling), so the line search sees the same
scale for every C. It stops when the largest gradient entry falls below ``tol``, when the
objective stops changing, or after ``max_iter`` iterations; it runs on the device of the
features (CPU or CUDA). float64 was measured and is not needed: on random 3,030 × 512 and
× 20,000 problems with 101 classes, C in (0.01, 0.1, 1), it moved test accuracy by at most
0.2 point and cost 1.2-3x the time on CPU. Typical iteration counts there: softmax 6-25, svm
80-200 (the 200 cap is reached at C >= 1 or d > n, with accuracy already stable).

Two forms of the same problem, chosen by shape (``dual=None``: the dual when d > n):

* primal: W [d, K] on the standardised features Z [n, d]; per iteration O(n·d·K).
* dual (kernel): by the representer theorem w_k = Σ_i α_ik z_i, so with the linear Gram matrix
  G = Z Zᵀ [n, n] (built once, in blocks of features standardised on the fly, so Z is never held
  whole) the decision values are G α + b and the regulariser is 0.5·tr(αᵀ G α); per iteration
  O(n²·K) whatever d is. Optimising α directly is badly conditioned (the Hessian involves G²):
  measured at n = 3,000, d = 6,000, 200 iterations, it ended 20-60x above the optimum of the svm
  objective. So the solver substitutes α = L⁻ᵀ β with G + εI = L Lᵀ (float64 Cholesky,
  0.3 s at n = 3,000; ε = 1e-5·mean(diag G), raised tenfold until it succeeds): the decision
  values become L β + b and the regulariser 0.5·||β||², a primal problem on the n×n "features" L,
  conditioned exactly like the original primal (Lᵀ L and Zᵀ Z share their non-zero spectrum).
  ε acts as a private feature of squared norm 1e-5·d per training point; the two forms agree to
  1e-3 in decision values. The fitted probe keeps α and the collapsed weights W = Zᵀ α [d, K], so
  the decision values (Z_test Zᵀ) α + b are computed as Z_test W + b, and the n×d training points
  need not be kept (30x less memory at n = 3,000, d = 90,000, K = 101).

Measured with this module (one CPU thread, n = 3,000, K = 100, C = 0.1, random features):
d = 20,000: svm primal 75.5 s, dual 15.0 s (200 iterations each; the Gram matrix takes 1.7 s);
softmax 3.9 s either way (6-8 iterations). d = 500: svm primal 1.1 s, dual 8.0 s; softmax
primal 0.19 s, dual 1.9 s. So the dual pays when d > n and the primal otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vizkit.errors import UsageError

GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""The C values :func:`select_probe` searches by default: five decades around scikit-learn's
default C = 1, from strong (1e-3) to weak (10) regularisation of standardised features."""

KINDS = ("svm", "softmax")
# Below this many feature values a CPU fit runs on one thread: two threads gain about 5% on it
# on a quiet machine (200 x 2048: 0.20 s vs 0.21 s), and on a busy one their spin-waiting made a
# demo-sized fit 14x slower (0.84 s vs 0.06 s).
SMALL_PROBLEM = 1 << 20


@contextmanager
def _threads_for(x: Tensor) -> Iterator[None]:
    """One intra-op thread for a small CPU problem, restored afterwards (also on error)."""
    before = torch.get_num_threads()
    small = x.device.type == "cpu" and x.numel() <= SMALL_PROBLEM and before > 1
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


_BLOCK = 4096  # features (Gram matrix, dual weights) or rows (scores) handled at a time
_SVM_BIAS_PENALTY = True  # regularise the svm bias like liblinear (see above); False: a free bias
_JITTER = 1e-5  # Cholesky jitter of the Gram matrix, relative to its mean diagonal


@dataclass
class Standardizer:
    """Per-feature mean and standard deviation of the training split (std floored at 1e-6, so
    constant features map to 0 instead of dividing by zero); call it to standardise features."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        """The statistics of ``x``, accumulated in float64 one block of features at a time.

        Args:
            x: [n, d] training features (any float dtype, any device).
        """
        if x.ndim != 2 or x.shape[0] < 1:
            raise UsageError(f"features must be a non-empty [n, d] matrix, not of shape {tuple(x.shape)}")
        means, stds = [], []
        for start in range(0, x.shape[1], _BLOCK):
            block = x[:, start : start + _BLOCK].double()
            means.append(block.mean(dim=0))
            stds.append(block.std(dim=0, unbiased=False))
        mean = torch.cat(means) if means else torch.zeros(0, dtype=torch.float64, device=x.device)
        std = torch.cat(stds) if stds else torch.zeros(0, dtype=torch.float64, device=x.device)
        return cls(mean.float(), std.clamp(min=1e-6).float())

    def __call__(self, x: Tensor) -> Tensor:
        """``(x − mean) / std`` in float32.

        Args:
            x: [m, d] features with the training split's d.
        """
        return (x.float() - self.mean) / self.std

    def block(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Standardised features ``start:stop`` of ``x`` (for blockwise work on wide matrices).

        Args:
            x: [m, d] features.
            start: first feature of the block.
            stop: one past its last feature.
        """
        return (x[:, start:stop].float() - self.mean[start:stop]) / self.std[start:stop]


@dataclass
class LinearProbe:
    """A fitted probe: :meth:`scores` gives the K decision values, :meth:`predict` the best class.

    ``weight`` is in standardised units ([d, K]); for the dual form it is Zᵀ α, with the dual
    coefficients ``alpha`` ([n, K]) kept for inspection. ``iterations`` counts L-BFGS iterations.
    """

    kind: str
    C: float
    classes: Tensor  # [K] the original label values, sorted
    standardizer: Standardizer
    weight: Tensor  # [d, K]
    bias: Tensor  # [K]
    alpha: Tensor | None = None  # [n, K] dual coefficients (dual form only)
    dual: bool = False
    iterations: int = 0

    def scores(self, x: Tensor) -> Tensor:
        """Decision values ``standardise(x) @ weight + bias`` ([m, K]), computed in row blocks.

        Args:
            x: [m, d] features (same d as in training); moved to the probe's device.
        """
        x = x.to(self.weight.device)
        if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
            raise UsageError(f"the probe expects [m, {self.weight.shape[0]}] features, not {tuple(x.shape)}")
        rows = max(1, (1 << 24) // max(1, x.shape[1]))  # about 64 MB of float32 per block
        parts = [self.standardizer(x[i : i + rows]) @ self.weight + self.bias for i in range(0, x.shape[0], rows)]
        return torch.cat(parts) if parts else torch.zeros(0, self.bias.numel(), device=self.bias.device)

    def predict(self, x: Tensor) -> Tensor:
        """The predicted label of each row ([m], the original label values).

        Args:
            x: [m, d] features.
        """
        return self.classes[self.scores(x).argmax(dim=1)]


def _gram(x: Tensor, standardizer: Standardizer, rows: int = 512) -> Tensor:
    """G = Z Zᵀ [n, n] of the standardised ``x``, accumulated over blocks of features (so Z is never
    held whole); only the blocks on and above the diagonal are multiplied (G is symmetric), which
    saves about a quarter of the time at n = 3,000, and the lower triangle is mirrored at the end."""
    n = x.shape[0]
    gram = torch.zeros(n, n, device=x.device)
    for start in range(0, x.shape[1], _BLOCK):
        block = standardizer.block(x, start, start + _BLOCK)
        for top in range(0, n, rows):
            gram[top : top + rows, top:].addmm_(block[top : top + rows], block[top:].T)
    upper = gram.triu()
    return upper + upper.triu(1).T


def _collapse(x: Tensor, standardizer: Standardizer, alpha: Tensor) -> Tensor:
    """W = Zᵀ α [d, K], one block of features at a time."""
    return torch.cat([standardizer.block(x, start, start + _BLOCK).T @ alpha for start in range(0, x.shape[1], _BLOCK)])


def _factor(gram: Tensor) -> Tensor:
    """Lower-triangular L (float64) with L Lᵀ = G + εI; ε starts at 1e-5 of the mean diagonal and
    grows tenfold until the float64 Cholesky succeeds (G is only positive semi-definite: its rank is
    at most n − 1 after centring, and float32 rounding can push it slightly indefinite)."""
    g = gram.double()
    level = float(g.diagonal().mean().clamp(min=1.0))
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    jitter = _JITTER
    while True:
        factor, info = torch.linalg.cholesky_ex(g + (jitter * level) * eye)
        if int(info) == 0 or jitter >= 1.0:
            return factor
        jitter *= 10.0


def _dual_coefficients(factor: Tensor, beta: Tensor) -> Tensor:
    """α = L⁻ᵀ β (float32): the representer-theorem coefficients of the reparametrised solution."""
    return torch.linalg.solve_triangular(factor.T, beta.double(), upper=True).float()


def _solve(
    design: Tensor,
    target: Tensor,
    k: int,
    kind: str,
    C: float,
    max_iter: int,
    tol: float,
    start: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Minimise ``mean loss(design @ coef + bias) + ||coef||² / (2·n·C)`` by L-BFGS.

    ``design`` is the standardised features (primal) or the Cholesky factor L (dual); ``start``
    warm-starts from another C's solution. Returns (coef, bias, iterations)."""
    n = design.shape[0]
    dtype, device = design.dtype, design.device
    if start is not None:
        coef, bias = start[0].to(dtype).clone(), start[1].to(dtype).clone()
    else:
        coef = torch.zeros(design.shape[1], k, dtype=dtype, device=device)
        bias = torch.zeros(k, dtype=dtype, device=device)
    if kind == "softmax":
        onehot = torch.zeros(n, k, dtype=dtype, device=device)
        onehot[torch.arange(n, device=device), target] = 1.0
        signs = onehot
    else:
        signs = torch.full((n, k), -1.0, dtype=dtype, device=device)
        signs[torch.arange(n, device=device), target] = 1.0
    shrink = 1.0 / (n * C)
    optimiser = torch.optim.LBFGS(
        [coef, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        scores = torch.addmm(bias, design, coef)
        if kind == "softmax":
            log_p = torch.log_softmax(scores, dim=1)
            loss = -(log_p * signs).sum()
            d_scores = log_p.exp_().sub_(signs)
        else:
            margin = torch.relu(1.0 - signs * scores)
            loss = margin.pow(2).sum()
            d_scores = margin.mul_(signs).mul_(-2.0)
        coef.grad = torch.addmm(coef, design.T, d_scores, beta=shrink, alpha=1.0 / n)
        bias.grad = d_scores.sum(dim=0).div_(n)
        penalty = coef.pow(2).sum()
        if kind == "svm" and _SVM_BIAS_PENALTY:
            bias.grad.add_(bias, alpha=shrink)
            penalty = penalty + bias.pow(2).sum()
        return loss / n + 0.5 * shrink * penalty

    with torch.no_grad():
        optimiser.step(closure)
    iterations = int(optimiser.state[coef].get("n_iter", 0))
    return coef, bias, iterations


def _check(x: Tensor, y: Tensor, kind: str) -> None:
    if kind not in KINDS:
        raise UsageError(f"unknown classifier '{kind}'; use svm or softmax")
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise UsageError(f"need [n, d] features and [n] labels, got {tuple(x.shape)} and {tuple(y.shape)}")


def fit_probe(
    x: Tensor, y: Tensor, kind: str, C: float, max_iter: int = 200, tol: float = 1e-6, dual: bool | None = None
) -> LinearProbe:
    """A probe fitted on features ``x`` and labels ``y`` (see the module docstring for the
    objectives and the solver).

    Args:
        x: [n, d] training features (any float dtype, CPU or CUDA: the fit runs where they are);
            standardised here with their own statistics.
        y: [n] integer labels, any values (the probe predicts these values); at least two classes.
        kind: ``svm`` (one-vs-rest squared hinge, like ``LinearSVC``) or ``softmax`` (multinomial
            logistic regression, like ``LogisticRegression``).
        C: inverse regularisation strength, as in scikit-learn (larger: fit the training data harder).
        max_iter: L-BFGS iterations at most; bounds the time on hard or separable problems.
        tol: stop when the largest gradient entry of the n·C-scaled objective falls below it.
        dual: force the dual/kernel (True) or primal (False) form; None picks the faster one, the
            dual when d > n. Both give the same probe up to solver tolerance.
    """
    _check(x, y, kind)
    if not C > 0:
        raise UsageError(f"C must be positive, not {C}")
    classes, target = torch.unique(y.to(x.device), return_inverse=True)
    if classes.numel() < 2:
        raise UsageError("a probe needs at least two classes in its training data")
    with _threads_for(x):
        standardizer = Standardizer.fit(x)
        use_dual = x.shape[1] > x.shape[0] if dual is None else dual
        return _fit(x, target, classes, kind, C, max_iter, tol, standardizer, use_dual)


def _fit(
    x: Tensor,
    target: Tensor,
    classes: Tensor,
    kind: str,
    C: float,
    max_iter: int,
    tol: float,
    standardizer: Standardizer,
    dual: bool,
    gram: Tensor | None = None,
) -> LinearProbe:
    k = classes.numel()
    if not dual:
        coef, bias, iterations = _solve(standardizer(x), target, k, kind, C, max_iter, tol)
        return LinearProbe(kind, C, classes, standardizer, coef, bias, None, False, iterations)
    factor = _factor(_gram(x, standardizer) if gram is None else gram)
    beta, bias, iterations = _solve(factor.float(), target, k, kind, C, max_iter, tol)
    alpha = _dual_coefficients(factor, beta)
    weight = _collapse(x, standardizer, alpha)
    return LinearProbe(kind, C, classes, standardizer, weight, bias, alpha, True, iterations)


def mean_class_accuracy(
    predicted: Tensor | np.ndarray, truth: Tensor | np.ndarray, classes: Sequence[int] | None = None
) -> tuple[float, np.ndarray]:
    """The mean over classes of the per-class accuracy (the paper's metric), and the per-class
    accuracies in ``classes`` order.

    A class of ``classes`` with no sample in ``truth`` gets NaN in the per-class array and is left
    out of the mean (NaN only if no class has a sample).

    Args:
        predicted: [m] predicted labels (tensor or array).
        truth: [m] true labels (tensor or array).
        classes: the classes to report, in order; default: the classes present in ``truth``, sorted.
    """
    predicted = np.asarray(predicted.cpu() if isinstance(predicted, Tensor) else predicted).reshape(-1)
    truth = np.asarray(truth.cpu() if isinstance(truth, Tensor) else truth).reshape(-1)
    if predicted.shape != truth.shape:
        raise UsageError(f"{predicted.size} predictions for {truth.size} true labels")
    order = list(classes) if classes is not None else np.unique(truth).tolist()
    per_class = np.array(
        [float(np.mean(predicted[truth == c] == c)) if np.any(truth == c) else np.nan for c in order],
        dtype=np.float64,
    )
    present = per_class[~np.isnan(per_class)]
    return (float(present.mean()) if present.size else float("nan")), per_class


def _stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each sample: each class shuffled (seeded) and dealt round-robin, continuing
    where the previous class stopped so the folds also have (nearly) equal sizes."""
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = (offset + np.arange(len(members))) % folds
        offset += len(members)
    return fold_of


def select_probe(
    x: Tensor, y: Tensor, kind: str, grid: Sequence[float] = GRID, cv_folds: int = 3, seed: int = 0, max_iter: int = 100
) -> tuple[LinearProbe, float, dict[float, float]]:
    """The C of ``grid`` with the best mean per-class accuracy in stratified ``cv_folds``-fold
    cross-validation on (``x``, ``y``) only (ties: the smaller C), refitted on all of them.

    Only the data passed in is looked at: pass the training split, never the test split. For
    speed the cross-validation standardises with the statistics of all of ``x`` (the labels play
    no part in them), builds the Gram matrix once when the dual form is used (and reuses it for
    the refit), and warm-starts each C from the next smaller one's solution.

    Args:
        x: [n, d] training features.
        y: [n] training labels.
        kind: ``svm`` or ``softmax``.
        grid: the C values tried (default :data:`GRID`).
        cv_folds: number of folds (stratified: each class dealt evenly over them); at least 2.
        seed: seeds the assignment of samples to folds, so a selection can be repeated.
        max_iter: L-BFGS iterations at most per fit.

    Returns:
        (the probe refitted on all of ``x`` with the chosen C, the chosen C, {C: CV score}).
    """
    _check(x, y, kind)
    values = sorted({float(v) for v in grid})
    if not values or values[0] <= 0:
        raise UsageError(f"the grid of C values must be non-empty and positive, not {list(grid)}")
    if cv_folds < 2:
        raise UsageError(f"cv_folds must be at least 2, not {cv_folds}")
    classes, target = torch.unique(y.to(x.device), return_inverse=True)
    if classes.numel() < 2:
        raise UsageError("a probe needs at least two classes in its training data")
    with _threads_for(x):
        return _select(x, target, classes, kind, values, grid, cv_folds, seed, max_iter)


def _select(
    x: Tensor,
    target: Tensor,
    classes: Tensor,
    kind: str,
    values: list[float],
    grid: Sequence[float],
    cv_folds: int,
    seed: int,
    max_iter: int,
) -> tuple[LinearProbe, float, dict[float, float]]:
    k = classes.numel()
    fold_of = _stratified_folds(target.cpu().numpy(), cv_folds, seed)
    standardizer = Standardizer.fit(x)
    n, d = x.shape
    dual = d > n
    gram = _gram(x, standardizer) if d > n * (cv_folds - 1) / cv_folds else None
    z = standardizer(x) if gram is None else None
    per_fold: dict[float, list[float]] = {value: [] for value in values}
    for fold in range(cv_folds):
        train = torch.from_numpy(np.flatnonzero(fold_of != fold)).to(x.device)
        held = torch.from_numpy(np.flatnonzero(fold_of == fold)).to(x.device)
        if train.numel() == 0 or held.numel() == 0:
            raise UsageError(f"too few samples ({n}) for {cv_folds}-fold cross-validation")
        if gram is not None:
            factor: Tensor | None = _factor(gram[train][:, train])
            design, cross = factor.float(), gram[held][:, train]  # type: ignore[union-attr]
        else:
            assert z is not None
            factor, design, cross = None, z[train], z[held]
        start: tuple[Tensor, Tensor] | None = None
        for value in values:
            coef, bias, _ = _solve(design, target[train], k, kind, value, max_iter, 1e-6, start)
            start = (coef, bias)
            scores = cross @ (coef if factor is None else _dual_coefficients(factor, coef)) + bias
            per_fold[value].append(mean_class_accuracy(scores.argmax(dim=1), target[held])[0])
    scores_by_c = {value: float(np.mean(results)) for value, results in per_fold.items()}
    best = max(scores_by_c.values())
    chosen = min(value for value, score in scores_by_c.items() if score >= best - 1e-12)
    refit_gram = gram if dual else None
    probe = _fit(x, target, classes, kind, chosen, max_iter, 1e-6, standardizer, dual, refit_gram)
    return probe, chosen, {float(v): scores_by_c[float(v)] for v in grid}
