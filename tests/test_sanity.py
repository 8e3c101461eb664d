"""The sanity analysis (Adebayo et al. 2018): model-parameter randomization that never touches the
caller's model, the random-logit test, the four similarity metrics against hand examples, the
class projections against captum, a model-blind map method (a plugin) that must score 1, seeds,
--resume, --compare-model, the CLI and bad options."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from captum.attr import Deconvolution, GuidedBackprop, Saliency
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn

import vizkit
from helpers import SQUEEZENET_WEIGHTS, assert_no_hooks, needs_shared, sample
from vizkit.app.cli import main
from vizkit.engine import project_class
from vizkit_plugins.sanity import randomize, similarity
from vizkit_plugins.sanity.analysis import compare_all

pytestmark = pytest.mark.usefixtures("one_thread")


def small_net(seed: int = 0) -> nn.Sequential:
    """conv -> relu -> maxpool -> conv -> batch norm -> relu -> gap -> fc: every kind of layer a
    randomization re-draws, and a max-pool whose switches the projections must use."""
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 6, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("pool", nn.MaxPool2d(2))
    net.add_module("conv2", nn.Conv2d(6, 8, 3, padding=1))
    net.add_module("bn", nn.BatchNorm2d(8))
    net.add_module("relu2", nn.ReLU())
    net.add_module("gap", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 5))
    with torch.no_grad():  # batch statistics that are not the identity, so re-drawing them shows
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def net_file(folder: Path, seed: int = 0) -> Path:
    """A ``file.py`` whose ``net()`` builds :func:`small_net` with ``seed`` (a --model spec)."""
    path = folder / f"net{seed}.py"
    here = str(Path(__file__).parent)
    path.write_text(
        f"import sys\nsys.path.insert(0, {here!r})\nfrom test_sanity import small_net\n\n\ndef net():\n    return small_net({seed})\n"
    )
    return path


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


FAST = {"metrics": "none", "steps": 3, "window": 8, "stride": 8}


# ------------------------------------------------------------------------------- similarity
def test_similarity_metrics_against_hand_examples():
    ramp = np.arange(16.0).reshape(4, 4)
    assert similarity.spearman(ramp, ramp) == pytest.approx(1.0)
    assert similarity.spearman(ramp, -ramp) == pytest.approx(-1.0)
    assert similarity.spearman(ramp, ramp**3) == pytest.approx(1.0)  # ranks, not values
    assert np.isnan(similarity.spearman(ramp, np.zeros((4, 4))))  # a constant map ranks nothing
    # a map and its negative: the signed ranks reverse, the absolute ones agree
    signed = np.array([[1.0, -2.0], [3.0, -4.0]])
    found = similarity.similarities(signed, -signed)
    assert found["spearman"] == pytest.approx(-1.0)
    assert found["spearman_abs"] == pytest.approx(1.0)
    # ties share their average rank, as scipy's spearmanr
    a, b = np.array([1.0, 1.0, 2.0, 3.0]), np.array([4.0, 3.0, 2.0, 2.0])
    assert similarity.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    # SSIM of |map| scaled by its maximum: scale-free, skimage's value
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 32)), rng.random((32, 32))
    assert similarity.ssim(x, 5 * x) == pytest.approx(1.0)
    expected = structural_similarity(x / x.max(), y / y.max(), data_range=1.0, win_size=7)
    assert similarity.ssim(x, y) == pytest.approx(expected, abs=1e-9)
    # HOG: Pearson correlation of skimage's descriptors; a shifted edge correlates less than itself
    edge = np.zeros((32, 32))
    edge[:, 16:] = 1.0
    turned = edge.T.copy()
    assert similarity.hog_similarity(edge, edge) == pytest.approx(1.0)
    assert similarity.hog_similarity(edge, turned) < 0.5  # vertical vs horizontal edges
    features = hog(edge, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2))
    assert np.allclose(similarity.hog_features(edge), features)
    assert np.isnan(similarity.hog_similarity(edge, np.zeros((32, 32))))


# ---------------------------------------------------------------------------- randomization
def test_steps_are_the_layers_with_weights_top_first_norms_joining_their_conv(images):
    steps = randomize.steps_for(small_net(), images)
    assert [s.name for s in steps] == ["fc", "conv2+bn", "conv1"]
    assert steps[1].modules == ("conv2", "bn")
    named = randomize.steps_for(small_net(), images, ["conv1", "fc"])  # any order given: top first
    assert [s.name for s in named] == ["fc", "conv1"]


def test_deep_models_get_a_step_per_block():
    x = torch.randn(1, 3, 64, 64)
    resnet = randomize.steps_for(tvm.resnet18().eval(), x)
    assert [s.name for s in resnet][:3] == ["fc", "layer4.1", "layer4.0"]
    assert resnet[-1].name == "conv1+bn1" and len(resnet) == 10  # stem, 8 basic blocks, fc
    squeeze = randomize.steps_for(tvm.squeezenet1_0().eval(), x)
    assert [s.name for s in squeeze] == ["classifier.1", *[f"features.{i}" for i in (12, 10, 9, 8, 7, 5, 4, 3, 0)]]


def test_randomization_never_changes_the_callers_model(images):
    net = small_net()
    hooked = []
    net.conv2.register_forward_hook(lambda m, i, o: hooked.append(1))  # the user's own hook stays theirs
    before = {k: v.clone() for k, v in net.state_dict().items()}
    steps = randomize.steps_for(net, images)
    copy = randomize.randomized(net, steps, seed=0)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not net.training and not copy.training
    assert len(net.conv2._forward_hooks) == 1
    for name in ("conv1.weight", "conv2.weight", "fc.weight", "bn.running_mean"):
        assert not torch.equal(copy.state_dict()[name], before[name]), name
    assert torch.equal(copy.state_dict()["bn.running_var"], torch.ones(8))  # batch norm's own initialiser
    # a whole run: weights, mode and hooks as they were
    hooks = vizkit.engine.hook_counts(net)
    vizkit.run("sanity", net, images=images, method="deconvnet,gradient,saliency", **FAST)
    assert all(torch.equal(before[k], net.state_dict()[k]) for k in before)
    assert not net.training and vizkit.engine.hook_counts(net) == hooks
    assert torch._C._len_torch_function_stack() == 0


def test_cascading_and_independent_draw_the_same_weights_for_a_layer(images):
    net = small_net()
    steps = randomize.steps_for(net, images)
    cascading = randomize.randomized(net, steps, seed=5)  # every step
    alone = randomize.randomized(net, [steps[1]], seed=5)  # conv2 + bn only
    assert torch.equal(cascading.conv2.weight, alone.conv2.weight)
    assert torch.equal(alone.fc.weight, net.fc.weight) and torch.equal(alone.conv1.weight, net.conv1.weight)
    other = randomize.randomized(net, [steps[1]], seed=6)
    assert not torch.equal(other.conv2.weight, alone.conv2.weight)


# -------------------------------------------------------------------------- class projections
@pytest.mark.parametrize(("rule", "captum"), [("deconvnet", Deconvolution), ("guided", GuidedBackprop)])
def test_class_projections_equal_captum(rule, captum, images):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).eval()  # fmt: skip
    targets = torch.tensor([1, 4])
    with vizkit.instrument(net) as im:
        ours = project_class(im, images, targets, rule=rule)
    reference = captum(net).attribute(images.clone(), target=targets)
    assert torch.allclose(ours, reference, atol=1e-6)
    with vizkit.instrument(net) as im:
        gradient = project_class(im, images, targets, rule="gradient")
    assert torch.allclose(gradient.abs(), Saliency(net).attribute(images.clone(), target=targets), atol=1e-6)
    assert_no_hooks(net)


# ------------------------------------------------------------------------------- the analysis
def edges(request: vizkit.MapRequest) -> torch.Tensor:
    """A map method that ignores the model: the image's gradient magnitude."""
    grey = request.x.mean(1)
    rows = torch.zeros_like(grey)
    cols = torch.zeros_like(grey)
    rows[:, 1:] = grey[:, 1:] - grey[:, :-1]
    cols[:, :, 1:] = grey[:, :, 1:] - grey[:, :, :-1]
    return (rows**2 + cols**2).sqrt()


