"""The faithfulness metrics (plugins/attribution/faithfulness.py): deletion, insertion and ROAD
checked equal to Quantus 0.6 on the same settings (PixelFlipping, RegionPerturbation, ROAD and
its noisy linear imputation), insertion against a plain loop, a model whose ideal deletion curve
is known by hand, seeds that reproduce ROAD's noise, and the ``--metrics`` option of the
attribution run (its arrays, summary and one-line refusals)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import vizkit
from vizkit.app.cli import main
from vizkit_plugins.attribution import faithfulness as fm

TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # small forwards


@pytest.fixture(scope="module")
def quantus():
    """Quantus 0.6 (the test extra): only the tests compared with it need it."""
    return pytest.importorskip("quantus")


def small_model(channels: int, classes: int = 6) -> nn.Module:
    """A random convnet whose probabilities move with every pixel."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(72, classes),
    )
    with torch.no_grad():
        model[-1].weight *= 10.0  # confident enough for its probabilities to swing as pixels go
    return model.eval()


def data(channels: int, side: int, n: int = 3) -> tuple[torch.Tensor, np.ndarray]:
    """Images and maps with distinct |values| (so no order depends on how ties are broken)."""
    generator = np.random.default_rng(7)
    x = torch.as_tensor(generator.normal(size=(n, channels, side, side)), dtype=torch.float32)
    maps = generator.permutation(n * side * side).reshape(n, side, side).astype(np.float64) + 1.0
    return x, maps * generator.choice([-1.0, 1.0], size=maps.shape)  # signed: |map| orders them


def reversed_magnitude(maps: np.ndarray) -> np.ndarray:
    """A positive map ordering the pixels (and the squares of equal size) the other way round."""
    return np.abs(maps).max() + 1.0 - np.abs(maps)


