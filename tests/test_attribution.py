"""The attribution analysis: every captum method on the routed copy of the model, cross-checked
against vizkit's deconvnet / guided projections and the occlusion plugin's probability map; models
captum trips on (functional, in-place and reused ReLUs), the figures, the CLI and bad options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

import vizkit
from helpers import (
    LABELS,
    SQUEEZENET_WEIGHTS,
    assert_no_hooks,
    occlusion_as_captum,
    relative_error,
    sample,
    settings_probe,
    tiny_net,
)
from vizkit.app.cli import main
from vizkit.engine import CanonicalModel
from vizkit_plugins.attribution.methods import METHODS, parse_methods
from vizkit_plugins.attribution.metrics import (
    average_ranks,
    best_column,
    deletion_curve,
    deletion_order,
    spearman_matrix,
)
from vizkit_plugins.occlusion.grid import OcclusionGrid

FAST = {"steps": 4, "window": 32, "stride": 32, "samples": 2, "deletion_steps": 2}
EVERY_METHOD = [*METHODS, "nt-saliency", "nt-guidedgradcam"]


pytestmark = pytest.mark.usefixtures("one_thread")  # many small forwards and backwards


@pytest.fixture(scope="module")
def random_squeezenet() -> nn.Module:
    torch.manual_seed(0)
    return tvm.squeezenet1_0().eval()


@pytest.fixture(scope="module")
def small_images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


class TrickyReLUs(nn.Module):
    """What captum's ReLU hooks trip on: one in-place nn.ReLU used twice, and functional ReLUs
    (in place and not), with max-pooling in between and no normalisation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.relu(self.conv2(x))
        x = F.relu(self.conv3(x), inplace=True)
        return self.fc(torch.relu(F.adaptive_avg_pool2d(x, 1).flatten(1) - 0.01))


# ----------------------------------------------------------------------------- every method
@pytest.mark.parametrize("name", EVERY_METHOD)
def test_every_method_runs_and_leaves_the_model_alone(name, random_squeezenet, small_images):
    app = vizkit.make_app()
    seen = settings_probe(app, ["attribution"])
    state = {k: v.clone() for k, v in random_squeezenet.state_dict().items()}
    random_squeezenet.train()
    result = vizkit.run("attribution", random_squeezenet, images=small_images, app=app, method=name, **FAST)
    assert random_squeezenet.training  # the caller's mode is back
    random_squeezenet.eval()
    assert_no_hooks(random_squeezenet)
    assert all(torch.equal(v, state[k]) for k, v in random_squeezenet.state_dict().items())
    assert seen == [(vizkit.engine.Settings(), vizkit.engine.Settings())]
    maps = result.arrays[name]
    channels = 1 if name.endswith("layergradcam") else 3
    assert maps.shape == (2, channels, 64, 64) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and np.abs(maps).max() > 0
    assert result["columns"] == [name, "deconvnet"] and result["layer"] == "features.12"
    assert set(result["seconds_per_method"]) == {name}
    assert result.arrays["maps"].shape == (2, 2, 64, 64)
    assert result.arrays["deletion_probability"].shape == (3, 2, 3)  # name, deconvnet, random
    assert set(result.figures) == {"attribution", "attribution_comparison"}


@pytest.mark.parametrize("model_name", ["tricky-relus", "resnet18"])
def test_models_captum_trips_on_run_every_method(model_name):
    torch.manual_seed(0)
    model = TrickyReLUs().eval() if model_name == "tricky-relus" else tvm.resnet18().eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    result = vizkit.run("attribution", model, images=x, method=",".join(EVERY_METHOD), **FAST)
    assert_no_hooks(model)
    for name in EVERY_METHOD:
        assert np.isfinite(result.arrays[name]).all() and np.abs(result.arrays[name]).max() > 0, name
    # the default layer is a module that runs once: not the reused ReLU
    assert result["layer"] == ("conv3" if model_name == "tricky-relus" else "layer4.1")
    assert result["relu_calls_routed"] == (4 if model_name == "tricky-relus" else 17)