EDGE_PLUGIN = types.SimpleNamespace(
    register_map_methods=vizkit.hookimpl(
        lambda register: register(vizkit.MapMethod("edges", "image gradient magnitude", edges))
    )
)


def test_a_map_blind_to_the_model_scores_one_and_the_gradient_falls(images):
    app = vizkit.make_app(extra=[("edge-filter", EDGE_PLUGIN)])
    assert "edges" in app.map_methods
    result = vizkit.run(
        "sanity",
        small_net(),
        images=images,
        app=app,
        method="edges,gradient",
        randomize="cascading,independent",
        **FAST,
    )
    assert result["methods"] == ["edges", "gradient"]
    assert result["steps"] == ["fc", "conv2+bn", "conv1"]
    maps = result.arrays["maps"]
    assert maps.shape == (2, 2, 4, 32, 32)  # [image, method, step (trained first), H, W]
    assert result.arrays["maps_independent"].shape == (2, 2, 4, 32, 32)
    for mode in ("similarity", "similarity_independent"):
        for metric in similarity.METRICS:
            assert np.allclose(result[mode]["edges"][metric], 1.0), (mode, metric)
    assert np.allclose(result["random_logit"]["edges"]["spearman"], 1.0)
    falls = np.asarray(result["similarity"]["gradient"]["spearman_abs"])  # [image, step]
    assert np.allclose(falls[:, 0], 1.0)
    assert (falls[:, -1] < 0.9).all(), falls
    assert result["fully_randomized"]["gradient"]["spearman_abs"] == pytest.approx(falls[:, -1].tolist(), abs=1e-5)
    # the stored similarity is the maps' own
    again = compare_all(maps[:, :, 0], maps)
    assert np.allclose(
        np.asarray(result["similarity"]["gradient"]["spearman_abs"]), again["spearman_abs"][:, 1], atol=1e-5
    )
    assert set(result.figures) == {"sanity", "sanity_02", "sanity_curves"}


