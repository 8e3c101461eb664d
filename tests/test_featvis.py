"""The featvis analysis (issue 29) end to end: its result files, the trust numbers against an
independent computation (each unit's best natural exemplar over the data by plain forward hooks,
its rank among the layer's units), exemplars from a top9 or atlas result, the atlas pages showing
the pictures, units independent of how they are batched, resume after an interruption, the
caller's model left alone, the real SqueezeNet, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vizkit
from helpers import LABELS, SAMPLES, SQUEEZENET_WEIGHTS, assert_no_hooks, cli, needs_shared
from vizkit.app.cli import main

pytestmark = pytest.mark.usefixtures("no_hooks_left", "one_thread")

TINY = '''
"""A tiny convnet for the featvis tests (32x32 inputs, 3 classes)."""
import torch
from torch import nn

import vizkit


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5, stride=2, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(x.flatten(1))


def build() -> nn.Module:
    generator = torch.Generator().manual_seed(3)
    model = Net()
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 8
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    model.vizkit_info = vizkit.models.ModelInfo(preprocess=vizkit.Preprocess(resize=32, crop=32))
    return model
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The model file and an ImageFolder of 3 classes x 4 noisy colour images."""
    root = tmp_path_factory.mktemp("featvis")
    (root / "net.py").write_text(TINY)
    rng = np.random.default_rng(0)
    for c, colour in enumerate(((220, 60, 40), (40, 200, 60), (50, 60, 210))):
        folder = root / "tree" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(np.array(colour) + rng.integers(-90, 90, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    namespace: dict = {}
    exec(compile(TINY, str(root / "net.py"), "exec"), namespace)
    return {"root": root, "spec": f"{root / 'net.py'}:build", "tree": root / "tree", "build": namespace["build"]}


def _run(world: dict, out: Path, *extra: str, data: bool = True, layer: str | None = "relu2") -> tuple[dict, dict]:
    argv = ["run", "featvis", "--model", world["spec"], "--size", "32", "--quiet"]
    argv += ["--layer", layer] if layer else []
    argv += ["--data", str(world["tree"]), "--workers", "0"] if data else []
    assert main([*argv, *extra, "--out", str(out)]) == 0
    document, arrays = vizkit.load_result(out)
    return document, dict(arrays)


def _channel_means(world: dict, layer: str) -> tuple[np.ndarray, list[str]]:
    """[images, channels]: each data image's channel means at ``layer``, by a plain forward hook."""
    model = world["build"]().eval()
    data = vizkit.data.image_list(world["tree"], vizkit.Preprocess(resize=32, crop=32))
    x = torch.stack([data[i][0] for i in range(len(data))])
    kept = {}
    handle = getattr(model, layer).register_forward_hook(lambda m, a, out: kept.__setitem__("out", out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return kept["out"].mean(dim=(2, 3)).numpy(), [str(p) for p in data.paths]


@pytest.fixture(scope="module")
def result(world, tmp_path_factory) -> tuple[dict, dict, Path]:
    out = tmp_path_factory.mktemp("run") / "featvis"
    document, arrays = _run(world, out, "--units", "0-4", "--steps", "24", "--shown", "2", "--batch-size", "2")
    return document, arrays, out


def test_the_result_holds_the_pictures_the_objective_per_step_and_the_trust_numbers(result):
    document, arrays, out = result
    assert document["layer"] == "relu2" and document["units"] == [0, 1, 2, 3, 4]
    assert document["layer_units"] == 8 and document["objective"] == "channel"
    assert arrays["images"].shape == (5, 1, 32, 32, 3) and arrays["images"].dtype == np.uint8
    assert arrays["objective"].shape == (24, 5, 1)
    assert (out / "featvis.png").is_file()
    for unit in range(5):  # one file per unit, the picture itself
        picture = np.asarray(Image.open(out / "units" / f"{unit}.png"))
        assert np.array_equal(picture, arrays["images"][unit, 0])
    assert document["files"]["pictures"] == [f"units/{u}.png" for u in range(5)]
    # the objective rose: the final picture scores above the first step's
    assert (arrays["reached"][:, 0] > arrays["objective"][0, :, 0]).all()
    # reached and rank are read off every unit's value on the picture
    values = arrays["layer_values"]
    for row, unit in enumerate(document["units"]):
        assert arrays["reached"][row, 0] == pytest.approx(values[row, unit])
        assert arrays["rank"][row, 0] == 1 + int((values[row] > values[row, unit]).sum())
        assert document["per_unit"][row]["rank"] == [int(arrays["rank"][row, 0])]


def test_best_natural_and_ratio_match_a_plain_forward_over_the_data(result, world):
    document, arrays, _ = result
    means, paths = _channel_means(world, "relu2")
    best = means.max(axis=0)
    for row, unit in enumerate(document["units"]):
        assert arrays["best_natural"][row] == pytest.approx(best[unit], rel=1e-5)
        record = document["per_unit"][row]
        assert record["ratio"][0] == pytest.approx(arrays["reached"][row, 0] / best[unit], rel=1e-3)
        # the two exemplars shown are the two strongest images, strongest first
        order = np.argsort(-means[:, unit], kind="stable")[:2]
        assert [paths[i] for i in arrays["exemplar_images"][row]] == [paths[i] for i in order]
    assert document["exemplars"] == {"source": "data", "from": str(world["tree"]), "exact": True, "images": 12}
    # the normalised rank divides every unit by its own best natural value
    every = arrays["layer_values"] / best[None, :]
    for row, unit in enumerate(document["units"]):
        assert arrays["rank_normalized"][row, 0] == 1 + int((every[row] > every[row, unit]).sum())


def test_a_units_picture_does_not_depend_on_the_units_batched_with_it(result, world, tmp_path):
    document, arrays, _ = result  # made in batches of 2 units
    _, alone = _run(world, tmp_path / "alone", "--units", "3", "--steps", "24", "--shown", "2", "--batch-size", "1")
    _, together = _run(world, tmp_path / "together", "--units", "0-4", "--steps", "24", "--shown", "2")
    row = document["units"].index(3)
    for other in (alone["images"][0], together["images"][row]):
        assert np.abs(other.astype(int) - arrays["images"][row].astype(int)).max() <= 1


def test_an_interrupted_run_resumes_with_the_chunks_it_finished(world, tmp_path, monkeypatch):
    import vizkit_plugins.featvis.analysis as featvis_analysis

    real = featvis_analysis.optimize
    calls: list[list[int]] = []
    stop_at = {"call": 2}

    def interrupted(*args, **kwargs):
        calls.append(list(args[2]))
        if len(calls) == stop_at["call"]:
            raise KeyboardInterrupt("SIGINT")
        return real(*args, **kwargs)

    monkeypatch.setattr(featvis_analysis, "optimize", interrupted)
    argv = ["run", "featvis", "--model", world["spec"], "--layer", "relu2", "--size", "32", "--quiet"]
    argv += ["--units", "0-5", "--steps", "6", "--batch-size", "2", "--out", str(tmp_path / "r")]
    assert main(argv) != 0
    assert not (tmp_path / "r" / "result.json").exists()
    assert len(list((tmp_path / "r" / ".featvis").glob("*.pt"))) == 1  # the first chunk
    calls.clear()
    stop_at["call"] = 0
    assert main([*argv, "--resume"]) == 0
    assert calls == [[2, 3], [4, 5]]  # the finished chunk is not optimised again
    assert not (tmp_path / "r" / ".featvis").exists()  # the kept chunks go once the result is saved
    monkeypatch.setattr(featvis_analysis, "optimize", real)
    _, fresh = _run(world, tmp_path / "fresh", "--units", "0-5", "--steps", "6", "--batch-size", "2", data=False)
    _, resumed = vizkit.load_result(tmp_path / "r")
    assert np.array_equal(fresh["images"], resumed["images"])


def test_exemplars_from_a_top9_result_are_rescored_with_the_objective(world, tmp_path):
    top9 = tmp_path / "top9"
    argv = ["run", "top9", "--model", world["spec"], "--data", str(world["tree"]), "--layer", "relu2"]
    assert main([*argv, "--channels", "0-7", "--k", "3", "--workers", "0", "--quiet", "--out", str(top9)]) == 0
    document, arrays = _run(
        world, tmp_path / "fv", "--units", "1,4", "--steps", "8", "--exemplars", str(top9), data=False
    )
    assert document["exemplars"]["source"] == "top9" and document["exemplars"]["exact"] is False
    top_document, top_arrays = vizkit.load_result(top9)
    means, _ = _channel_means(world, "relu2")
    for row, unit in enumerate((1, 4)):
        chosen = top_arrays["image_index"][top_document["channels"].index(unit)]
        assert arrays["best_natural"][row] == pytest.approx(means[chosen, unit].max(), rel=1e-5)
    assert arrays["exemplar_thumbnails"].shape[:2] == (2, 3)
    assert arrays["exemplar_thumbnails"].max() > 0  # the stored patches, not blanks


def test_atlas_unit_pages_show_the_featvis_pictures_of_their_layer(world, tmp_path):
    atlas = tmp_path / "atlas"
    argv = ["run", "atlas", "--model", world["spec"], "--data", str(world["tree"]), "--layers", "relu1,relu2"]
    assert main([*argv, "--k", "2", "--patch-size", "8", "--workers", "0", "--quiet", "--out", str(atlas)]) == 0
    document, _ = _run(world, tmp_path / "fv", "--units", "2,5", "--steps", "6", "--exemplars", str(atlas), data=False)
    assert document["exemplars"]["source"] == "atlas"
    assert main(["report", str(tmp_path)]) == 0
    pages = tmp_path / "report_assets"
    page = next(pages.glob("*/atlas/relu2/5.html"))
    html = page.read_text()
    sources = re.findall(r'<img src="([^"]+)" alt="synthetic picture"', html)
    assert len(sources) == 1
    assert (page.parent / sources[0]).resolve() == (tmp_path / "fv" / "units" / "5.png").resolve()
    assert "synthetic picture" not in next(pages.glob("*/atlas/relu2/4.html")).read_text()  # not visualised
    assert "synthetic picture" not in next(pages.glob("*/atlas/relu1/2.html")).read_text()  # another layer
    index = (tmp_path / "index.html").read_text()
    assert "units/2.png" in index and "best natural" in index  # featvis's own table


def test_logit_and_direction_objectives(world, tmp_path):
    document, arrays = _run(
        world, tmp_path / "logit", "--objective", "logit", "--units", "0,2", "--steps", "12", layer=None
    )
    assert document["layer"] == "output" and document["layer_units"] == 3
    assert document["unit_labels"] == ["class 0", "class 2"]
    vectors = np.zeros((2, 8), dtype=np.float32)
    vectors[0, 1], vectors[1] = 1.0, 1.0
    np.save(tmp_path / "d.npy", vectors)
    document, arrays = _run(
        world, tmp_path / "dir", "--objective", "direction", "--directions", str(tmp_path / "d.npy"), "--steps", "12"
    )
    assert document["units"] == [0, 1] and arrays["directions"].shape == (2, 8)
    means, _ = _channel_means(world, "relu2")
    # direction 0 is channel 1 itself: its best natural value is that channel's best mean
    assert arrays["best_natural"][0] == pytest.approx(means[:, 1].max(), rel=1e-5)
    assert arrays["best_natural"][1] == pytest.approx((means.sum(axis=1) / np.sqrt(8)).max(), rel=1e-5)


def test_diversity_gives_k_different_pictures_per_unit(world, tmp_path):
    document, arrays = _run(world, tmp_path / "div", "--units", "1", "--diversity", "3", "--steps", "48", data=False)
    assert arrays["images"].shape == (1, 3, 32, 32, 3)
    assert len(document["per_unit"][0]["reached"]) == 3
    first, second = arrays["images"][0, 0].astype(int), arrays["images"][0, 1].astype(int)
    assert np.abs(first - second).mean() > 5
    assert np.asarray(Image.open(tmp_path / "div" / "units" / "1.png")).shape == (32, 3 * 32 + 2 * 2, 3)


def test_the_callers_model_is_left_as_it_was(world):
    model = world["build"]()
    model.train()
    model.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    result = vizkit.run("featvis", model, layer="relu2", units="0,1", steps=4, size=32)
    assert result.arrays["images"].shape == (2, 1, 32, 32, 3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert_no_hooks(model)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layer", "relu2", "--objective", "logit"], "drop --layer"),
        (["--objective", "channel"], "needs --layer"),
        (["--layer", "relu2", "--units", "8"], "--units 8 is outside the 8 units of relu2 (0-7)"),
        (["--layer", "relu2", "--units", "top:3"], "give --data or --exemplars"),
        (["--layer", "relu2", "--units", "1,1"], "names a unit twice"),
        (["--layer", "relu2", "--units", "a"], "use unit indices"),
        (["--layer", "nosuch"], "nosuch"),
        (["--layer", "relu2", "--objective", "direction"], "needs --directions"),
        (["--layer", "relu2", "--objective", "sideways"], "--objective"),
        (["--layer", "relu2", "--param", "wavelet"], "--param"),
        (["--layer", "relu2", "--transforms", "shear"], "shear"),
        (["--layer", "relu2", "--regularize", "l3"], "l3"),
        (["--layer", "relu2", "--color-from-data"], "give --data"),
        (["--layer", "relu2", "--exemplars", "."], "holds no readable result.json"),
        (["--objective", "logit", "--size", "40"], "try --size 32"),
    ],
)
def test_bad_options_are_one_line_usage_errors(world, capsys, extra, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["run", "featvis", "--model", world["spec"], "--steps", "2", "--size", "32", *extra]
    if "--resume" not in extra:
        argv += ["--out", str(tmp_path / "out")]
    code, _out, err = cli(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out" / "result.json").exists()


def test_exemplars_and_data_together_and_a_result_of_another_model(world, capsys, tmp_path, bundled_model):
    top9 = tmp_path / "top9"
    assert main(["run", "top9", "--model", "zfnet-compact", "--data", str(world["tree"]), "--layer", "conv2",
                 "--channels", "0-1", "--k", "2", "--workers", "0", "--quiet", "--out", str(top9)]) == 0  # fmt: skip
    base = ["run", "featvis", "--model", world["spec"], "--layer", "relu2", "--steps", "2", "--size", "32"]
    code, _, err = cli(capsys, *base, "--exemplars", top9, "--data", world["tree"], "--out", tmp_path / "a")
    assert code == 2 and "not both" in err
    code, _, err = cli(capsys, *base, "--exemplars", top9, "--out", tmp_path / "b")
    assert code == 2 and "made with model zfnet-compact" in err and len(err.strip().splitlines()) == 1


def test_no_decorrelate_and_colours_from_data(world, tmp_path):
    plain, _ = _run(world, tmp_path / "plain", "--units", "0", "--steps", "2", "--no-decorrelate", data=False)
    assert plain["decorrelate"] is None and plain["params"]["decorrelate"] is False
    from_data, _ = _run(world, tmp_path / "data", "--units", "0", "--steps", "2", "--color-from-data")
    assert from_data["decorrelate"] == "data"


@pytest.mark.slow
def test_squeezenet_pictures_beat_the_natural_images_they_are_judged_against(tmp_path):
    """The real model: four units of features.7 after 96 steps reach more than the best of 16
    real ImageNet images for the same unit, and each is among the 8 most active of the layer's
    256 units on its picture (at 512 steps, 61 of 64 units are in the top 5)."""
    needs_shared(SQUEEZENET_WEIGHTS, SAMPLES, LABELS)
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(str(p) for p in sorted(SAMPLES.glob("*.jpg"))[::64]))
    out = tmp_path / "sq"
    argv = ["run", "featvis", "--model", "torchvision:squeezenet1_0", "--weights", str(SQUEEZENET_WEIGHTS)]
    argv += ["--labels", str(LABELS), "--layer", "features.7", "--units", "0-3", "--steps", "96", "--size", "96"]
    assert main([*argv, "--data", str(listing), "--workers", "0", "--quiet", "--out", str(out)]) == 0
    document = json.loads((out / "result.json").read_text())
    assert document["exemplars"]["images"] == 16
    for record in document["per_unit"]:
        assert record["ratio"][0] > 1, record
        assert record["rank"][0] <= 8, record
