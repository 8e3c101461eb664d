"""The ``probes`` analysis: how linearly separable are the classes in each layer's features?
(paper §8, Table 7)

The model is frozen. For an ImageFolder tree (``--data``, e.g. Caltech-101), ``--folds`` random
splits draw, per class, ``--train-per-class`` training images and up to ``--test-per-class`` test
images from the rest (seeded; classes with too few images are reported and dropped; the indices
are saved). Every image that any fold uses goes through the model once: the features of all
``--layers`` are written to an on-disk cache (:func:`vizkit.toolkit.extract_features`), so a second run
with other classifiers, folds or training sizes skips extraction. An unreadable image file is
left out (warned about, counted in result.json) and the folds are drawn again as if it were not
there, so the result is the one for the readable images alone. For each layer, fold and
classifier (``svm``: one-vs-rest squared-hinge linear SVM; ``softmax``: multinomial logistic
regression; both L2, in torch, :mod:`vizkit.toolkit.linear`), the regularisation C is chosen by
cross-validation on the training split only, the probe is refitted on the whole training split and
scored by the mean of per-class accuracies on the test split (the paper's metric); the table
reports mean ± std over folds.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vizkit
from vizkit.toolkit import report
from vizkit.toolkit.figures import new_figure

CLASSIFIERS = ("svm", "softmax")
DEFAULT_EXCLUDE = ("BACKGROUND_Google",)


def default_cache() -> Path:
    """``$VIZKIT_CACHE/features``, else ``~/.cache/vizkit/features``."""
    return vizkit.toolkit.cache_folder() / "features"


def draw_folds(
    targets: np.ndarray, classes: list[int], train_per_class: int, test_per_class: int, folds: int, seed: int
) -> tuple[list[int], dict[int, int], list[tuple[np.ndarray, np.ndarray]]]:
    """Per fold and class, ``train_per_class`` training images and up to ``test_per_class`` test
    images from the rest. Returns the classes kept, the dropped ones with their image counts
    (fewer than ``train_per_class + 1``), and the (train, test) dataset indices of each fold."""
    counts = Counter(int(t) for t in targets)
    kept = [c for c in classes if counts[c] > train_per_class]
    dropped = {c: counts[c] for c in classes if counts[c] <= train_per_class}
    rng = np.random.default_rng(seed)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(folds if kept else 0):
        train, test = [], []
        for c in kept:
            order = rng.permutation(np.flatnonzero(targets == c))
            train.append(order[:train_per_class])
            test.append(order[train_per_class : train_per_class + test_per_class])
        out.append((np.concatenate(train), np.concatenate(test)))
    return kept, dropped, out


def parse_grid(text: str) -> tuple[float, ...]:
    """``--grid``: positive C values, comma-separated, returned sorted."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise vizkit.UsageError(f"--grid takes positive numbers, comma-separated, not '{text}'") from None
    if not values or values[0] <= 0 or not all(np.isfinite(values)):
        raise vizkit.UsageError(f"--grid takes positive numbers, comma-separated, not '{text}'")
    return tuple(values)


@dataclass
class _Extraction:
    """The features of every image the folds use, and the folds: drawn again without the images
    found unreadable while extracting (the same draw as for a dataset without those files)."""

    parts: list[tuple[vizkit.toolkit.CachedFeatures, list[int]]]  # each pass and the dataset indices of its rows
    kept: list[int]  # the classes the folds use
    dropped: dict[int, int]  # classes too small to use, and their image counts
    splits: list[tuple[np.ndarray, np.ndarray]]  # (train, test) dataset indices of each fold
    used: np.ndarray  # every dataset index the folds use, sorted
    rank: int  # this process's rank (only rank 0 fits and writes)

    @property
    def features(self) -> vizkit.toolkit.CachedFeatures:
        """The first pass: layers, dims and the cache folder are the same in every pass."""
        return self.parts[0][0]

    def layer_matrix(self, layer: str) -> torch.Tensor:
        """The features of ``layer`` of the images the folds use, in ``used`` order."""
        row_of = self.row_of()
        matrix = np.zeros((len(self.used), self.features.dims[layer]), dtype=np.float32)
        for part, indices in self.parts:
            rows = [row for row, index in enumerate(indices) if index in row_of]
            if rows:
                matrix[[row_of[indices[row]] for row in rows]] = part.layer(layer)[rows]
        return torch.from_numpy(matrix)

    def row_of(self) -> dict[int, int]:
        """Dataset index -> its row in :meth:`layer_matrix`."""
        return {int(index): row for row, index in enumerate(self.used)}