def test_routed_copy_fixes_functional_relus_where_plain_captum_is_wrong():
    """vizkit's deconvnet / guided rules from the logit equal captum's Deconvolution /
    GuidedBackprop on the routed copy; captum on the model itself misses the functional ReLUs."""
    from captum.attr import Deconvolution, GuidedBackprop

    torch.manual_seed(3)
    model = TrickyReLUs().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    target = 2
    result = vizkit.run(
        "attribution", model, images=x, method="deconvolution,guidedbackprop", target=str(target), **FAST
    )
    with vizkit.instrument(model) as im:
        im(x)
        ours = {
            rule: vizkit.project(im, x, "fc", [target], rule=rule) for rule in ("deconvnet", "guided")
        }  # fc's output is the logits
    for name, rule in (("deconvolution", "deconvnet"), ("guidedbackprop", "guided")):
        expected = ours[rule].images[:, 0] / ours[rule].values[:, 0].reshape(-1, 1, 1, 1)
        assert relative_error(result.arrays[name], expected) < 1e-5, name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = Deconvolution(model).attribute(x.clone(), target=target)
        plain_guided = GuidedBackprop(model).attribute(x.clone(), target=target)
    assert relative_error(plain, result.arrays["deconvolution"]) > 0.1
    assert relative_error(plain_guided, result.arrays["guidedbackprop"]) > 0.1
    assert_no_hooks(model)


def test_canonical_copy_shares_weights_and_equals_the_model(small_images):
    torch.manual_seed(0)
    model = tvm.resnet18().eval()
    with vizkit.instrument(model) as im:
        im(small_images)
        canonical = CanonicalModel.build(model, small_images)
        assert vizkit.engine.hook_counts(canonical.model)["_forward_hooks"] == 0  # vizkit's hooks stay on the model
        with torch.no_grad():
            assert torch.allclose(canonical(small_images), model(small_images), atol=1e-5)
    assert canonical.model.fc.weight is model.fc.weight
    assert not any(isinstance(m, nn.ReLU) for m in canonical.model.modules())  # replaced by routed calls
    assert len(canonical.relus) == 17 and len({id(m) for m in canonical.relus}) == 17
    assert all(not relu.inplace for relu in canonical.relus)
    assert_no_hooks(model)


# ---------------------------------------------------------------------------- cross-checks
def test_plugin_deconvolution_and_guided_equal_vizkit_projections(random_squeezenet, small_images):
    target = 7
    result = vizkit.run(
        "attribution",
        random_squeezenet,
        images=small_images,
        method="deconvolution,guidedbackprop",
        target=str(target),
        **FAST,
    )
    with vizkit.instrument(random_squeezenet) as im:
        im(small_images)
        for name, rule in (("deconvolution", "deconvnet"), ("guidedbackprop", "guided")):
            # the classifier's [N, 1000, 1, 1] output is the logits: one unit per class
            ours = vizkit.project(im, small_images, "classifier", [target], rule=rule)
            expected = ours.images[:, 0] / ours.values[:, 0].reshape(-1, 1, 1, 1)
            assert relative_error(result.arrays[name], expected) < 1e-5, name
        # the deconvnet column is vizkit's projection of the unit it names
        units = result["deconvnet_unit"]
        for i, unit in enumerate(units):
            column = vizkit.project(
                im, small_images[i : i + 1], "features.12", [unit["channel"]], position=tuple(unit["position"])
            )
            assert relative_error(result.arrays["deconvnet"][i], column.images[0, 0]) < 1e-5
            assert unit["activation"] == pytest.approx(float(column.values[0, 0]), rel=1e-5)
    assert_no_hooks(random_squeezenet)


def test_plugin_occlusion_equals_the_occlusion_plugins_probability_map(random_squeezenet, small_images):
    """captum's attribution of a pixel is the mean, over the windows covering it, of
    p(unoccluded) - p(occluded); rebuild it from the occlusion plugin's exact map."""
    size, stride, target = 16, 8, 3
    x = small_images[:1]
    result = vizkit.run(
        "attribution",
        random_squeezenet,
        images=x,
        method="occlusion",
        target=str(target),
        score="probability",
        window=size,
        stride=stride,
        baseline="mean",
        deletion_steps=1,
    )
    ours = occlusion_as_captum(random_squeezenet, x, "features.12", target, OcclusionGrid(64, 64, size, stride))
    theirs = result.arrays["occlusion"][0]
    assert np.abs(theirs[0] - ours).max() <= 1e-6 + 1e-4 * np.abs(ours).max()
    assert np.array_equal(theirs[0], theirs[2])  # the window covers every channel
    assert_no_hooks(random_squeezenet)


