"""Models in float64, float16 and bfloat16 (issue 26, item 6).

Images are loaded in float32 and cast to the model's dtype where they enter it (``vizkit.run``'s
inputs, ``ctx.images()`` / ``ctx.batches()``, and every forward of an instrumented model, so
occluded and transformed copies too); probabilities and sums are taken in float32 or wider. The
bundled zfnet-compact and a small torchvision model (resnet18 at 64 px) run deconvnet (both
methods), occlusion (exact), top9 on a few images, invariance and attribution (saliency) in each
dtype the CPU can run, close to their float32 results and with no hook left; so do the rest of the
model-zoo matrix's sample (tests/test_model_zoo.py) through deconvnet, occlusion and saliency. What cannot work is
one line: a model mixing dtypes, a dtype the device lacks a kernel for, a list of tensors of
several sizes, input values beyond a half-precision model's range.
"""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import test_model_zoo as zoo
import torch
import torchvision

import vizkit
from helpers import assert_no_hooks, cli, shipped_photos

pytestmark = pytest.mark.usefixtures("no_hooks_left")

RESNET_PRE = vizkit.Preprocess(resize=72, crop=64)

# per model: the layers each analysis looks at
LAYERS = {
    "resnet18": {"project": "layer2", "occlude": "layer4", "invariance": "conv1,fc"},
    "zfnet-compact": {"project": "conv3", "occlude": "conv5", "invariance": "conv1,fc6"},
}

# per dtype: the least cosine similarity of a map to its float32 one, the largest difference of a
# probability, and the least share of argmax-like integers (positions, labels) that agree
TOLERANCE = {
    torch.float64: (1 - 1e-6, 1e-5, 1.0),
    torch.float16: (0.99, 5e-3, 0.75),
    torch.bfloat16: (0.97, 2e-2, 0.75),
}


def _resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """The float32 originals; each test converts a copy."""
    return {"resnet18": _resnet18(), "zfnet-compact": vizkit.load_model("zfnet-compact")}


@pytest.fixture(scope="module")
def float32_results() -> dict[tuple[str, str], vizkit.Result]:
    """Each float32 run, once for all dtypes."""
    return {}


@pytest.fixture(scope="module")
def photo_list(tmp_path_factory) -> Path:
    listing = tmp_path_factory.mktemp("dtypes") / "photos.txt"
    listing.write_text("".join(f"{path}\n" for path in shipped_photos()))
    return listing


def _runs(name: str, photo_list: Path) -> dict[str, dict]:
    layers = LAYERS[name]
    photo = shipped_photos()[0]
    size, stride = (16, 16) if name == "resnet18" else (48, 24)
    return {
        "deconvnet-autograd": dict(
            analysis="deconvnet", images=[photo], layer=layers["project"], top=2, method="autograd"
        ),
        "deconvnet-explicit": dict(
            analysis="deconvnet", images=[photo], layer=layers["project"], top=2, method="explicit"
        ),
        "occlusion": dict(
            analysis="occlusion", images=[photo], layer=layers["occlude"], size=size, stride=stride, mode="exact"
        ),
        "top9": dict(
            analysis="top9",
            data=str(photo_list),
            layer=layers["project"],
            channels="0-3",
            k=2,
            workers=0,
            patch_size=16,
        ),
        "invariance": dict(analysis="invariance", images=[photo], layers=layers["invariance"], steps=3),
        "attribution": dict(analysis="attribution", images=[photo], method="saliency", deletion_steps=4),
    }


def _run(model: torch.nn.Module, name: str, options: dict) -> vizkit.Result:
    options = dict(options)
    analysis = options.pop("analysis")
    preprocess = RESNET_PRE if name == "resnet18" else None
    return vizkit.run(analysis, model, preprocess=preprocess, **options)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return 1.0 if norms == 0 and not a.any() and not b.any() else float(a @ b / max(norms, 1e-300))


def _assert_close(result: vizkit.Result, base: vizkit.Result, dtype: torch.dtype, what: str) -> None:
    cosine, prob, agree = TOLERANCE[dtype]
    assert set(result.arrays) == set(base.arrays), what
    for key, value in result.arrays.items():
        value, expected = np.asarray(value), np.asarray(base.arrays[key])
        assert value.shape == expected.shape, (what, key)
        if value.size == 0:
            continue
        if value.dtype.kind not in "fc":  # positions, labels, image indices
            share = float((value == expected).mean())
            assert share >= agree, f"{what} {key}: {share:.0%} agree with float32"
        elif "prob" in key or key.endswith("auc"):
            gap = float(np.nanmax(np.abs(value.astype(np.float64) - expected)))
            assert gap <= prob, f"{what} {key}: {gap:g} from float32"
        else:
            assert np.isfinite(value).all(), (what, key)
            similarity = _cosine(value, expected)
            assert similarity >= cosine, f"{what} {key}: cosine {similarity:.6f} to float32"