def _extract(
    ctx: vizkit.RunContext,
    dataset: vizkit.ImageList,
    candidates: list[int],
    layers: list[str],
    train_per_class: int,
    test_per_class: int,
    folds: int,
    extract: dict[str, Any],
) -> _Extraction:
    """Every image a fold uses, extracted once (in dataset order, so the cache is shared by any
    split). An unreadable image is left out and the folds are drawn again without it; the images
    that replace it are extracted in a further, small pass. Every rank learns the same unreadable
    rows, so all take the same passes. ``extract``: :func:`vizkit.toolkit.extract_features`'
    options (cache folder, pool, dtype, workers, resume)."""
    targets = np.asarray(dataset.targets)
    unreadable: set[int] = set()
    extracted: set[int] = set()
    parts: list[tuple[vizkit.toolkit.CachedFeatures, list[int]]] = []
    group = vizkit.toolkit.ProcessGroup.join(ctx.device)
    try:
        while True:
            usable = targets.copy()
            usable[sorted(unreadable)] = -1
            kept, dropped, splits = draw_folds(usable, candidates, train_per_class, test_per_class, folds, ctx.seed)
            if len(kept) < 2:
                raise vizkit.UsageError(
                    f"fewer than two classes have more than {train_per_class} images"
                    + (f" ({len(unreadable)} unreadable ones left out)" if unreadable else "")
                )
            used = np.unique(np.concatenate([np.concatenate(split) for split in splits]))
            need = [int(i) for i in used if int(i) not in extracted]
            if not need:
                break
            part = vizkit.toolkit.extract_features(
                ctx.instrumented,
                ctx.model,
                vizkit.ImageList([dataset.paths[i] for i in need], preprocess=dataset.preprocess, source=dataset.where),
                layers,
                batch_size=ctx.batch_size,
                device=group.device,
                progress=ctx.progress,
                group=group,
                skipped=ctx.skipped,
                **extract,
            )
            parts.append((part, need))
            unreadable |= {need[row] for row in part.skipped}
            extracted |= set(need) - unreadable
    finally:
        group.close()
    return _Extraction(parts, kept, dropped, splits, used, group.rank)