# ---------------------------------------------------------------------------- comparisons
def test_rank_correlation_and_deletion_helpers(random_squeezenet, small_images):
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8))
    matrix = spearman_matrix(np.stack([a, 2 * a**3, -a, rng.normal(size=(8, 8)), np.zeros((8, 8))]))
    assert matrix[0, 1] == pytest.approx(1.0) and matrix[0, 2] == pytest.approx(1.0)  # ranks of |map|
    assert abs(matrix[0, 3]) < 0.5 and np.isnan(matrix[0, 4])
    # squares by mean |map|, ties in random order, each square row by row; None: all in random order
    attribution = np.zeros((4, 5))
    attribution[2:, 2:4] = -3.0
    attribution[0, 4] = 1.0
    order = deletion_order(attribution, rng, patch=2)
    assert order[:4].tolist() == [12, 13, 17, 18]  # rows 2-3, columns 2-3
    assert order[4:6].tolist() == [4, 9]  # the border square (one column wide)
    assert sorted(order.tolist()) == list(range(20))
    random_order = deletion_order(None, rng, patch=2, shape=(4, 5))
    assert sorted(random_order.tolist()) == list(range(20))
    image = small_images[0]
    fractions = np.array([0.0, 0.5, 1.0])
    with vizkit.instrument(random_squeezenet) as im:
        curve = deletion_curve(im, image, rng.permutation(64 * 64), 5, fractions, torch.zeros(3), batch_size=2)
        with torch.no_grad():
            p = random_squeezenet(torch.stack([image, torch.zeros_like(image)])).softmax(1)[:, 5]
    assert curve[0] == pytest.approx(float(p[0]), rel=1e-4) and curve[-1] == pytest.approx(float(p[1]), rel=1e-4)


def test_noise_tunnel_uses_the_run_seed_and_leaves_the_global_generator_alone(random_squeezenet, small_images):
    state = torch.get_rng_state()
    runs = [
        vizkit.run("attribution", random_squeezenet, images=small_images, method="nt-saliency", seed=seed, **FAST)
        for seed in (5, 5, 6)
    ]
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(runs[0].arrays["nt-saliency"], runs[1].arrays["nt-saliency"])
    assert not np.array_equal(runs[0].arrays["nt-saliency"], runs[2].arrays["nt-saliency"])


# ---------------------------------------------------------------------------- options
def test_method_names_and_bad_options(random_squeezenet, small_images):
    assert parse_methods("all") == list(METHODS)
    assert parse_methods("Saliency, nt-occlusion,saliency") == ["saliency", "nt-occlusion"]
    for bad, match in (
        ({"method": "gradcam"}, "unknown attribution method 'gradcam' in --method; use saliency"),
        ({"method": "nt-nosuch"}, "unknown attribution method"),
        ({"method": ","}, "at least one method"),
        ({"steps": 0}, "--steps must be at least 1"),
        ({"samples": 0}, "--samples must be at least 1"),
        ({"window": 65, "method": "nt-occlusion"}, "--window must be between 1 and 64"),
        ({"stride": 0}, "--stride must be at least 1"),
        ({"baseline": "grey"}, "--baseline expects"),
        ({"sign": "both"}, "--sign must be one of"),
        ({"overlay": "alpha_scaling", "sign": "all"}, "alpha_scaling"),
        ({"target": "unicorn"}, "no --labels"),
        ({"target": "1,2,3"}, "one per image \\(2\\), not 3"),
        ({"layer": "features.99"}, "unknown layer"),
    ):
        with pytest.raises(vizkit.UsageError, match=match):
            vizkit.run("attribution", random_squeezenet, images=small_images, **{"method": "saliency", **bad})
    assert_no_hooks(random_squeezenet)


