"""Correspondence (paper §7): the score by hand, landmark mapping, the pipeline against an
independent computation, reproducible random squares, bad input, and the real dogs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vizkit
from helpers import SHARED, assert_no_hooks, needs_shared, shipped_photos
from vizkit.app.cli import main
from vizkit_plugins.correspondence.landmarks import read_landmarks
from vizkit_plugins.correspondence.squares import Square
from vizkit_plugins.correspondence.statistics import p_below_random, pair_values, sign_distances

DOGS = SHARED / "data" / "dog_landmarks.json"


# ------------------------------------------------------------------------------------ the score
def test_sign_distances_by_hand():
    eps = torch.tensor([[1.0, -2, 0, 0], [3, 0, 0, -1], [-1, -1, 0, 0]])
    # signs a=[+,-,0,0], b=[+,0,0,-], c=[-,-,0,0]
    literal = sign_distances(eps, "sign")  # every position counts, 0 is a sign of its own
    assert literal[0, 1] == pytest.approx(2 / 4) and literal[0, 2] == pytest.approx(1 / 4)
    assert literal[1, 2] == pytest.approx(3 / 4)
    changed = sign_distances(eps, "changed")  # only positions non-zero in one of the two
    assert changed[0, 1] == pytest.approx(2 / 3) and changed[0, 2] == pytest.approx(1 / 2)
    assert changed[1, 2] == pytest.approx(3 / 3)
    for matrix in (literal, changed):
        assert np.allclose(matrix, matrix.T) and np.all(np.diag(matrix) == 0)
    unchanged = sign_distances(torch.zeros(2, 5), "changed")
    assert np.isnan(unchanged[0, 1]) and sign_distances(torch.zeros(2, 5), "sign")[0, 1] == 0
    with pytest.raises(vizkit.UsageError, match="--zeros"):
        sign_distances(eps, "nonzero")


def test_pairs_and_rank_p_value():
    matrix = np.array([[0, 0.1, 0.2], [0.1, 0, np.nan], [0.2, np.nan, 0]])
    assert sorted(pair_values(matrix, [0, 1, 2])) == [0.1, 0.2]
    assert p_below_random(0.15, np.array([0.1, 0.2, 0.3])) == pytest.approx(2 / 4)
    assert p_below_random(0.05, np.array([0.1, 0.2, 0.3])) == pytest.approx(1 / 4)


# ------------------------------------------------------------------------------------ landmarks
@pytest.mark.parametrize("width,height,x,y", [(300, 200, 210, 50), (180, 260, 30, 200), (256, 256, 128, 7)])
def test_landmark_maps_through_resize_and_crop_onto_the_dot(width, height, x, y):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[y - 1 : y + 2, x - 1 : x + 2] = 255  # a 3x3 white dot centred on pixel (x, y)
    preprocess = vizkit.Preprocess(resize=128, crop=112)
    tensor = preprocess(Image.fromarray(image))
    mx, my = preprocess.input_point(x, y, width, height)
    brightness = tensor.sum(0)
    if not (0 <= mx < 112 and 0 <= my < 112):
        assert float(brightness.max()) < float(brightness.min()) + 1  # the dot was cropped away
        return
    row, col = divmod(int(brightness.argmax()), brightness.shape[1])
    assert abs(row - my) <= 1.0 and abs(col - mx) <= 1.0, ((row, col), (my, mx))


def write_landmarks(folder: Path, images: list[tuple[str, dict]], name: str = "marks.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"images": [{"image": image, **parts} for image, parts in images]}))
    return path


@pytest.fixture
def photo_landmarks(tmp_path) -> Path:
    """Three shipped photographs copied next to a landmarks file naming two parts in each."""
    entries = []
    for index, source in enumerate(shipped_photos()):
        picture = Image.open(source).convert("RGB")
        picture.save(tmp_path / f"photo{index}.jpg")
        width, height = picture.size
        entries.append(
            (f"photo{index}.jpg", {"upper": [width * 0.45, height * 0.4], "lower": [width * 0.55, height * 0.6]})
        )
    return write_landmarks(tmp_path, entries)


def test_paths_resolve_next_to_the_file_then_above_it(tmp_path, photo_landmarks):
    nested = tmp_path / "deeper" / "still"
    nested.mkdir(parents=True)
    moved = write_landmarks(nested, [(f"photo{i}.jpg", {"p": [5, 5]}) for i in range(2)])
    assert [e.path for e in read_landmarks(moved)] == [tmp_path / "photo0.jpg", tmp_path / "photo1.jpg"]
    width, height = Image.open(shipped_photos()[0]).size
    assert read_landmarks(photo_landmarks)[0].parts["upper"] == pytest.approx((width * 0.45, height * 0.4))


# ------------------------------------------------------------------------------------ the pipeline
def test_scores_equal_an_independent_computation_and_random_squares_are_seeded(photo_landmarks, bundled_model):
    options = {"landmarks": str(photo_landmarks), "layers": "conv3,fc7", "size": 30, "random": 4}
    result = vizkit.run("correspondence", bundled_model, seed=3, **options)
    assert_no_hooks(bundled_model)
    assert result["parts"] == ["upper", "lower"] and result["pairs"] == {"upper": 3, "lower": 3, "random": 3}
    again = vizkit.run("correspondence", bundled_model, seed=3, **options)
    other = vizkit.run("correspondence", bundled_model, seed=4, **options)
    assert np.array_equal(result.arrays["squares"], again.arrays["squares"])
    assert result["table"] == again["table"] and result["random"] == again["random"]
    assert not np.array_equal(result.arrays["squares"][:, 2:], other.arrays["squares"][:, 2:])
    assert np.array_equal(result.arrays["squares"][:, :2], other.arrays["squares"][:, :2])  # parts do not move

    # independently: a plain forward hook, the part squares placed by hand, and each image's
    # batch composed as the analysis composes it (float results depend on the batch's shape)
    preprocess = vizkit.data.preprocess_for(bundled_model)
    captured = {}
    handle = bundled_model.fc7.register_forward_hook(lambda m, i, o: captured.update(out=o.detach()))
    eps = []
    try:
        for i, entry in enumerate(read_landmarks(photo_landmarks)):
            picture = vizkit.load_image(entry.path)
            x = preprocess(picture)
            corners = []
            for part in ("upper", "lower"):
                cx, cy = preprocess.input_point(*entry.parts[part], *picture.size)
                corners.append((round(cy - 14.5), round(cx - 14.5)))
            corners += [tuple(c) for c in result.arrays["squares"][i, 2:]]
            batch = [x]
            for top, left in corners:
                occluded = x.clone()
                occluded[:, max(top, 0) : top + 30, max(left, 0) : left + 30] = 0.0  # the mean colour
                batch.append(occluded)
            with torch.no_grad():
                bundled_model(torch.stack(batch))
            eps.append(captured["out"][0] - captured["out"][2])  # the "lower" square
    finally:
        handle.remove()
    expected = sign_distances(torch.stack(eps))
    assert np.allclose(result.arrays["lower/fc7"], expected, atol=1e-6)
    values = expected[np.triu_indices(3, 1)]
    assert result["table"]["lower"]["fc7"]["mean"] == pytest.approx(values.mean(), abs=1e-6)
    assert result["table"]["lower"]["fc7"]["std"] == pytest.approx(values.std(), abs=1e-6)
    draws = result.arrays["random/fc7"]
    assert draws.shape == (4, 3, 3)
    pooled = np.concatenate([d[np.triu_indices(3, 1)] for d in draws])
    assert result["random"]["fc7"]["mean"] == pytest.approx(pooled.mean(), abs=1e-6)
    draw_means = np.array([d[np.triu_indices(3, 1)].mean() for d in draws])
    part_mean = result["table"]["lower"]["fc7"]["mean"]
    assert result["table"]["lower"]["fc7"]["p_vs_random"] == pytest.approx(
        (1 + (draw_means <= part_mean + 1e-6).sum()) / 5  # ties count; the arrays are float32
    )
    # random squares lie in the parts' box grown by --size, inside the crop
    regions, squares = result.arrays["regions"], result.arrays["squares"]
    centres = squares[:, 2:] + 14.5
    assert np.all(centres[..., 0] >= regions[:, None, 1] - 0.5) and np.all(centres[..., 0] <= regions[:, None, 3] + 0.5)


def test_cli_writes_the_table_and_the_figures(photo_landmarks, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "run",
        "correspondence",
        "--model",
        "zfnet-compact",
        "--landmarks",
        str(photo_landmarks),
        "--layers",
        "conv5,fc7",
        "--random",
        "3",
        "--zeros",
        "changed",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    document, arrays = vizkit.load_result(out)
    assert set(document["table"]) == {"upper", "lower"} and set(document["table"]["upper"]) == {"conv5", "fc7"}
    assert set(document["table"]["upper"]["conv5"]) == {"mean", "std", "p_vs_random"}
    assert document["zeros"] == "changed" and document["random"]["fc7"]["mean"] is not None
    assert arrays["upper/conv5"].shape == (3, 3) and arrays["random/conv5"].shape == (3, 3, 3)
    for name in ("correspondence_occlusions.png", "correspondence_table.png"):
        assert (out / name).stat().st_size > 5_000


def test_a_tolerance_no_change_exceeds_gives_no_score_not_a_small_p(photo_landmarks, tmp_path, capsys):
    """--zeros changed with --tolerance 1: no unit changes by more than the layer's largest
    activation, so no pair has a score; the table says n/a (None), never p = 1/(1+draws)."""
    out = tmp_path / "out"
    argv = ["run", "correspondence", "--model", "zfnet-compact", "--landmarks", str(photo_landmarks)]
    argv += ["--layers", "conv5,fc7", "--random", "3", "--zeros", "changed", "--tolerance", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy "mean of empty slice" on the way
        assert main([*argv, "--out", str(out), "--quiet"]) == 0
    document, _ = vizkit.load_result(out)
    for part in ("upper", "lower"):
        for layer in ("conv5", "fc7"):
            assert document["table"][part][layer] == {"mean": None, "std": None, "p_vs_random": None}
    assert document["random"]["conv5"] == {"mean": None, "std": None, "draw_std": None}
    assert (out / "correspondence_table.png").stat().st_size > 5_000
    assert p_below_random(float("nan"), np.array([0.1, 0.2])) is None
    assert p_below_random(0.1, np.array([np.nan, np.nan])) is None


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "case,message",
    [
        ("missing image", "image not found: nothere.jpg"),
        ("part outside the crop", "no part is named (inside the crop) in at least two images"),
        ("no parts", "names no parts"),
        ("one image", "needs at least two"),
        ("size too large", "--size must be between 1 and the input size 144"),
        ("not json", "is not valid JSON"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(case, message, tmp_path, photo_landmarks, capsys, recorded_models):
    landmarks, extra = photo_landmarks, []
    good = {"p": [256, 300]}
    if case == "missing image":
        landmarks = write_landmarks(tmp_path, [("photo0.jpg", good), ("nothere.jpg", good)], "bad.json")
    elif case == "part outside the crop":  # 'p' at the very corner: the centre crop cuts it away
        landmarks = write_landmarks(tmp_path, [("photo0.jpg", good), ("photo1.jpg", {"p": [1, 1]})], "bad.json")
    elif case == "no parts":
        landmarks = write_landmarks(tmp_path, [("photo0.jpg", {}), ("photo1.jpg", {})], "bad.json")
    elif case == "one image":
        landmarks = write_landmarks(tmp_path, [("photo0.jpg", good)], "bad.json")
    elif case == "size too large":
        extra = ["--size", "500"]
    elif case == "not json":
        landmarks = tmp_path / "bad.json"
        landmarks.write_text("{not json")
    out = tmp_path / "out"
    status = main(
        [
            "run",
            "correspondence",
            "--model",
            "zfnet-compact",
            "--landmarks",
            str(landmarks),
            "--layers",
            "conv5",
            "--out",
            str(out),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("vizkit: error:") and len(err.strip().splitlines()) == 1, err
    assert message in err
    if case == "part outside the crop":
        assert "p of photo1.jpg" in err  # the skipped part is reported
    assert not (out / "result.json").exists()
    for model in recorded_models:
        assert_no_hooks(model)


# ------------------------------------------------------------------------------------ real dogs
def test_five_real_dogs_on_the_real_squeezenet(squeezenet):
    needs_shared(DOGS)
    result = vizkit.run(
        "correspondence", squeezenet, landmarks=str(DOGS), layers=["features.7", "features.12"], random=5
    )
    assert_no_hooks(squeezenet)
    assert result["parts"] == ["left_eye", "right_eye", "nose"] and result["skipped"] == []
    assert result["pairs"]["nose"] == 10
    for part in result["parts"]:
        for layer in ("features.7", "features.12"):
            stats = result["table"][part][layer]
            assert 0.0 < stats["mean"] < 0.5 and stats["std"] > 0 and 1 / 6 <= stats["p_vs_random"] <= 1.0
    # every part square is centred on its landmark (mapped to input pixels) in every dog
    for i, entry in enumerate(read_landmarks(DOGS)):
        picture = vizkit.load_image(entry.path)
        for p, part in enumerate(result["parts"]):
            cx, cy = vizkit.Preprocess().input_point(*entry.parts[part], *picture.size)
            top, left = result.arrays["squares"][i, p]
            assert abs(top + 19.5 - cy) <= 0.5 and abs(left + 19.5 - cx) <= 0.5
    assert Square.centred(10.0, 20.0, 40) == Square(0, -10, 40)


def test_random_squares_are_centred_inside_the_given_box(tmp_path, photo_landmarks, bundled_model):
    width, height = Image.open(shipped_photos()[0]).size
    box = [width * 0.2, height * 0.3, width * 0.6, height * 0.7]
    entries = [(f"photo{i}.jpg", {"p": [width * 0.4, height * 0.5], "box": box}) for i in (0, 0, 0)]
    landmarks = write_landmarks(tmp_path, entries, "boxed.json")
    result = vizkit.run("correspondence", bundled_model, landmarks=str(landmarks), layers="conv5", size=20, random=30)
    preprocess = vizkit.data.preprocess_for(bundled_model)
    x0, y0 = preprocess.input_point(box[0], box[1], width, height)
    x1, y1 = preprocess.input_point(box[2], box[3], width, height)
    assert np.allclose(result.arrays["regions"][0], [max(x0, 0), max(y0, 0), min(x1, 143), min(y1, 143)], atol=1e-4)
    centres = result.arrays["squares"][:, 1:] + 9.5  # (row, col) centres of the random squares
    assert np.all(centres[..., 0] >= max(y0, 0) - 0.5) and np.all(centres[..., 0] <= min(y1, 143) + 0.5)
    assert np.all(centres[..., 1] >= max(x0, 0) - 0.5) and np.all(centres[..., 1] <= min(x1, 143) + 0.5)
    # the same image three times: a part's occlusion changes all three identically
    assert result["table"]["p"]["conv5"]["mean"] == 0.0