def top1(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def quiet(metric, model, x, targets, maps):
    """Run a Quantus metric on the same inputs, its warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=targets.numpy(),
            a_batch=maps[:, None].astype(np.float32),
            device="cpu",
            softmax=True,
        )


# ---------------------------------------------------------------------------- equal to Quantus
def test_deletion_pixel_by_pixel_equals_quantus_pixel_flipping(quantus):
    """PixelFlipping flips C*H*W features by the map broadcast over channels: steps of a whole
    number of pixels (3 features each) flip the same pixels as a deletion step."""
    model, (x, maps) = small_model(3), data(3, 12)
    targets = top1(model, x)
    pixels_per_step = 16  # 144 pixels, 9 steps
    metric = quantus.PixelFlipping(
        features_in_step=3 * pixels_per_step, abs=True, normalise=False, perturb_baseline=0.0, disable_warnings=True
    )
    theirs = np.array(quiet(metric, model, x, targets, maps))  # [N, steps] after each step
    settings = fm.FaithfulnessSettings(steps=144 // pixels_per_step, patch=1, baseline=0.0, batch_size=7)
    ours = fm.deletion(model, x, maps, targets, settings)
    assert theirs.shape == (3, 9) and ours.shape == (3, 10)
    assert np.abs(ours[:, 1:] - theirs).max() < TOLERANCE
    assert np.ptp(ours, axis=1).min() > 0.01  # the curves move: the check compares something


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_deletion_by_squares_equals_quantus_region_perturbation(quantus, order):
    """RegionPerturbation removes one patch per step, by its summed attribution, and reports
    the drop from the unaltered probability."""
    model, (x, maps) = small_model(3), data(3, 16)
    targets = top1(model, x)
    patch, regions = 4, 16
    metric = quantus.RegionPerturbation(
        patch_size=patch,
        order=order,
        regions_evaluation=regions,
        abs=True,
        normalise=False,
        perturb_baseline=0.0,
        disable_warnings=True,
    )
    theirs = np.array(quiet(metric, model, x, targets, maps))  # [N, regions], P(clean) - P(after)
    settings = fm.FaithfulnessSettings(steps=regions, patch=patch, baseline=0.0, batch_size=5)
    # LeRF: the least relevant square first is the most relevant of the reversed |map|
    ours = fm.deletion(model, x, maps if order == "morf" else reversed_magnitude(maps), targets, settings)
    assert np.abs((ours[:, :1] - ours[:, 1:]) - theirs).max() < TOLERANCE
    assert np.abs(theirs).max() > 0.01


class Recorder(nn.Module):
    """The model, keeping every batch it is given: what Quantus perturbed, to compare."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []  # type: ignore[var-annotated]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("descending", [True, False])
def test_road_equals_quantus_road_with_its_noise(quantus, descending):
    """Quantus's ROAD (MoRF; LeRF by the reversed map) on one-channel images (its 0.6 release
    indexes the map broadcast over channels as pixels, which only works for one channel), with
    the same seed: the same imputed images, noise included (Quantus only reports top-1
    accuracy; the images it fed the model are recorded), so the same P(target) and accuracy."""
    model, (x, maps) = small_model(1), data(1, 12, n=4)
    targets = top1(model, x)
    percentages = [5.0, 20.0, 45.0, 70.0, 95.0]
    signed = np.abs(maps) if descending else reversed_magnitude(maps)  # Quantus refuses an all-negative map
    metric = quantus.ROAD(percentages=percentages, noise=0.3, abs=False, normalise=False, disable_warnings=True)
    orders = np.stack([fm.pixel_order(m, np.random.default_rng(0), absolute=False) for m in signed])
    for seed in (11, 12):  # another seed, other noise: each reproduced
        recorder = Recorder(model).eval()
        np.random.seed(seed)
        accuracy = quiet(metric, recorder, x, targets, signed)  # {percentage: accuracy over the images}
        fed = torch.stack(recorder.inputs[-len(percentages) :], dim=1)  # [N, P, 1, H, W]
        with torch.no_grad():
            theirs = model(fed.flatten(0, 1)).softmax(1).reshape(4, len(percentages), -1)
        theirs = theirs[torch.arange(4), :, targets].numpy()  # [N, P] P(target) of Quantus's images
        ours, correct = fm.road_curves(model, x, np.arange(4), orders, targets, percentages, 0.3, seed, batch_size=6)
        assert np.abs(ours - theirs).max() < TOLERANCE
        assert np.abs(correct.mean(axis=0) - np.array([accuracy[p] for p in percentages])).max() < TOLERANCE
        assert np.ptp(ours, axis=1).min() > 0.01  # the curves move: the check compares something
    noiseless, _ = fm.road_curves(model, x, np.arange(4), orders, targets, percentages, 0.0, 12, batch_size=6)
    assert np.abs(noiseless - ours).max() > 1e-3  # the noise matters: the match above is not by chance


def test_imputation_equals_quantus_noisy_linear_imputation_on_colour_images(quantus):
    """The batched block-diagonal system gives Quantus's per-image imputation, noise included,
    for 3-channel images, removed sets of every size and at the borders."""
    generator = np.random.default_rng(3)
    images = generator.normal(size=(4, 3, 10, 13)).astype(np.float32)
    removed = [generator.permutation(130)[:k] for k in (1, 30, 90, 129)]
    removed[1] = np.arange(30)  # two whole rows along the top border
    noise = [0.2 * generator.normal(size=(3, len(r))) for r in removed]
    ours = fm.impute(images, removed, noise)
    for b in range(4):
        np.random.seed(5)
        expected_noise = 0.2 * np.random.randn(3, len(removed[b]))
        np.random.seed(5)
        theirs = quantus.functions.perturb_func.noisy_linear_imputation(images[b], removed[b], noise=0.2)
        without_noise = theirs.reshape(3, -1).astype(np.float64)
        without_noise[:, removed[b]] -= expected_noise
        mine = ours[b].reshape(3, -1) - 0.0
        mine[:, removed[b]] -= noise[b]
        assert np.abs(mine - without_noise).max() < TOLERANCE
        kept = np.setdiff1d(np.arange(130), removed[b])
        assert np.array_equal(ours[b].reshape(3, -1)[:, kept], images[b].reshape(3, -1)[:, kept])
    assert np.abs(ours - images).max() > 0.1  # the imputed values differ from the originals


# ---------------------------------------------------------------------------- by hand
class SumOfPixels(nn.Module):
    """Two classes: class 0's logit is a weighted sum of the first channel's pixels, class 1's is
    0; P(class 0) is the sigmoid of that sum."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x[:, 0] * self.weights).flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_a_model_summing_pixels_has_the_deletion_and_insertion_curves_worked_out_by_hand():
    """On an all-ones image, with the weights themselves as the map, deleting the k heaviest
    pixels leaves sigmoid(sum of the others); inserting them gives sigmoid(sum of those k); a
    map in the reverse order deletes the light pixels first and keeps the probability high."""
    weights = torch.tensor([[4.0, 0.0, 1.0], [0.0, 2.0, 0.5]])  # 6 pixels, sum 7.5
    model, x = SumOfPixels(weights), torch.ones(1, 3, 2, 3)
    ideal = weights.flatten().sort(descending=True).values.double()  # 4, 2, 1, 0.5, 0, 0
    settings = fm.FaithfulnessSettings(steps=6, batch_size=4)
    target = torch.tensor([0])
    deleted = fm.deletion(model, x, weights[None].numpy(), target, settings)[0]
    expected = torch.sigmoid(7.5 - torch.cat([torch.zeros(1), ideal.cumsum(0)])).numpy()
    assert np.allclose(deleted, expected, atol=1e-6)  # sigmoid(7.5), sigmoid(3.5), sigmoid(1.5), ...
    inserted = fm.insertion(model, x, weights[None].numpy(), target, settings)[0]
    assert np.allclose(inserted, torch.sigmoid(torch.cat([torch.zeros(1), ideal.cumsum(0)])).numpy(), atol=1e-6)
    reverse = fm.deletion(model, x, (8.0 - weights)[None].numpy(), target, settings)[0]  # light pixels first
    auc = fm.area_under(settings.fractions, np.stack([deleted, reverse]))
    assert auc[0] < auc[1]  # the right map's deletion area is the smaller one


def test_insertion_equals_a_plain_loop_with_a_colour_baseline_and_squares():
    """Quantus has no insertion metric: each point checked against one image built by hand."""
    model, (x, maps) = small_model(3), data(3, 10, n=2)
    targets = top1(model, x)
    colour = torch.tensor([0.5, -1.0, 2.0])
    settings = fm.FaithfulnessSettings(steps=5, patch=3, baseline=colour, batch_size=4)
    ours = fm.insertion(model, x, maps, targets, settings)
    rng = np.random.default_rng(settings.seed)  # breaks ties between squares as insertion does, map after map
    for i in range(2):
        order = fm.pixel_order(maps[i], rng, patch=3)
        for f, count in enumerate(np.round(settings.fractions * 100).astype(int)):
            image = colour.reshape(3, 1).repeat(1, 100)
            image[:, order[:count]] = x[i].reshape(3, -1)[:, order[:count]]
            with torch.no_grad():
                p = model(image.reshape(1, 3, 10, 10)).softmax(1)[0, targets[i]]
            assert abs(float(p) - ours[i, f]) < 1e-5
    assert np.ptp(ours) > 0.01


# ---------------------------------------------------------------------------- seeds, API
def test_road_seeds_reproduce_the_noise_and_other_seeds_change_it():
    model, (x, maps) = small_model(3), data(3, 8, n=2)
    targets = top1(model, x)
    runs = [
        fm.road(model, x, maps, targets, fm.FaithfulnessSettings(percentages=(20.0, 60.0), noise=0.5, seed=seed))
        for seed in (1, 1, 2)
    ]
    assert np.array_equal(runs[0].morf, runs[1].morf) and np.array_equal(runs[0].lerf, runs[1].lerf)
    assert not np.array_equal(runs[0].morf, runs[2].morf)
    quiet_run = fm.road(model, x, maps, targets, fm.FaithfulnessSettings(percentages=(20.0, 60.0), noise=0.0))
    assert runs[0].morf.shape == (2, 2) and np.abs(quiet_run.morf - runs[0].morf).max() > 0


def test_evaluate_batches_several_maps_and_equals_one_map_at_a_time():
    model, (x, maps) = small_model(3), data(3, 8, n=2)
    targets = top1(model, x)
    stack = np.stack([maps, maps[:, ::-1].copy()])  # [K=2, N=2, H, W]
    settings = fm.FaithfulnessSettings(steps=4, patch=2, percentages=(30.0,), noise=0.0, batch_size=3)
    together = fm.evaluate(model, x, stack, targets, ["road", "insertion", "deletion"], settings)
    assert together["deletion"].shape == (2, 2, 5) and together["road_morf"].shape == (2, 2, 1)
    for k in range(2):
        assert np.allclose(together["deletion"][k], fm.deletion(model, x, stack[k], targets, settings), atol=1e-6)
        assert np.allclose(together["road_lerf"][k], fm.road(model, x, stack[k], targets, settings).lerf, atol=1e-6)
    with pytest.raises(vizkit.UsageError, match="maps must be"):
        fm.deletion(model, x, maps[:, :4], targets, settings)


def test_metric_names_and_percentages_are_parsed():
    assert fm.parse_metrics("road, Deletion,road") == ["deletion", "road"]
    assert fm.parse_metrics("all") == list(fm.METRICS)
    assert fm.parse_percentages("50,10") == (10.0, 50.0)
    for bad in ("nosuch", ","):
        with pytest.raises(vizkit.UsageError, match="--metrics"):
            fm.parse_metrics(bad)
    for bad in ("0,50", "100", "ten", ""):
        with pytest.raises(vizkit.UsageError, match="--road-percentages"):
            fm.parse_percentages(bad)


# ---------------------------------------------------------------------------- the attribution run
def test_cli_metrics_all_writes_curves_tables_and_leaves_deletion_as_it_was(tmp_path, capsys, photo_path):
    """--metrics all adds insertion and ROAD arrays and summary entries (per map and image) and
    the report's tables; deletion's keys and values are those of a run without it."""
    base = ["run", "attribution", "--model", "zfnet-compact", "--image", str(photo_path), "--quiet"]
    base += ["--method", "saliency", "--deletion-steps", "4", "--seed", "3"]
    out, plain = tmp_path / "all", tmp_path / "plain"
    assert main([*base, "--metrics", "all", "--road-percentages", "30,70", "--out", str(out)]) == 0
    assert main([*base, "--out", str(plain)]) == 0
    document, arrays = vizkit.load_result(out)
    before, before_arrays = vizkit.load_result(plain)
    assert document["metrics"] == ["deletion", "insertion", "road"] and before["metrics"] == ["deletion"]
    assert document["deletion_auc"] == before["deletion_auc"]
    assert np.array_equal(arrays["deletion_probability"], before_arrays["deletion_probability"])
    assert "insertion_auc" not in before and "road_morf" not in before_arrays
    assert set(document["insertion_auc"]) == {"saliency", "deconvnet", "random"}
    assert set(document["road_morf"]) == set(document["road_lerf"]) == {"saliency", "deconvnet"}
    assert document["road_percentages"] == [30.0, 70.0] and document["params"]["road_noise"] == 0.01
    assert arrays["insertion_probability"].shape == (3, 1, 5)
    assert arrays["road_morf_probability"].shape == arrays["road_lerf_correct"].shape == (2, 1, 2)
    # the summary's ROAD entry is the mean of the stored curve over the percentages
    assert document["road_lerf"]["saliency"][0] == pytest.approx(
        float(arrays["road_lerf_probability"][0, 0].mean()), rel=1e-4
    )
    assert (out / "attribution_faithfulness.png").stat().st_size > 20_000  # insertion and ROAD curves
    assert not (plain / "attribution_faithfulness.png").exists()
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "Area under the insertion curve" in page and "ROAD, most relevant first" in page
    capsys.readouterr()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--metrics", "deletion,shap"), ("--metrics", ","), ("--road-percentages", "0,50"), ("--road-noise", "-1")],
)
def test_cli_refuses_bad_metric_options_in_one_line(tmp_path, capsys, photo_path, option, value):
    out = tmp_path / "bad"
    argv = ["run", "attribution", "--model", "zfnet-compact", "--image", str(photo_path), "--quiet"]
    argv += ["--method", "saliency", "--metrics", "road", option, value, "--out", str(out)]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vizkit: error: ") and option in lines[0], lines
    assert not out.exists()


class ViewsItsFeatures(nn.Module):
    """A model that ``.view``s a convolution's output: a channels-last batch breaks it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return self.fc(features.view(features.shape[0], -1))


def test_a_model_that_cannot_take_a_channels_last_batch_gets_the_plain_layout():
    model, (x, maps) = ViewsItsFeatures().eval(), data(3, 8, n=2)
    with pytest.raises(RuntimeError):  # what the fallback is for
        model(x.contiguous(memory_format=torch.channels_last))
    targets = top1(model, x)
    settings = fm.FaithfulnessSettings(steps=4, patch=2, batch_size=3)
    curves = fm.deletion(model, x, maps, targets, settings)
    rng = np.random.default_rng(settings.seed)  # breaks ties between squares as deletion does, map after map
    for i in range(2):
        order = fm.pixel_order(maps[i], rng, patch=2)
        image = x[i].reshape(3, -1).clone()
        image[:, order[:32]] = 0.0  # half of the 64 pixels
        with torch.no_grad():
            p = model(image.reshape(1, 3, 8, 8)).softmax(1)[0, targets[i]]
        assert abs(float(p) - curves[i, 2]) < 1e-6