def test_a_model_relying_on_an_in_place_relus_side_effect_is_refused():
    class SideEffect(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = self.conv(x)
            y.relu_()  # the result is not used: only the in-place change counts
            return self.fc(y.mean((2, 3)))

    model = SideEffect().eval()
    with pytest.raises(vizkit.VizkitError, match="in-place ReLU whose result it does not use"):
        vizkit.run("attribution", model, images=torch.randn(1, 3, 16, 16), method="saliency", layer="conv")
    assert_no_hooks(model)


def test_layers_captum_cannot_hook_are_refused():
    model = TrickyReLUs().eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(vizkit.UsageError, match="'relu' runs 2 times in one forward"):
        vizkit.run("attribution", model, images=x, method="layergradcam", layer="relu")
    with pytest.raises(vizkit.UsageError, match="not a module of the model"):
        vizkit.run("attribution", model, images=x, method="saliency", layer="relu#1")
    assert_no_hooks(model)


# ---------------------------------------------------------------------------- real model, CLI
@pytest.mark.slow
def test_real_squeezenet_pomeranian(squeezenet):
    pomeranian = sample("Pomeranian")
    result = vizkit.run(
        "attribution",
        squeezenet,
        images=[pomeranian],
        method="saliency,deconvolution,layergradcam,occlusion",
        target="Pomeranian",
        window=56,
        stride=28,
        deletion_steps=10,
    )
    assert_no_hooks(squeezenet)
    assert result["target"] == [259] and result["target_name"] == ["Pomeranian"]
    assert result["probability"][0] > 0.1 and result["layer"] == "features.12"
    x = vizkit.load_images([pomeranian], vizkit.Preprocess())
    with vizkit.instrument(squeezenet) as im:
        im(x)
        ours = vizkit.project(im, x, "classifier", [259])
    assert relative_error(result.arrays["deconvolution"], ours.images[:, 0] / ours.values[0, 0]) < 1e-5
    auc = result["deletion_auc"]
    # the model depends on what Grad-CAM and occlusion point at: removing it first costs more than random order
    assert auc["layergradcam"][0] < auc["random"][0] and auc["occlusion"][0] < auc["random"][0]
    assert result["rank_correlation"][pomeranian.name]["layergradcam"]["occlusion"] > 0.3


def test_cli_writes_the_result_and_refuses_bad_options(tmp_path, capsys, photo_path):
    out = tmp_path / "attr"
    base = ["run", "attribution", "--model", "zfnet-compact", "--image", str(photo_path), "--quiet"]
    argv = [*base, "--method", "saliency,nt-layergradcam,occlusion", "--window", "48", "--stride", "48"]
    assert main([*argv, "--samples", "2", "--deletion-steps", "4", "--out", str(out)]) == 0
    document, arrays = vizkit.load_result(out)
    assert document["analysis"] == "attribution" and document["layer"] == "conv5"
    assert document["columns"] == ["saliency", "nt-layergradcam", "occlusion", "deconvnet"]
    assert set(document["seconds_per_method"]) == {"saliency", "nt-layergradcam", "occlusion"}
    assert document["captum"]["nt-layergradcam"] == "NoiseTunnel(LayerGradCam)"
    assert len(document["deletion_auc"]["random"]) == 1 and len(document["deletion_fractions"]) == 5
    assert arrays["saliency"].shape == (1, 3, 144, 144) and arrays["nt-layergradcam"].shape == (1, 1, 144, 144)
    assert arrays["rank_correlation"].shape == (1, 4, 4)
    for figure in ("attribution.png", "attribution_comparison.png"):
        assert (out / figure).stat().st_size > 20_000
    capsys.readouterr()
    for bad in (["--method", "gradcam"], ["--steps", "0"], ["--baseline", "grey"], ["--score", "loss"]):
        bad_out = tmp_path / f"bad{bad[1]}"
        assert main([*base, *bad, "--out", str(bad_out)]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("vizkit: error: ") and bad[0] in lines[0], lines
        assert not bad_out.exists()


def test_real_squeezenet_cli_both_images(tmp_path):
    """The CLI on the two sample photographs (one method each kind, small settings)."""
    out = tmp_path / "real"
    argv = [
        "run",
        "attribution",
        "--model",
        "torchvision:squeezenet1_0",
        "--weights",
        str(SQUEEZENET_WEIGHTS),
        "--labels",
        str(LABELS),
        "--image",
        str(sample("Pomeranian")),
        str(sample("car_wheel")),
        "--method",
        "guidedbackprop,layergradcam",
        "--target",
        "Pomeranian,car wheel",
        "--deletion-steps",
        "4",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    document, arrays = vizkit.load_result(out)
    assert document["target_name"] == ["Pomeranian", "car wheel"]
    assert arrays["maps"].shape == (3, 2, 224, 224)


# ------------------------------------------------------------------- degenerate inputs and results
def test_images_with_the_same_file_name_keep_their_own_entries(tmp_path, bundled_model):
    """Two photos both called x.jpg (other folders): the per-image dicts were keyed by the bare
    file name, so the second image's correlations silently replaced the first's."""
    import shutil

    from helpers import shipped_photos

    paths = []
    for folder, photo in zip(("a", "b"), shipped_photos()[:2]):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "x.jpg")
        shutil.copy(photo, paths[-1])
    result = vizkit.run("attribution", bundled_model, images=paths, method="saliency", **FAST)
    summary = result.summary
    assert summary["images"] == ["x.jpg [1]", "x.jpg [2]"]
    assert list(summary["rank_correlation"]) == summary["images"] and list(summary["all_zero"]) == summary["images"]
    for i, image in enumerate(summary["images"]):
        value = summary["rank_correlation"][image]["saliency"]["deconvnet"]
        assert value == pytest.approx(float(result.arrays["rank_correlation"][i, 0, 1]), abs=1e-6)


def test_a_tiny_probability_is_not_rounded_to_zero():
    """A target the model all but excludes (p ~ 1e-13): result.json said 0.0 (rounded to 5 decimals)."""
    model = tiny_net(kernel=3, stride=1, conv2_padding=None, named=False).eval()  # conv relu gap flat fc
    with torch.no_grad():
        model[4].weight.zero_()
        model[4].bias.copy_(torch.tensor([30.0, 0.0, 0.0]))
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = vizkit.run("attribution", model, images=x, method="saliency", target="1", layer="0", **FAST)
    expected = float(torch.tensor([30.0, 0.0, 0.0]).softmax(0)[1])
    assert result.summary["probability"][0] == pytest.approx(expected, rel=1e-4) and expected < 1e-12
    assert all(v > 0 for values in result.summary["deletion_auc"].values() for v in values)


def test_no_best_map_from_tied_curves_or_a_uniform_map(random_squeezenet, small_images):
    """An occlusion window as large as the image gives a uniform map (deleted in random order) and a
    single deletion step gives every map the same curve: deletion_best named the alphabetically
    first column, and the figure drew the uniform map fully saturated."""
    result = vizkit.run(
        "attribution",
        random_squeezenet,
        images=small_images[:1],
        **{**FAST, "method": "saliency,occlusion", "window": 64, "stride": 64, "deletion_steps": 1},
    )
    summary = result.summary
    assert summary["constant"] == {"image 0": ["occlusion"]} and summary["all_zero"] == {"image 0": []}
    assert len({values[0] for values in summary["deletion_auc"].values()}) == 1  # every curve the same
    assert summary["deletion_best"] == [None]
    texts = [t.get_text() for ax in result.figures["attribution"].axes for t in ax.texts]
    assert any(text.startswith("constant") for text in texts)
    # a uniform map never wins; a clear lowest area does
    flat, varied = np.ones((1, 4, 4)), np.arange(16.0).reshape(1, 4, 4)
    maps = np.concatenate([flat, varied])
    assert best_column(["uniform", "varied"], np.array([0.1, 0.2]), maps) == "varied"
    assert best_column(["a", "b"], np.array([0.2, 0.2]), np.concatenate([varied, varied])) is None
    assert best_column(["a", "b"], np.array([0.3, 0.2]), np.concatenate([varied, varied])) == "b"


@pytest.mark.parametrize("analysis", ["occlusion", "deconvnet"])
def test_other_analyses_name_same_named_images_apart_too(analysis, tmp_path, bundled_model):
    """The unique names come from the core (RunContext.image_names), for every analysis."""
    import shutil

    from helpers import shipped_photos

    paths = []
    for folder, photo in zip(("a", "b"), shipped_photos()[:2]):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "x.jpg")
        shutil.copy(photo, paths[-1])
    options = {"occlusion": {"size": 72, "stride": 36}, "deconvnet": {"layer": "conv2", "top": 2}}[analysis]
    result = vizkit.run(analysis, bundled_model, images=paths, **options)
    assert result.summary["images"] == ["x.jpg [1]", "x.jpg [2]"]
