"""Benchmark: linear probes, vizkit (torch) vs scikit-learn, on the same cached features and folds;
and feature extraction vs a plain forward.

    python bench/probes.py [--layers features.3,features.7,features.12] [--pool max:4] [--folds 1]
                           [--train-per-class 30] [--extract-images 320] [--fixed-c]

Features of the real SqueezeNet over Caltech-101 (``BACKGROUND_Google`` excluded) come from
vizkit's feature cache (extracted on the first run). For each layer and fold, vizkit's
``select_probe(kind="svm"|"softmax")`` chooses C from the grid by 3-fold stratified
cross-validation on the training split (mean per-class accuracy = scikit-learn's
``balanced_accuracy``), refits on the whole training split and is scored on the test split.
scikit-learn's ``LinearSVC`` and ``LogisticRegression`` (lbfgs), after ``StandardScaler``, do the
same with ``GridSearchCV`` over the same grid and folds; with ``--fixed-c`` (that grid search takes
far more than an hour for LinearSVC at 101 classes and C = 10) both libraries instead fit once at
the C vizkit chose, giving a per-fit time ratio. Prints accuracy and fit time of each and the
ratio, in one run.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import vizkit
from common import SHARED, median_time, squeezenet
from vizkit_plugins.probes.extraction import default_cache
from vizkit_plugins.probes.folds import draw_folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="squeezenet", help="squeezenet (the real one in ../shared) or a model spec")
    parser.add_argument("--layers", default="features.3,features.7,features.12")
    parser.add_argument("--pool", default="max:4")
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--train-per-class", type=int, default=30)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--extract-images", type=int, default=320)
    parser.add_argument("--classifiers", default="svm,softmax", help="which to compare, in this order")
    parser.add_argument(
        "--fixed-c",
        action="store_true",
        help="one fit per library at the C vizkit's selection chose (per-fit ratio) instead of sklearn's grid search",
    )
    parser.add_argument(
        "--skip-sklearn-above", type=int, default=20000, help="feature dims above which sklearn is not run"
    )
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    model = squeezenet() if args.model == "squeezenet" else vizkit.load_model(args.model)
    data = vizkit.data.image_list(SHARED / "data" / "caltech101", vizkit.data.preprocess_for(model))
    targets = np.asarray(data.targets)
    classes = [i for i, name in enumerate(data.classes) if name != "BACKGROUND_Google"]
    kept, _, splits = draw_folds(targets, classes, args.train_per_class, args.test_per_class, args.folds, seed=0)
    used = np.unique(np.concatenate([np.concatenate(s) for s in splits]))
    subset = vizkit.ImageList([data.paths[i] for i in used], preprocess=data.preprocess)
    row_of = {int(i): r for r, i in enumerate(used)}
    layers = vizkit.toolkit.parse_layers(args.layers)
    print(
        f"{args.model}, Caltech-101: {len(kept)} classes, {len(used)} images, pool {args.pool}, "
        f"torch threads {torch.get_num_threads()}"
    )

    # extraction throughput against a plain no-grad forward over the same images
    sample = vizkit.ImageList(subset.paths[: args.extract_images], preprocess=data.preprocess)
    batches = [
        torch.stack([sample[i][0] for i in range(s, min(len(sample), s + 32))]) for s in range(0, len(sample), 32)
    ]

    def plain() -> None:
        with torch.no_grad():
            for x in batches:
                model(x)

    plain_seconds, _ = median_time(plain, 1)
    with vizkit.instrument(model) as im:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            vizkit.toolkit.extract_features(
                im, model, sample, layers, scratch, pool=args.pool, batch_size=32, workers=2
            )
            extract_seconds = time.perf_counter() - started
        features = vizkit.toolkit.extract_features(
            im, model, subset, layers, default_cache(), pool=args.pool, batch_size=32, workers=2
        )
    print(
        f"  extraction of {len(sample)} images (decode included): {len(sample) / extract_seconds:.1f} img/s; "
        f"plain forward of the same decoded batches: {len(sample) / plain_seconds:.1f} img/s"
    )
    grid = vizkit.toolkit.PROBE_GRID
    for layer in layers:
        matrix = np.asarray(features.layer(layer), dtype=np.float32)
        for fold, (train, test) in enumerate(splits):
            x_train, x_test = matrix[[row_of[int(i)] for i in train]], matrix[[row_of[int(i)] for i in test]]
            y_train, y_test = targets[train], targets[test]
            for kind in [k.strip() for k in args.classifiers.split(",") if k.strip()]:
                started = time.perf_counter()
                probe, c_ours, _ = vizkit.toolkit.select_probe(
                    torch.from_numpy(x_train), torch.from_numpy(y_train), kind, grid=grid, cv_folds=3, seed=fold
                )
                ours_seconds = time.perf_counter() - started
                ours, _ = vizkit.toolkit.mean_class_accuracy(
                    probe.predict(torch.from_numpy(x_test)).numpy(), y_test, kept
                )
                line = (
                    f"  {layer:<14} d={matrix.shape[1]:<6} fold {fold} {kind:<8} vizkit {100 * ours:5.1f}% "
                    f"(C={c_ours:g}) {ours_seconds:7.1f} s"
                )
                if matrix.shape[1] <= args.skip_sklearn_above and args.fixed_c:
                    started = time.perf_counter()
                    single = vizkit.toolkit.fit_probe(
                        torch.from_numpy(x_train), torch.from_numpy(y_train), kind, C=c_ours
                    )
                    single_seconds = time.perf_counter() - started
                    single_accuracy, _ = vizkit.toolkit.mean_class_accuracy(
                        single.predict(torch.from_numpy(x_test)).numpy(), y_test, kept
                    )
                    estimator = LinearSVC(C=c_ours) if kind == "svm" else LogisticRegression(C=c_ours, max_iter=5000)
                    model_sk = make_pipeline(StandardScaler(), estimator)
                    started = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model_sk.fit(x_train, y_train)
                    theirs_seconds = time.perf_counter() - started
                    theirs, _ = vizkit.toolkit.mean_class_accuracy(model_sk.predict(x_test), y_test, kept)
                    line += (
                        f" | one fit at C={c_ours:g}: vizkit {100 * single_accuracy:5.1f}% {single_seconds:6.1f} s,"
                        f" sklearn {100 * theirs:5.1f}% {theirs_seconds:6.1f} s,"
                        f" sklearn / vizkit time = {theirs_seconds / single_seconds:.1f}x"
                    )
                elif matrix.shape[1] <= args.skip_sklearn_above:
                    estimator = LinearSVC(C=1.0) if kind == "svm" else LogisticRegression(C=1.0, max_iter=5000)
                    name = "linearsvc" if kind == "svm" else "logisticregression"
                    search = GridSearchCV(
                        make_pipeline(StandardScaler(), estimator),
                        {f"{name}__C": list(grid)},
                        cv=StratifiedKFold(3, shuffle=True, random_state=fold),
                        scoring="balanced_accuracy",
                        n_jobs=1,
                    )
                    started = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        search.fit(x_train, y_train)
                    theirs_seconds = time.perf_counter() - started
                    theirs, _ = vizkit.toolkit.mean_class_accuracy(search.predict(x_test), y_test, kept)
                    line += (
                        f" | sklearn {100 * theirs:5.1f}% (C={search.best_params_[f'{name}__C']:g}) "
                        f"{theirs_seconds:7.1f} s | sklearn / vizkit time = {theirs_seconds / ours_seconds:.1f}x"
                    )
                print(line, flush=True)


if __name__ == "__main__":
    main()