def _fit(
    ctx: vizkit.RunContext,
    extraction: _Extraction,
    labels: torch.Tensor,
    kinds: list[str],
    c_grid: tuple[float, ...],
    cv_folds: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy [layers, kinds, folds], per-class accuracy [..., classes] and the C chosen by
    cross-validation [layers, kinds, folds] of every probe, one layer in memory at a time."""
    names, splits, kept = extraction.features.layers, extraction.splits, extraction.kept
    row_of = extraction.row_of()
    accuracy = np.zeros((len(names), len(kinds), len(splits)), dtype=np.float32)
    per_class = np.zeros((len(names), len(kinds), len(splits), len(kept)), dtype=np.float32)
    chosen_c = np.zeros((len(names), len(kinds), len(splits)), dtype=np.float64)
    bar = vizkit.toolkit.progress_bar(total=len(names) * len(splits) * len(kinds), desc="probes", enabled=ctx.progress)
    for l, layer in enumerate(names):
        matrix = extraction.layer_matrix(layer)  # one layer in memory
        for f, (train, test) in enumerate(splits):
            x_train = matrix[[row_of[int(i)] for i in train]].to(ctx.device)
            x_test = matrix[[row_of[int(i)] for i in test]].to(ctx.device)
            y_train, y_test = labels[train].to(ctx.device), labels[test]
            for k, kind in enumerate(kinds):
                probe, c_value, _ = vizkit.toolkit.select_probe(
                    x_train, y_train, kind, grid=c_grid, cv_folds=cv_folds, seed=ctx.seed + f
                )
                predicted = probe.predict(x_test).cpu()
                mean, classwise = vizkit.toolkit.mean_class_accuracy(predicted, y_test, kept)
                accuracy[l, k, f], per_class[l, k, f], chosen_c[l, k, f] = mean, classwise, c_value
                bar.update(1)
        del matrix
    bar.close()
    return accuracy, per_class, chosen_c


def _grid_edges(
    names: list[str], kinds: list[str], chosen_c: np.ndarray, c_grid: tuple[float, ...]
) -> dict[str, dict[str, int]]:
    """Per layer and classifier, the folds whose C is at an end of the grid (the best one may lie
    beyond it: said on stderr). A grid of one C is a fixed C, chosen by the user, not an edge the
    search ran into."""
    at_edge = {
        layer: {
            kind: int(np.isin(chosen_c[l, k], [c_grid[0], c_grid[-1]]).sum()) if len(c_grid) > 1 else 0
            for k, kind in enumerate(kinds)
        }
        for l, layer in enumerate(names)
    }
    if any(count for per_layer in at_edge.values() for count in per_layer.values()):
        print(
            f"probes: the chosen C was at an end of the grid {list(c_grid)} in some folds (see c_at_grid_edge in "
            "result.json); widening --grid may raise accuracy",
            file=sys.stderr,
        )
    return at_edge


def _table(
    names: list[str], kinds: list[str], accuracy: np.ndarray, chosen_c: np.ndarray
) -> dict[str, dict[str, dict[str, Any]]]:
    """result.json's table: per layer and classifier, the accuracy's mean and spread over the
    folds and each fold's chosen C."""
    return {
        layer: {
            kind: {
                "mean": round(float(accuracy[l, k].mean()), 5),
                "std": round(float(accuracy[l, k].std()), 5),
                "C": [float(c) for c in chosen_c[l, k]],
            }
            for k, kind in enumerate(kinds)
        }
        for l, layer in enumerate(names)
    }


def _cache_summary(parts: list[tuple[vizkit.toolkit.CachedFeatures, list[int]]], dtype: str) -> dict[str, Any]:
    """Where the features are cached (a further pass may use another folder), whether every
    pass found them there, and how they are stored."""
    return {
        "folder": str(parts[0][0].folder),
        "reused": all(part.reused for part, _ in parts),
        "dtype": dtype,
        **({"more_folders": [str(part.folder) for part, _ in parts[1:]]} if len(parts) > 1 else {}),
    }


def _classes(dataset: vizkit.ImageList, exclude: tuple[str, ...]) -> tuple[tuple[str, ...], list[int]]:
    """The excluded class folders the dataset has, and the indices of the classes left."""
    if not dataset.classes:
        raise vizkit.UsageError("probes needs an ImageFolder tree (--data DIR with one sub-folder per class)")
    unknown = [name for name in exclude if name not in dataset.classes]
    if unknown and tuple(exclude) != DEFAULT_EXCLUDE:  # the default only matters for Caltech-101
        raise vizkit.UsageError(f"--exclude {unknown[0]}: no such class folder in --data")
    exclude = tuple(name for name in exclude if name in dataset.classes)
    return exclude, [i for i, name in enumerate(dataset.classes) if name not in exclude]


def run(
    ctx: vizkit.RunContext,
    layers: list[str],
    train_per_class: int,
    test_per_class: int,
    folds: int,
    classifiers: list[str],
    pool: str,
    exclude: tuple[str, ...],
    cache: str | None,
    cache_dtype: str,
    workers: int,
    cv_folds: int,
    grid: str,
    resume: bool,
) -> vizkit.Result:
    c_grid = parse_grid(grid)
    kinds = classifiers  # the Option checked them: in the order given, each once
    if cv_folds > train_per_class:
        raise vizkit.UsageError(f"--cv-folds ({cv_folds}) cannot exceed --train-per-class ({train_per_class})")
    vizkit.toolkit.parse_pool(pool)
    dataset = ctx.dataset()
    exclude, candidates = _classes(dataset, exclude)
    extract = {
        "cache": cache or default_cache(),
        "pool": pool,
        "dtype": cache_dtype,
        "workers": workers,
        "resume": resume,
    }
    extraction = _extract(ctx, dataset, candidates, layers, train_per_class, test_per_class, folds, extract)
    parts, splits, kept, features = extraction.parts, extraction.splits, extraction.kept, extraction.features
    seconds_extract = sum(part.seconds for part, _ in parts)
    if extraction.rank != 0:  # only rank 0 fits and writes
        return vizkit.Result(summary={"rank": extraction.rank, "seconds_extract": round(seconds_extract, 3)})

    started = time.perf_counter()
    labels = torch.as_tensor(np.asarray(dataset.targets))
    accuracy, per_class, chosen_c = _fit(ctx, extraction, labels, kinds, c_grid, cv_folds)
    seconds_fit = time.perf_counter() - started
    names = features.layers
    at_edge = _grid_edges(names, kinds, chosen_c, c_grid)
    longest_test = max(len(test) for _, test in splits)
    result = vizkit.Result(
        summary={
            "table": _table(names, kinds, accuracy, chosen_c),
            "layers": names,
            "classifiers": kinds,
            "dims": features.dims,
            "classes": [dataset.classes[c] for c in kept],
            "dropped_classes": {dataset.classes[c]: n for c, n in extraction.dropped.items()},
            "excluded_classes": list(exclude),
            "folds": folds,
            "train_per_class": train_per_class,
            "test_per_class": test_per_class,
            "test_images": [len(test) for _, test in splits],
            "pool": pool,
            "cv_folds": cv_folds,
            "grid": list(c_grid),
            "c_at_grid_edge": at_edge,
            "seconds_extract": round(seconds_extract, 3),
            "seconds_fit": round(seconds_fit, 3),
            "cache": _cache_summary(parts, cache_dtype),
        },
        arrays={
            "accuracy": accuracy,
            "per_class_accuracy": per_class,
            "C": chosen_c,
            "train_index": np.stack([train for train, _ in splits]),
            "test_index": np.stack(
                [np.pad(test, (0, longest_test - len(test)), constant_values=-1) for _, test in splits]
            ),
        },
    )
    result.figures["probes"] = accuracy_figure(names, kinds, accuracy, features.dims, train_per_class, len(kept))
    result.figures["probes_table"] = table_figure(names, kinds, accuracy, features.dims)
    return result


def accuracy_figure(
    layers: list[str], kinds: list[str], accuracy: np.ndarray, dims: dict[str, int], train: int, classes: int
) -> Any:
    """Table 7 as a plot: mean per-class accuracy against layer, error bars = std over folds."""
    figure = new_figure(max(6.0, 1.1 * len(layers) + 2), 4.0)
    ax = figure.add_subplot(1, 1, 1)
    x = np.arange(len(layers))
    for k, kind in enumerate(kinds):
        ax.errorbar(
            x + (k - (len(kinds) - 1) / 2) * 0.08,
            100 * accuracy[:, k].mean(axis=1),
            yerr=100 * accuracy[:, k].std(axis=1),
            marker="o",
            capsize=3,
            linewidth=1.2,
            label=kind,
        )
    ax.set_xticks(x, [f"{layer}\n(d={dims[layer]})" for layer in layers], fontsize=7)
    ax.set_ylabel("mean per-class accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        f"Linear probes on frozen features: {classes} classes, {train} training images per class, "
        f"{accuracy.shape[2]} folds",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def table_figure(layers: list[str], kinds: list[str], accuracy: np.ndarray, dims: dict[str, int]) -> Any:
    cells = [
        [f"{dims[layer]}"]
        + [f"{100 * accuracy[l, k].mean():.1f} ± {100 * accuracy[l, k].std():.1f}" for k in range(len(kinds))]
        for l, layer in enumerate(layers)
    ]
    best = [int(np.argmax(accuracy[:, k].mean(axis=1))) for k in range(len(kinds))]
    colours = [
        ["white"] + ["#fff2b3" if best[k] == l else "white" for k in range(len(kinds))] for l in range(len(layers))
    ]
    figure = new_figure(2.2 + 1.6 * (len(kinds) + 1), 0.8 + 0.32 * len(layers))
    ax = figure.add_subplot(1, 1, 1)
    ax.axis("off")
    drawn = ax.table(
        cellText=cells, cellColours=colours, rowLabels=layers, colLabels=["dim", *kinds], loc="center", cellLoc="center"
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1.0, 1.4)
    ax.set_title(
        "Mean per-class accuracy (%), mean ± std over folds; best layer per classifier highlighted", fontsize=8
    )
    return figure


# ------------------------------------------------------------------------------------ report view
def report_view(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """The report's Table 7: a row per layer, per classifier the mean per-class accuracy ± std
    over folds (best layer in bold) and the C cross-validation chose in each fold."""
    document = page.document
    table = document.get("table")
    if not isinstance(table, dict) or not table:
        return "", set()
    listed = document.get("layers")
    layers = [str(layer) for layer in (listed if isinstance(listed, list) else []) or table]
    kinds = report.columns(document.get("classifiers"), table)
    dims: dict[str, Any] = document["dims"] if isinstance(document.get("dims"), dict) else {}
    best = {}
    for kind in kinds:
        means = [(report.dig(table, layer, kind, "mean"), layer) for layer in layers]
        finite = [(m, layer) for m, layer in means if report.is_number(m) and math.isfinite(m)]
        best[kind] = max(finite)[1] if finite else None
    head = report.two_level_head(["layer", "features"], kinds, ("accuracy", "C per fold"))
    folds = document.get("folds")
    single = report.is_number(folds) and folds == 1  # one fold has no spread: "± 0" would claim one
    rows = []
    for layer in layers:
        cells = [f"<th>{report.esc(layer)}</th><td>{report.render_value(dims.get(layer))}</td>"]
        for kind in kinds:
            std = None if single else report.dig(table, layer, kind, "std")
            text = report.mean_std(report.dig(table, layer, kind, "mean"), std, percent=True)
            if best[kind] == layer:
                text = f"<b>{text}</b>"
            cells.append(f"<td>{text}</td><td>{report.render_value(report.dig(table, layer, kind, 'C'), 2)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    caption = _report_caption(document, single)
    html = (
        f'<h3>Linear probes</h3><table class="records probes"><caption>{report.esc(caption)}; best layer in bold'
        f"</caption>{head}{''.join(rows)}</table>"
    )
    return html, {"table", "layers", "classifiers", "dims"}


def _report_caption(document: dict[str, Any], single: bool) -> str:
    folds, train, classes = document.get("folds"), document.get("train_per_class"), document.get("classes")
    caption = "Mean per-class test accuracy" + (" of a single fold, so no ± std" if single else " ± std over folds")
    details = []
    if report.is_number(folds) and not single:
        details.append(f"{folds} folds")
    if report.is_number(train):
        details.append(f"{train} training images per class")
    if isinstance(classes, list):
        details.append(f"{len(classes)} classes")
    if details:
        caption += " (" + ", ".join(details) + ")"
    return caption


@vizkit.hookimpl
def register_analyses(register: Any) -> None:
    register(
        vizkit.Analysis(
            name="probes",
            description="Linear probes (SVM, softmax) on each layer's frozen features: accuracy vs depth (Table 7)",
            run=run,
            inputs="data",
            options=[
                vizkit.Option(
                    "layers",
                    str,
                    required=True,
                    help="layers to probe, comma-separated",
                    parse=vizkit.toolkit.parse_layers,
                ),
                vizkit.Option("train_per_class", int, 30, help="training images per class and fold", minimum=2),
                vizkit.Option(
                    "test_per_class",
                    int,
                    50,
                    help="test images per class and fold, at most (from the rest)",
                    minimum=1,
                ),
                vizkit.Option(
                    "folds", int, 5, help="random train/test splits (seeded with --seed)", minimum=1, maximum=1000
                ),
                vizkit.Option(
                    "classifiers",
                    CLASSIFIERS,
                    "svm,softmax",
                    help="svm (one-vs-rest squared hinge) and/or softmax, comma-separated",
                    comma_separated=True,
                ),
                vizkit.Option(
                    "pool", str, "none", help="none, avg (global average) or max:S (adaptive max-pool to SxS)"
                ),
                vizkit.Option(
                    "exclude",
                    str,
                    DEFAULT_EXCLUDE,
                    multiple=True,
                    help="class folders to leave out (the paper drops Caltech's background class)",
                ),
                vizkit.Option(
                    "cache",
                    str,
                    None,
                    help="feature cache root (default: $VIZKIT_CACHE/features or ~/.cache/vizkit/features)",
                    output_folder=True,
                ),
                vizkit.Option("cache_dtype", ("float32", "float16"), "float32", help="how features are stored"),
                vizkit.Option("workers", int, 2, help="data-loading worker processes", minimum=0, maximum=128),
                vizkit.Option(
                    "cv_folds", int, 3, help="cross-validation folds on the training split that choose C", minimum=2
                ),
                vizkit.Option(
                    "grid",
                    str,
                    ",".join(f"{c:g}" for c in vizkit.toolkit.PROBE_GRID),
                    help="C values cross-validation chooses from, comma-separated",
                ),
                vizkit.Option(
                    "resume",
                    bool,
                    False,
                    help="continue an interrupted feature extraction from the cache (without it, it starts over)",
                ),
            ],
            demo={
                "layers": "conv2,conv3,conv5,fc7",
                "train_per_class": 2,
                "test_per_class": 2,
                "folds": 2,
                "cv_folds": 2,
                "classifiers": "svm",
                "workers": 0,
            },
            demo_quick={"layers": "conv2,fc7", "folds": 1},
            view=vizkit.ReportView(report_view),
        )
    )