def test_seeds_reproduce(images):
    net = small_net()
    one = vizkit.run("sanity", net, images=images, method="gradient", seed=3, **FAST)
    two = vizkit.run("sanity", net, images=images, method="gradient", seed=3, **FAST)
    other = vizkit.run("sanity", net, images=images, method="gradient", seed=4, **FAST)
    assert np.array_equal(one.arrays["maps"], two.arrays["maps"])
    assert np.array_equal(one.arrays["maps"][:, :, 0], other.arrays["maps"][:, :, 0])  # the trained model
    assert not np.array_equal(one.arrays["maps"][:, :, 1:], other.arrays["maps"][:, :, 1:])


def test_faithfulness_of_the_trained_maps(images):
    result = vizkit.run(
        "sanity", small_net(), images=images, method="gradient,saliency", metrics="deletion,insertion",
        deletion_steps=4, deletion_patch=8,
    )  # fmt: skip
    assert set(result["deletion_auc"]) == {"gradient", "saliency"}
    assert all(len(v) == 2 and all(0 <= a <= 1 for a in v) for v in result["deletion_auc"].values())
    assert result.arrays["deletion"].shape == (2, 2, 5)  # [image, method, fraction]


def test_compare_model_and_resume(images, tmp_path):
    factory = net_file(tmp_path, seed=7)
    out = tmp_path / "run"
    common = dict(method="gradient", compare_model=f"{factory}:net", **FAST)
    first = vizkit.run("sanity", small_net(), images=images, out=out, **common)
    assert (out / ".sanity").is_dir()  # each finished model's maps, until the result is saved
    first.save(out)
    compared = np.asarray(first["similarity_compare_model"]["gradient"]["spearman_abs"])
    assert compared.shape == (2,) and (compared < 0.99).all()
    assert first.arrays["maps_compare_model"].shape == (2, 1, 32, 32)
    assert not (out / ".sanity").exists()  # the working files go once the result is saved
    weights = tmp_path / "seven.pt"  # the same second model as an architecture and a weights file
    torch.save(small_net(seed=7).state_dict(), weights)
    spec = f"{net_file(tmp_path)}:net"
    by_file = vizkit.run(
        "sanity",
        small_net(),
        images=images,
        method="gradient",
        compare_model=spec,
        compare_weights=str(weights),
        **FAST,
    )
    assert np.array_equal(by_file.arrays["maps_compare_model"], first.arrays["maps_compare_model"])

    # interrupted after the trained and random-logit maps: a resume computes only the rest
    import vizkit_plugins.sanity.analysis as analysis

    calls = {"n": 0}
    original = analysis.maps_of

    def failing(methods, request):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(methods, request)

    analysis.maps_of = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            vizkit.run("sanity", small_net(), images=images, out=tmp_path / "again", **common)
        calls["n"] = 100  # no more failures; count what the resume computes
        resumed = vizkit.run("sanity", small_net(), images=images, out=tmp_path / "again", resume=True, **common)
    finally:
        analysis.maps_of = original
    assert calls["n"] == 100 + 3 + 1  # 3 randomized models and the compared one; not the first two
    assert np.array_equal(resumed.arrays["maps"], first.arrays["maps"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "gradient,nonsense"], "unknown map method 'nonsense'"),
        (["--method", "gradient", "--layers", "conv9"], "'conv9' is not a module"),
        (["--method", "layergradcam", "--layer", "conv9"], "'conv9' is not a module"),
        (["--method", "gradient", "--layers", "relu1"], "no weights"),
        (["--method", "gradient", "--target", "1,"], "without a target"),
        (["--method", "gradient", "--randomize", "sideways"], "unknown randomization 'sideways'"),
        (["--method", "gradient", "--compare-weights", "w.pt"], "--compare-weights needs --compare-model"),
        (["--method", "gradient", "--metrics", "speed"], "unknown metric 'speed'"),
    ],
)
def test_bad_options_one_line_exit_2_nothing_written(extra, message, tmp_path, capsys):
    spec = net_file(tmp_path)
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "out"
    argv = ["run", "sanity", "--model", f"{spec}:net", "--image", str(image), "--image", str(image), "--out", str(out)]
    status = main([*argv, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


# ------------------------------------------------------------------------ the real model
@pytest.mark.slow
def test_squeezenet_guided_backprop_barely_depends_on_the_classifier_and_the_deconvnet_does():
    """Adebayo et al.'s finding on the real SqueezeNet and the Pomeranian: re-drawing the
    classifier leaves guided backprop's map much as it was; the deconvnet's does not survive it
    (its signal, rectified at every ReLU on the way down, dies out: an all-zero map)."""
    needs_shared(SQUEEZENET_WEIGHTS)
    model = vizkit.load_model("torchvision:squeezenet1_0", weights=SQUEEZENET_WEIGHTS)
    x = vizkit.load_images([sample("Pomeranian")], model=model)
    result = vizkit.run("sanity", model, images=x, method="deconvnet,guided", layers="classifier.1,features.12", **FAST)
    guided = result["similarity"]["guided"]["spearman_abs"][0][1]
    assert guided > 0.7, guided
    deconvnet = result["similarity"]["deconvnet"]["spearman_abs"][0][1]
    assert 1 in result["all_zero"]["deconvnet"][0] and deconvnet is None
    assert not np.any(result.arrays["maps"][0, 0, 1])
    assert_no_hooks(model)


def test_result_json_and_report_view(images, tmp_path):
    out = tmp_path / "run"
    vizkit.run(
        "sanity", small_net(), images=images, out=out, method="gradient,deconvnet", metrics="deletion", deletion_steps=2
    ).save(out)
    document = json.loads((out / "result.json").read_text())
    assert document["methods"] == ["gradient", "deconvnet"]
    assert set(document["similarity"]["gradient"]) == set(similarity.METRICS)
    from vizkit.framework.report_view import ReportPage
    from vizkit_plugins.sanity.view import report_view

    html, used = report_view(ReportPage(document=document, folder=out, root=tmp_path, slug="sanity"))
    assert "Can I trust this map?" in html and "Deletion AUC" in html
    assert {"fully_randomized", "random_logit", "deletion_auc"} <= used


def test_list_map_methods(capsys):
    assert main(["list", "map-methods", "--json"]) == 0
    listed = {row["name"]: row["plugin"] for row in json.loads(capsys.readouterr().out)}
    assert {"deconvnet", "guided", "gradient"} <= {n for n, p in listed.items() if p == "deconvnet"}
    assert {"saliency", "integratedgradients", "occlusion"} <= {n for n, p in listed.items() if p == "attribution"}