@pytest.mark.parametrize("name", ["resnet18", "zfnet-compact"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_each_analysis_runs_close_to_float32(models, float32_results, photo_list, name, dtype):
    original = models[name]
    runs = _runs(name, photo_list)
    model = copy.deepcopy(original).to(dtype)
    for what, options in runs.items():
        try:
            result = _run(model, name, options)
        except vizkit.UsageError as error:
            # zfnet-compact's local response norm has no half-precision kernel on the CPU
            assert name == "zfnet-compact" and dtype != torch.float64, error
            message = str(error)
            assert str(dtype).removeprefix("torch.") in message and "on cpu" in message, message
            assert "model.float()" in message and "--crop" not in message and "\n" not in message, message
            continue
        if (name, what) not in float32_results:
            float32_results[name, what] = _run(original, name, options)
        _assert_close(result, float32_results[name, what], dtype, f"{name} {dtype} {what}")
        assert all(p.dtype == dtype for p in model.parameters()), "the model's dtype was changed"
        assert_no_hooks(model)
    assert_no_hooks(original)


def test_instrumented_model_casts_inputs_to_its_dtype(models):
    model = copy.deepcopy(models["resnet18"]).double()
    x = torch.randn(2, 3, 64, 64)
    with vizkit.instrument(model) as im:
        output = im(x)
        assert output.dtype == torch.float64 and im.activation("layer1").dtype == torch.float64
        assert im.input is not None and im.input.dtype == torch.float32  # the caller's tensor, as given
        projection = im.project("layer2", 0)
        assert projection.shape == (2, 3, 64, 64) and torch.isfinite(projection).all()
        with torch.no_grad():
            reference = models["resnet18"](x)
        torch.testing.assert_close(output.float(), reference, rtol=1e-4, atol=1e-4)
    assert_no_hooks(model)


def test_float64_input_tensor_is_cast_to_the_model(models):
    model = models["resnet18"]
    x = vizkit.load_images(shipped_photos()[:2], RESNET_PRE)
    single = vizkit.run("occlusion", model, images=x, layer="layer4", size=16, stride=16, mode="exact")
    double = vizkit.run("occlusion", model, images=x.double(), layer="layer4", size=16, stride=16, mode="exact")
    for key, value in single.arrays.items():
        np.testing.assert_allclose(double.arrays[key], value, rtol=1e-5, atol=1e-6)


def test_list_of_tensors(models):
    model = models["resnet18"]
    x = vizkit.load_images(shipped_photos()[:2], RESNET_PRE)
    stacked = vizkit.run("deconvnet", model, images=x, layer="layer2", top=1)
    listed = vizkit.run("deconvnet", model, images=list(x), layer="layer2", top=1)
    np.testing.assert_array_equal(listed.arrays["projections"], stacked.arrays["projections"])

    other = vizkit.load_images(shipped_photos()[:1], vizkit.Preprocess(resize=80, crop=72))[0]
    with pytest.raises(vizkit.UsageError, match=r"one size, not \[3, 64, 64\], \[3, 72, 72\]") as error:
        vizkit.run("deconvnet", model, images=[x[0], other], layer="layer2")
    assert "\n" not in str(error.value)
    with pytest.raises(vizkit.UsageError, match="not a mix"):
        vizkit.run("deconvnet", model, images=[shipped_photos()[0], x[0]], layer="layer2")
    with pytest.raises(vizkit.UsageError, match="float images, not uint8"):
        vizkit.run("deconvnet", model, images=[(x[0] * 0).to(torch.uint8)], layer="layer2")


def test_refusals_are_one_line(models):
    mixed = copy.deepcopy(models["resnet18"])
    mixed.fc.double()
    with pytest.raises(vizkit.UsageError, match=r"mix several dtypes: float32 \(e.g. 'conv1.weight'\), float64") as e:
        vizkit.run("deconvnet", mixed, images=shipped_photos()[:1], preprocess=RESNET_PRE, layer="layer2")
    assert "\n" not in str(e.value)
    assert_no_hooks(mixed)

    half = copy.deepcopy(models["resnet18"]).half()
    huge = torch.full((1, 3, 64, 64), 1e6)
    with pytest.raises(vizkit.UsageError, match=r"up to 1e\+06, beyond the range of the model's float16"):
        vizkit.run("deconvnet", half, images=huge, layer="layer2")

    # a size the model cannot take still names --crop, in any dtype
    with pytest.raises(vizkit.UsageError, match="check --crop"):
        vizkit.run("deconvnet", models["zfnet-compact"].double(), images=torch.zeros(1, 3, 8, 8), layer="conv1")
    models["zfnet-compact"].float()


def test_cli_refuses_in_one_line(tmp_path, capsys):
    factory = tmp_path / "nets.py"
    factory.write_text(
        textwrap.dedent(
            """
            import torch
            import vizkit

            def zfnet_bfloat16():
                return vizkit.load_model("zfnet-compact").to(torch.bfloat16)

            def mixed():
                model = vizkit.load_model("zfnet-compact")
                model.fc8.double()
                return model
            """
        )
    )
    photo = shipped_photos()[0]
    for spec, expected in ((f"{factory}:zfnet_bfloat16", "bfloat16 on cpu"), (f"{factory}:mixed", "mix several")):
        code, out, err = cli(
            capsys, "run", "deconvnet", "--model", spec, "--image", photo, "--layer", "conv1", "--quiet"
        )
        assert code == 2, (out, err)
        assert "Traceback" not in err and expected in err and "--crop" not in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_the_other_analyses_run_in_bfloat16(models, tmp_path):
    """filters, correspondence, probes (its feature cache's fingerprint hashes bfloat16 weights)
    and the fast occlusion: no numpy conversion of a bfloat16 tensor left."""
    from PIL import Image

    for label, source in zip(("a", "b", "c"), shipped_photos()):
        (tmp_path / "tree" / label).mkdir(parents=True)
        for i in range(3):
            Image.open(source).convert("RGB").rotate(9 * i).save(tmp_path / "tree" / label / f"{i}.jpg")
    photo = shipped_photos()[0]
    marks = tmp_path / "marks.json"
    marks.write_text(json.dumps([{"image": str(photo), "eye": [250, 300], "nose": [260, 340]}] * 2))
    model = copy.deepcopy(models["resnet18"]).to(torch.bfloat16)
    runs = {
        "filters": dict(images=[photo]),
        "correspondence": dict(images=[photo], landmarks=str(marks), layers="layer2,fc", random=2, size=16),
        "probes": dict(
            data=tmp_path / "tree",
            layers="layer4,fc",
            train_per_class=2,
            test_per_class=1,
            folds=1,
            cv_folds=2,
            workers=0,
            classifiers="softmax",
            cache=str(tmp_path / "cache"),
        ),
        "occlusion": dict(images=[photo], layer="layer4", size=16, stride=16, mode="fast"),
    }
    for name, options in runs.items():
        result = vizkit.run(name, model, preprocess=RESNET_PRE, **options)
        assert result.arrays, name
        for key, value in result.arrays.items():
            assert np.asarray(value).dtype != object, (name, key)
    assert_no_hooks(model)


# the model-zoo matrix's fast sample, less resnet18 (above): SE gates and SiLU, LayerNorm and GELU
# over channels-last maps, timm's concatenations
ZOO_SAMPLE = sorted(spec for spec in zoo.SAMPLE if spec != "torchvision:resnet18")


@pytest.fixture(scope="module")
def zoo_float32() -> dict[tuple[str, str], vizkit.Result]:
    """Each sample model's float32 runs, once for all dtypes."""
    return {}


def _deepest_in_half_range(model: torch.nn.Module, x: torch.Tensor) -> tuple[str, torch.Tensor]:
    """Of ten spatial layers spread through the model, the deepest whose strongest map's float32
    deconvnet projection peaks at 1e-3 or more, and its activation. At random weights
    EfficientNet-B0's signal shrinks block by block (a projection gain of about 5e-13 from its
    last layer to the pixels, 1e-3 from features.2): float16 cannot hold such a projection at any
    scale (its range spans 6e-8 to 65504), the model's own limit, not vizkit's."""
    with vizkit.instrument(model) as im:
        with torch.no_grad():
            im(x)
        spatial = [name for name in im.layers if len(im.info(name).shape or ()) == 4]
        for name in reversed(spatial[:: max(1, len(spatial) // 10)]):
            activation = im.activation(name).clone()
            channel = int(activation[0].flatten(1).amax(1).argmax())
            if float(vizkit.project(im, x, name, [channel]).images.abs().amax()) >= 1e-3:
                return name, activation
    raise AssertionError("no layer projects to 1e-3")


def _underflows_float16(model: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether some spatial layer's float32 activations all lie below float16's smallest normal
    number (6.1e-5): random-weight EfficientNet-B0's last layers peak near 1e-13 at 64 px."""
    with vizkit.instrument(model) as im, torch.no_grad():
        im(x)
        tiny = torch.finfo(torch.float16).tiny
        return any(
            float(im.activation(name).abs().amax()) < tiny for name in im.layers if len(im.info(name).shape or ()) == 4
        )


@pytest.mark.parametrize("spec", ZOO_SAMPLE)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_the_model_zoo_sample_runs_in_each_dtype(zoo_float32, spec, dtype):
    """Both projection paths, exact incremental occlusion and saliency on the zoo's sample in
    each dtype, close to float32 (what a dtype cannot run is refused in one line)."""
    entry = next(entry for entry in zoo.ZOO if entry.spec == spec)
    prepared = zoo.prepared(entry)
    original, photo = prepared.model, zoo.images(1)
    layer, activation = _deepest_in_half_range(original, prepared.x)
    model = copy.deepcopy(original).to(dtype)
    # the float32 model's two strongest maps: near-ties among a random model's maps may rank
    # differently in half precision, and the comparison is of the same maps' projections
    channels = ",".join(map(str, activation[0].flatten(1).amax(1).argsort(descending=True)[:2].tolist()))
    runs = {
        f"deconvnet-{method}": dict(analysis="deconvnet", images=photo, layer=layer, channels=channels, method=method)
        for method in ("autograd", "explicit")
    }
    runs["occlusion"] = dict(analysis="occlusion", images=photo, layer=layer, size=24, stride=20, mode="exact")
    runs["attribution"] = dict(analysis="attribution", images=photo, method="saliency", deletion_steps=4)
    for what, options in runs.items():
        options = dict(options)
        analysis = options.pop("analysis")
        if (spec, what) not in zoo_float32:
            zoo_float32[spec, what] = vizkit.run(
                analysis, original, preprocess=zoo.preprocess(entry), app=zoo.app(), **options
            )
        if what == "attribution":  # the float32 model's class: a random model's top two logits may tie in half
            options["target"] = str(zoo_float32[spec, what]["target"][0])  # precision (DenseNet-121: 1.3504, 1.3461)
        try:
            result = vizkit.run(analysis, model, preprocess=zoo.preprocess(entry), app=zoo.app(), **options)
        except vizkit.UsageError as error:  # only a missing half-precision kernel may stop a run
            message = str(error)
            assert dtype != torch.float64 and "on cpu" in message and "\n" not in message, message
            continue
        if what == "attribution" and dtype == torch.float16 and _underflows_float16(original, prepared.x):
            # the float16 forward itself computes zeros at the last layers: the logits, and so
            # their gradients, no longer depend on the image in this dtype (a rank correlation
            # with an all-zero map is undefined: NaN)
            assert np.isfinite(result.arrays["saliency"]).all()
        else:
            _assert_close(result, zoo_float32[spec, what], dtype, f"{spec} {dtype} {what}")
        assert all(p.dtype == dtype for p in model.parameters() if p.is_floating_point())
        assert_no_hooks(model)
    assert_no_hooks(original)


def _small_gain_net() -> torch.nn.Module:
    """Two conv + batch norm + ReLU blocks whose convolutions scale by 1e-3 and whose batch norms
    scale back up: the forward stays well inside float16's range, but the deconvnet, which passes
    batch norm through, projects to about 1e-9, below float16's smallest number (6e-8): all zeros
    unless the seed is scaled up."""
    torch.manual_seed(0)
    blocks: list[torch.nn.Module] = []
    for c_in in (3, 8):
        conv = torch.nn.Conv2d(c_in, 8, 3, padding=1)
        norm = torch.nn.BatchNorm2d(8)
        with torch.no_grad():
            conv.weight.mul_(1e-3)
            conv.bias.zero_()
            norm.running_var.fill_(1e-6)  # divides by about 1e-3
        blocks += [conv, norm, torch.nn.ReLU()]
    return torch.nn.Sequential(*blocks).eval()


@pytest.mark.parametrize("method", ["autograd", "explicit"])
def test_float16_projections_do_not_underflow(method):
    model = _small_gain_net()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    half = copy.deepcopy(model).half()
    with vizkit.instrument(model) as im:
        im(x)
        channel = int(im.activation("5")[0].flatten(1).amax(1).argmax())
        reference = vizkit.project(im, x, "5", [channel], method=method).images
    with vizkit.instrument(half) as im:
        im(x)
        projection = vizkit.project(im, x, "5", [channel], method=method).images
    assert 0 < float(reference.abs().amax()) < 1e-9, "the example lost its point: the gain is not below float16's range"
    assert torch.isfinite(projection).all()
    assert _cosine(projection.numpy(), reference.numpy()) > 0.99
    assert float(projection.abs().amax()) == pytest.approx(float(reference.abs().amax()), rel=0.05)
    assert_no_hooks(half)
