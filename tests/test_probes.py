"""Probes (paper §8, Table 7): fold drawing, the feature cache (keys, reuse, resume, torchrun),
the analysis end to end on shipped photographs, and Caltech-101 on the real SqueezeNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vizkit
import vizkit.toolkit.features as features_module
from helpers import SHARED, assert_no_hooks, needs_shared, run_vizkit, shipped_photos
from vizkit.app.cli import main
from vizkit_plugins.probes.folds import draw_folds

CALTECH = SHARED / "data" / "caltech101"


# ------------------------------------------------------------------------------------ folds
def test_folds_have_the_counts_are_disjoint_and_seeded():
    targets = np.repeat(np.arange(4), [10, 6, 3, 12])  # class 2 has too few images for 4 + 1
    kept, dropped, folds = draw_folds(targets, [0, 1, 2, 3], train_per_class=4, test_per_class=5, folds=3, seed=7)
    assert kept == [0, 1, 3] and dropped == {2: 3}
    for train, test in folds:
        assert not set(train) & set(test)
        assert [int((targets[train] == c).sum()) for c in kept] == [4, 4, 4]
        assert [int((targets[test] == c).sum()) for c in kept] == [5, 2, 5]  # up to 5 from the rest
    again = draw_folds(targets, [0, 1, 2, 3], 4, 5, 3, seed=7)[2]
    other = draw_folds(targets, [0, 1, 2, 3], 4, 5, 3, seed=8)[2]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(folds, other))
    assert not np.array_equal(folds[0][0], folds[1][0])  # folds differ from each other


# ------------------------------------------------------------------------------------ a small tree
@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory) -> Path:
    """Three classes (one per shipped photograph) of 8 crops each, plus a background class."""
    root = tmp_path_factory.mktemp("tree")
    for label, source in zip(("hopper", "china", "flower"), shipped_photos()):
        folder = root / label
        folder.mkdir()
        image = Image.open(source).convert("RGB")
        width, height = image.size
        for i in range(8):
            box = (i * width // 40, i * height // 50, width - (7 - i) * width // 40, height - (i % 3) * height // 30)
            variant = image.crop(box).rotate(4 * i - 14)
            (variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else variant).save(folder / f"{i}.jpg")
    (root / "BACKGROUND_Google").mkdir()
    Image.open(shipped_photos()[0]).convert("RGB").resize((64, 64)).save(root / "BACKGROUND_Google" / "0.jpg")
    return root


def _cache_rows(model, tree, cache, layers, **options):
    data = vizkit.data.image_list(tree, vizkit.data.preprocess_for(model))
    with vizkit.instrument(model) as im:
        found = vizkit.toolkit.extract_features(im, model, data, layers, cache, **options)
    assert_no_hooks(model)
    return found


def test_cache_is_reused_extended_and_invalidated(photo_tree, tmp_path, bundled_model):
    first = _cache_rows(bundled_model, photo_tree, tmp_path, ["conv5"], pool="max:2", batch_size=5)
    assert not first.reused and first.dims == {"conv5": 128 * 4} and first.count == 25
    again = _cache_rows(bundled_model, photo_tree, tmp_path, ["conv5"], pool="max:2", batch_size=5)
    assert again.reused and again.folder == first.folder
    assert np.array_equal(np.asarray(again.layer("conv5")), np.asarray(first.layer("conv5")))
    more = _cache_rows(bundled_model, photo_tree, tmp_path, ["conv5", "fc7"], pool="max:2", batch_size=5)
    assert not more.reused and more.folder == first.folder and more.dims == {"conv5": 512, "fc7": 512}
    # the rows are each image's features (fc7 is a vector: no pooling applies)
    data = vizkit.data.image_list(photo_tree, vizkit.data.preprocess_for(bundled_model))
    captured = {}
    handle = bundled_model.fc7.register_forward_hook(lambda m, i, o: captured.update(out=o.detach()))
    with torch.no_grad():
        bundled_model(torch.stack([data[i][0] for i in (3, 17)]))
    handle.remove()
    assert np.allclose(np.asarray(more.layer("fc7"))[[3, 17]], captured["out"].numpy(), atol=1e-4)
    # other pooling, other dtype, other weights: other folders
    assert _cache_rows(bundled_model, photo_tree, tmp_path, ["conv5"], pool="avg").folder != first.folder
    assert (
        _cache_rows(bundled_model, photo_tree, tmp_path, ["conv5"], pool="max:2", dtype="float16").folder
        != first.folder
    )
    changed = vizkit.load_model("zfnet-compact")
    with torch.no_grad():
        changed.fc8.bias.add_(1.0)
    assert _cache_rows(changed, photo_tree, tmp_path, ["conv5"], pool="max:2").folder != first.folder
    with pytest.raises(vizkit.UsageError, match="unknown layer 'conv9'"):
        _cache_rows(bundled_model, photo_tree, tmp_path / "x", ["conv9"])


def test_interrupted_extraction_resumes_without_redoing_batches(photo_tree, tmp_path, bundled_model, monkeypatch):
    reference = _cache_rows(bundled_model, photo_tree, tmp_path / "ref", ["conv3"], pool="avg", batch_size=4)
    calls = {"n": 0}
    original = features_module.pool_features

    def failing(activation, pool):
        calls["n"] += 1
        if calls["n"] == 4:  # the probe forward, then batches 0 and 1 go through; batch 2 fails
            raise KeyboardInterrupt
        return original(activation, pool)

    monkeypatch.setattr(features_module, "pool_features", failing)
    with pytest.raises(KeyboardInterrupt):
        _cache_rows(bundled_model, photo_tree, tmp_path / "run", ["conv3"], pool="avg", batch_size=4)
    monkeypatch.setattr(features_module, "pool_features", original)
    counted = {"batches": 0}

    def counting(activation, pool):
        counted["batches"] += 1
        return original(activation, pool)

    monkeypatch.setattr(features_module, "pool_features", counting)
    resumed = _cache_rows(bundled_model, photo_tree, tmp_path / "run", ["conv3"], pool="avg", batch_size=4)
    assert counted["batches"] == 1 + 7 - 2  # the probe, then the 5 batches not done before (25 images / 4)
    assert np.array_equal(np.asarray(resumed.layer("conv3")), np.asarray(reference.layer("conv3")))


@pytest.mark.slow
def test_torchrun_two_processes_fill_the_same_cache_as_one(photo_tree, tmp_path):
    common = [
        "run",
        "probes",
        "--model",
        "zfnet-compact",
        "--data",
        str(photo_tree),
        "--layers",
        "conv4,fc7",
        "--pool",
        "max:2",
        "--train-per-class",
        "4",
        "--test-per-class",
        "4",
        "--folds",
        "2",
        "--cv-folds",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--quiet",
    ]
    single = run_vizkit([*common, "--cache", str(tmp_path / "one"), "--out", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr[-3000:]
    multi = run_vizkit([*common, "--cache", str(tmp_path / "two"), "--out", str(tmp_path / "multi")], processes=2)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, _ = vizkit.load_result(tmp_path / "single")
    two, _ = vizkit.load_result(tmp_path / "multi")
    for layer in ("conv4", "fc7"):
        a = np.load(Path(one["cache"]["folder"]) / f"{layer}.npy")
        b = np.load(Path(two["cache"]["folder"]) / f"{layer}.npy")
        assert np.array_equal(a, b), layer
    assert one["table"] == two["table"]


# ------------------------------------------------------------------------------------ the analysis
def test_analysis_end_to_end_and_the_cache_on_a_second_run(photo_tree, tmp_path, capsys, recorded_models):
    out, cache = tmp_path / "probes", tmp_path / "cache"
    argv = [
        "run",
        "probes",
        "--model",
        "zfnet-compact",
        "--data",
        str(photo_tree),
        "--layers",
        "conv1,conv5,fc7",
        "--pool",
        "max:2",
        "--train-per-class",
        "4",
        "--test-per-class",
        "4",
        "--folds",
        "3",
        "--cv-folds",
        "2",
        "--cache",
        str(cache),
        "--workers",
        "0",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    document, arrays = vizkit.load_result(out)
    assert document["classes"] == ["china", "flower", "hopper"] and document["excluded_classes"] == [
        "BACKGROUND_Google"
    ]
    assert set(document["table"]) == {"conv1", "conv5", "fc7"} and set(document["table"]["fc7"]) == {"svm", "softmax"}
    assert arrays["accuracy"].shape == (3, 2, 3) and arrays["per_class_accuracy"].shape == (3, 2, 3, 3)
    assert arrays["train_index"].shape == (3, 12) and arrays["test_index"].shape == (3, 12)
    assert document["table"]["fc7"]["svm"]["mean"] >= 0.9  # three different photographs: easy
    assert not document["cache"]["reused"] and document["seconds_extract"] > 0
    assert (
        main([*argv[:-3], "--classifiers", "softmax", "--folds", "2", "--out", str(tmp_path / "again"), "--quiet"]) == 0
    )
    second, _ = vizkit.load_result(tmp_path / "again")
    assert second["cache"]["reused"] and second["seconds_extract"] == 0
    for name in ("probes.png", "probes_table.png"):
        assert (out / name).stat().st_size > 5_000
    for model in recorded_models:
        assert_no_hooks(model)


def test_a_grid_of_one_c_is_not_an_edge(photo_tree, tmp_path, capsys, bundled_model):
    """--grid 1 fixes C: every fold 'chose' the grid's only value, which was counted as an end of
    the grid in every fold, with a warning to widen the grid the user had set to one value."""
    options = dict(layers="fc7", train_per_class=2, test_per_class=2, folds=2, cv_folds=2, workers=0)
    options.update(classifiers="softmax", cache=str(tmp_path / "cache"))
    result = vizkit.run("probes", bundled_model, data=photo_tree, grid="1", **options)
    assert result.summary["grid"] == [1.0] and result.summary["table"]["fc7"]["softmax"]["C"] == [1.0, 1.0]
    assert result.summary["c_at_grid_edge"] == {"fc7": {"softmax": 0}}
    assert "at an end of the grid" not in capsys.readouterr().err
    edges = vizkit.run("probes", bundled_model, data=photo_tree, grid="1,2", **options)
    assert sum(edges.summary["c_at_grid_edge"]["fc7"].values()) == 2  # two values: both ends count


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--classifiers", "knn"], "--classifiers takes svm, softmax"),
        (["--pool", "max:0"], "--pool must be none, avg or max:S"),
        (["--exclude", "cats"], "--exclude cats: no such class folder"),
        (["--train-per-class", "9"], "fewer than two classes have more than 9 images"),
        (["--layers", "conv9"], "unknown layer 'conv9'"),
        (["--grid", "0.1,x"], "--grid takes positive numbers"),
        (["--grid", "0,1"], "--grid takes positive numbers"),
    ],
)
def test_bad_options_are_one_line_errors(extra, message, photo_tree, tmp_path, capsys):
    argv = [
        "run",
        "probes",
        "--model",
        "zfnet-compact",
        "--data",
        str(photo_tree),
        "--layers",
        "conv5",
        "--train-per-class",
        "4",
        "--cache",
        str(tmp_path / "c"),
        "--workers",
        "0",
        "--out",
        str(tmp_path / "o"),
        *extra,
    ]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o" / "result.json").exists()


@pytest.mark.slow
def test_caltech_on_the_real_squeezenet(squeezenet, tmp_path):
    needs_shared(CALTECH)
    classes = sorted(p for p in CALTECH.iterdir() if p.is_dir() and p.name != "BACKGROUND_Google")[:6]
    tree = tmp_path / "caltech6"
    for folder in classes:
        (tree / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:20]:
            (tree / folder.name / image.name).symlink_to(image)
    result = vizkit.run(
        "probes",
        squeezenet,
        data=tree,
        layers=["features.3", "features.12"],
        pool="max:2",
        train_per_class=10,
        test_per_class=10,
        folds=2,
        cv_folds=2,
        cache=str(tmp_path / "c"),
        workers=0,
    )
    assert_no_hooks(squeezenet)
    table = result["table"]
    assert result["grid"] == list(vizkit.toolkit.PROBE_GRID)
    for layer in ("features.3", "features.12"):  # how many of the 2 folds chose an end of the grid
        assert all(0 <= result["c_at_grid_edge"][layer][kind] <= 2 for kind in ("svm", "softmax"))
    assert table["features.12"]["softmax"]["mean"] > table["features.3"]["softmax"]["mean"]  # deeper separates better
    assert table["features.12"]["svm"]["mean"] > 0.8


# ------------------------------------------------------------------------------------ classifiers
def test_mean_class_accuracy_by_hand():
    mean, per_class = vizkit.toolkit.mean_class_accuracy(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))
    assert per_class.tolist() == pytest.approx([2 / 3, 1.0]) and mean == pytest.approx(5 / 6)
    mean, per_class = vizkit.toolkit.mean_class_accuracy(np.array([0, 1]), np.array([0, 1]), classes=[0, 1, 2])
    assert np.isnan(per_class[2]) and mean == 1.0  # a class without test images is left out of the mean


@pytest.mark.parametrize("kind", ["svm", "softmax"])
@pytest.mark.parametrize("dims", [8, 400])  # primal (d < n) and dual (d > n)
def test_separable_blobs_are_classified_perfectly(kind, dims):
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, dims, generator=generator) * 4
    labels = torch.arange(4).repeat_interleave(60)
    points = centres[labels] + torch.randn(240, dims, generator=generator)
    train, test = torch.arange(0, 240, 2), torch.arange(1, 240, 2)
    probe = vizkit.toolkit.fit_probe(points[train], labels[train] * 10, kind, C=1.0)  # any label values
    assert (probe.predict(points[test]) == labels[test] * 10).all()


def test_primal_and_dual_agree():
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(150, 40, generator=generator), torch.randint(0, 3, (150,), generator=generator)
    for kind in ("svm", "softmax"):
        primal = vizkit.toolkit.fit_probe(x, y, kind, 0.1, dual=False, max_iter=1000, tol=1e-9)
        dual = vizkit.toolkit.fit_probe(x, y, kind, 0.1, dual=True, max_iter=1000, tol=1e-9)
        assert torch.allclose(primal.scores(x), dual.scores(x), atol=5e-3), kind


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_accuracy_matches_scikit_learn_on_digits(C):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1200], order[1200:]
    scaler = StandardScaler().fit(x[train])
    for kind, estimator in (
        ("svm", LinearSVC(C=C, max_iter=20000)),
        ("softmax", LogisticRegression(C=C, max_iter=5000)),
    ):
        ours = vizkit.toolkit.fit_probe(
            torch.tensor(x[train], dtype=torch.float32), torch.tensor(y[train]), kind, C, max_iter=500
        )
        mine = float((ours.predict(torch.tensor(x[test], dtype=torch.float32)).numpy() == y[test]).mean())
        theirs = float(
            (estimator.fit(scaler.transform(x[train]), y[train]).predict(scaler.transform(x[test])) == y[test]).mean()
        )
        assert abs(mine - theirs) <= 0.015, (kind, C, mine, theirs)


def test_selection_sees_only_the_training_split():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(90, 6, generator=generator), torch.arange(3).repeat(30)
    x[:, 0] += y * 1.5
    _probe, chosen, scores = vizkit.toolkit.select_probe(x, y, "softmax", grid=(0.01, 1.0), cv_folds=3)
    assert chosen in (0.01, 1.0) and set(scores) == {0.01, 1.0}
    again = vizkit.toolkit.select_probe(x, y, "softmax", grid=(0.01, 1.0), cv_folds=3)
    assert again[1] == chosen and again[2] == scores  # seeded
    tied = vizkit.toolkit.select_probe(
        torch.zeros(30, 2), torch.arange(3).repeat(10), "svm", grid=(0.1, 1.0, 10.0), cv_folds=3
    )
    assert tied[1] == 0.1  # every C scores the same on constant features: the smallest wins


def test_max_pooling_never_upsamples_a_smaller_map():
    """--pool max:8 on a 4x4 map (zfnet-compact's conv5) repeated every value four times: 8192
    features carrying the information of 2048. It keeps the map's own size along a short axis."""
    from vizkit.toolkit.features import pool_features

    maps = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    assert pool_features(maps, "max:8").shape == (2, 3 * 4 * 6)  # 4x6 kept, not 8x8
    assert torch.equal(pool_features(maps, "max:8"), maps.reshape(2, -1))
    assert pool_features(maps, "max:5").shape == (2, 3 * 4 * 5)  # only the axis longer than S pools
    assert torch.equal(pool_features(maps, "max:2"), torch.nn.functional.adaptive_max_pool2d(maps, 2).reshape(2, -1))
    assert pool_features(torch.ones(2, 7), "max:8").shape == (2, 7)  # fc outputs as they are
