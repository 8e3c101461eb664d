"""What tripped a new user: the README's Python example on the bundled model (a model carries its
preprocessing), ``to_image`` for imshow, ``vizkit layers`` at the model's own size, the train
defaults, ``--model`` help naming the registered models, the default ``--out`` of a second run,
and the README's plugin snippet for a ``--data`` analysis."""

from __future__ import annotations

import json
import types

import click
import numpy as np
import pytest
import torch
from PIL import Image

import helpers
import vizkit
import vizkit.app.cli
from helpers import REPO, assert_no_hooks
from vizkit.app.cli import build_cli
from vizkit.app.commands.run import default_out

WRAP_SPEC = f"{REPO / 'examples' / 'wrap_your_model.py'}:build"


def cli(capsys, *args) -> tuple[int, str, str]:
    """helpers.cli, and never a traceback on either stream."""
    code, out, err = helpers.cli(capsys, *args)
    assert "Traceback" not in out + err
    return code, out, err


# ---------------------------------------------------------------------- 1. a model carries its preprocessing
def test_readme_python_example_on_the_bundled_model(bundled_model, photo_path):
    model = bundled_model
    assert vizkit.data.preprocess_for(model) == vizkit.Preprocess(resize=160, crop=144)
    x = vizkit.load_images([photo_path], model)  # the model's own preprocessing
    assert x.shape == (1, 3, 144, 144)
    assert torch.equal(x, vizkit.load_images([photo_path], model=model))
    assert torch.equal(x, vizkit.load_images([photo_path], vizkit.data.preprocess_for(model)))
    assert vizkit.load_images([photo_path]).shape == (1, 3, 224, 224)  # no model: the ImageNet default
    assert vizkit.load_images(photo_path, model).shape == (1, 3, 144, 144)  # one path, not its characters

    with vizkit.instrument(model) as im:
        logits = im(x)
        assert logits.shape == (1, 10)
        strongest = int(im.activation("conv5")[0].flatten(1).amax(1).argmax())  # as the README picks it
        proj = im.project("conv5", channel=strongest)
        assert proj.abs().amax() > 0
        assert proj.shape == (1, 3, 144, 144)
        image = vizkit.to_image(proj)
    assert image.shape == (144, 144, 3)
    ax = vizkit.toolkit.figures.new_figure(2, 2).add_subplot(1, 1, 1)
    ax.imshow(image)  # what the README does with it (matplotlib refused [1,3,H,W])
    assert ax.get_images()[0].get_array().shape == (144, 144, 3)
    assert_no_hooks(model)


def test_run_uses_the_models_preprocessing_like_the_cli(bundled_model, photo_path, tmp_path, capsys):
    result = vizkit.run("deconvnet", bundled_model, images=[photo_path], layer="conv2", top=1)
    assert_no_hooks(bundled_model)
    assert result.meta["inputs"]["preprocess"]["crop"] == 144
    assert result.arrays["projections"].shape[-2:] == (144, 144)
    out = tmp_path / "o"
    args = ["run", "deconvnet", "--model", "zfnet-compact", "--image", photo_path, "--layer", "conv2", "--top", 1]
    code, _, err = cli(capsys, *args, "--out", out)
    assert code == 0, err
    document = json.loads((out / "result.json").read_text())
    used = vizkit.Preprocess.from_dict(result.meta["inputs"]["preprocess"])
    assert (
        vizkit.Preprocess.from_dict(document["inputs"]["preprocess"])
        == used
        == vizkit.data.preprocess_for(bundled_model)
    )
    assert document["channels"] == result["channels"]
    # an override on the CLI is the same as a Preprocess given to vizkit.run
    custom = vizkit.Preprocess(resize=176, crop=144)
    again = vizkit.run("deconvnet", bundled_model, images=[photo_path], layer="conv2", top=1, preprocess=custom)
    assert_no_hooks(bundled_model)
    assert again.meta["inputs"]["preprocess"]["resize"] == 176


def test_load_model_preprocess_sources(tmp_path):
    # a factory's own (build() sets 112x112), kept by load_model
    model = vizkit.load_model(WRAP_SPEC)
    assert vizkit.data.preprocess_for(model).crop == 112
    # an explicit one wins
    given = vizkit.Preprocess(resize=100, crop=96)
    assert vizkit.data.preprocess_for(vizkit.load_model(WRAP_SPEC, preprocess=given)) == given
    with pytest.raises(vizkit.UsageError, match="Preprocess"):
        vizkit.load_model(WRAP_SPEC, preprocess={"crop": 96})  # type: ignore[arg-type]
    # the JSON beside the weights (what export_weights / bundle_weights write)
    weights = tmp_path / "mine.pt"
    torch.save(model.state_dict(), weights)
    (tmp_path / "mine.json").write_text(json.dumps({"preprocess": {**given.to_dict(), "crop": 80}}))
    assert vizkit.data.preprocess_for(vizkit.load_model(WRAP_SPEC, weights=weights)).crop == 80
    # a training run folder's run.json
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save(model.state_dict(), run_dir / "weights.pt")
    (run_dir / "run.json").write_text(json.dumps({"model": WRAP_SPEC, "preprocess": {**given.to_dict(), "crop": 72}}))
    assert vizkit.data.preprocess_for(vizkit.load_model(WRAP_SPEC, weights=run_dir / "weights.pt")).crop == 72
    # a JSON that is not vizkit's is ignored; a malformed preprocess is a one-line error naming the file
    (tmp_path / "mine.json").write_text("{not json")
    assert vizkit.data.preprocess_for(vizkit.load_model(WRAP_SPEC, weights=weights)).crop == 112
    (tmp_path / "mine.json").write_text(json.dumps({"preprocess": {"resize": 100, "crop": 200, "mean": [0] * 3}}))
    with pytest.raises(vizkit.UsageError, match=r"mine\.json"):
        vizkit.load_model(WRAP_SPEC, weights=weights)


def test_preprocess_for_defaults_and_bad_values():
    assert vizkit.data.preprocess_for(None) == vizkit.Preprocess()
    model = torch.nn.Conv2d(3, 4, 3)
    assert vizkit.data.preprocess_for(model) == vizkit.Preprocess()  # a plain module: ImageNet's
    as_json = {"resize": 80, "crop": 64, "mean": [0.5] * 3, "std": [0.25] * 3}  # a dict of its fields is converted
    model.vizkit_info = vizkit.models.ModelInfo(preprocess=as_json)  # type: ignore[arg-type]
    assert vizkit.data.preprocess_for(model) == vizkit.Preprocess(80, 64, (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(vizkit.UsageError, match=r"ModelInfo\.preprocess must be"):
        vizkit.models.ModelInfo(preprocess=64)  # type: ignore[arg-type]
    model.vizkit_info = {"preprocess": vizkit.Preprocess()}
    with pytest.raises(vizkit.UsageError, match=r"vizkit_info must be a vizkit\.models\.ModelInfo"):
        vizkit.models.model_info(model)
    # the attribute ModelInfo replaced is refused, not silently ignored
    del model.vizkit_info
    model.vizkit_preprocess = vizkit.Preprocess(80, 64)
    with pytest.raises(vizkit.UsageError, match=r"vizkit_preprocess is no longer read.*ModelInfo\(preprocess="):
        vizkit.data.preprocess_for(model)
    with pytest.raises(vizkit.UsageError, match="Preprocess"):
        vizkit.load_images(["x.jpg"], "224")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- 2. to_image for imshow
def test_to_image_layouts():
    torch.manual_seed(0)
    batch = torch.randn(2, 3, 5, 7)
    first = batch[:1]
    single = vizkit.to_image(first)
    assert isinstance(single, np.ndarray) and single.dtype == np.float32 and single.shape == (5, 7, 3)
    assert np.array_equal(single, vizkit.to_image(batch[0]))  # [3,H,W] and [1,3,H,W]: one image
    channels_first = vizkit.to_image(batch, channels_last=False)
    assert isinstance(channels_first, torch.Tensor) and channels_first.shape == batch.shape
    both = vizkit.to_image(batch)
    assert both.shape == (2, 5, 7, 3)  # a batch: [N,H,W,3], image i is both[i]
    assert np.array_equal(both, channels_first.permute(0, 2, 3, 1).numpy())
    assert np.array_equal(both[0], single)  # each image is scaled on its own
    assert float(both.min()) >= 0 and float(both.max()) <= 1
    square = vizkit.to_image(torch.randn(2, 3, 6, 6))
    assert vizkit.toolkit.figures.tile_mosaic(square, rows=1).shape == (6, 2 * 6 + 2, 3)  # side by side, as documented
    nested = vizkit.to_image(torch.randn(2, 4, 3, 6, 6))
    assert nested.shape == (2, 4, 6, 6, 3)
    assert np.all(vizkit.to_image(torch.zeros(1, 3, 4, 4)) == 0.5)  # zero is mid-grey
    with pytest.raises(vizkit.UsageError, match=r"\[\.\., 3, H, W\]"):
        vizkit.to_image(torch.zeros(4, 4, 3))  # already channels-last


# ---------------------------------------------------------------------- 3. layers at the model's own size
def test_layers_reports_the_models_own_input_size(capsys):
    code, out, err = cli(capsys, "layers", "zfnet-compact")
    assert code == 0, err
    header = out.splitlines()[0]
    assert "3x144x144" in header and "crop 144" in header and "224" not in header
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.split()}
    assert "64x70x70" in rows["conv1.conv"]
    code, out, err = cli(capsys, "layers", "zfnet")
    assert code == 0, err
    assert "3x224x224" in out.splitlines()[0]
    code, out, err = cli(capsys, "layers", "zfnet", "--size", 227)
    assert code == 0, err
    assert "3x227x227" in out.splitlines()[0] and "--size" in out.splitlines()[0]
    code, out, err = cli(capsys, "layers", "--help")
    assert code == 0
    assert "model's own" in out and "zfnet-compact" in out


# ---------------------------------------------------------------------- 4. vizkit train's defaults
def test_train_defaults_match_the_bundled_recipe():
    from vizkit_plugins.train import TrainConfig

    assert TrainConfig(data="d", out="o").batch_size == 32
    command = build_cli(vizkit.make_app()).commands["train"]
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    assert options["batch_size"].default == 32
    assert "random subset" in (options["limit"].help or "")
    meta = json.loads((REPO / "vizkit" / "models" / "weights" / "zfnet_compact_imagenette.json").read_text())
    assert meta["recipe"]["batch_size"] == options["batch_size"].default


# ---------------------------------------------------------------------- 5. --model help, list models
def test_model_help_lists_the_registered_models(capsys):
    code, out, err = cli(capsys, "run", "deconvnet", "--help")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "zfnet-compact" in flat and "zfnet (untrained)" in flat and "vizkit list models" in flat
    assert "torchvision:<builder>" in flat
    code, out, err = cli(capsys, "list", "models")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "untrained" in lines["zfnet"] and "zfnet-compact" in lines["zfnet"]
    assert "Imagenette" in lines["zfnet-compact"] and "untrained" not in lines["zfnet-compact"]
    # every name and form stands apart from its description (the widest is package.module:factory)
    assert lines["package.module:factory"].split()[1] == "a"


# ---------------------------------------------------------------------- 6. the default --out
def test_default_out_numbers_new_folders(tmp_path):
    root = tmp_path / "vizkit-results"
    assert default_out("deconvnet", root) == root / "deconvnet"
    (root / "deconvnet").mkdir(parents=True)
    assert default_out("deconvnet", root) == root / "deconvnet"  # empty: still free
    (root / "deconvnet" / "result.json").write_text("{}")
    assert default_out("deconvnet", root) == root / "deconvnet-2"
    (root / "deconvnet-2").mkdir()
    (root / "deconvnet-2" / "result.json").write_text("{}")
    (root / "deconvnet-3").write_text("a file in the way")
    assert default_out("deconvnet", root) == root / "deconvnet-4"


def test_second_run_without_out_does_not_fail(tmp_path, monkeypatch, capsys, photo_path, recorded_models):
    monkeypatch.chdir(tmp_path)
    args = ["run", "deconvnet", "--model", "zfnet-compact", "--image", photo_path, "--layer", "conv1", "--top", 1]
    written = []
    for _ in range(2):
        code, out, err = cli(capsys, *args)
        assert code == 0, err
        written.append(out.split("wrote ")[1].split(" (")[0])
    assert written == ["vizkit-results/deconvnet", "vizkit-results/deconvnet-2"]
    for folder in written:
        assert (tmp_path / folder / "result.json").is_file()
    # a folder an interrupted run left (no result.json) is the one reused
    (tmp_path / "vizkit-results" / "deconvnet-3").mkdir()
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert (tmp_path / "vizkit-results" / "deconvnet-3" / "result.json").is_file()
    # an explicit --out that holds a result is still refused without --overwrite
    code, out, err = cli(capsys, *args, "--out", "vizkit-results/deconvnet")
    assert code == 2
    assert err.strip().startswith("vizkit: error:") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert len(recorded_models) == 3  # the refused run stops before loading a model
    for model in recorded_models:
        assert_no_hooks(model)
    code, out, err = cli(capsys, "run", "deconvnet", "--help")
    assert "vizkit-results/<analysis>" in " ".join(out.split())


# ---------------------------------------------------------------------- 7. the README's --data plugin snippet
# The README's plugin snippet itself, read from README.md (a copy kept here drifted from it).
def readme_plugin_module() -> types.ModuleType:
    """The first python block under README.md's "Writing a plugin", executed as a module."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Writing a plugin") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    module = types.ModuleType("readme_plugin")
    exec(compile(code, "README.md (Writing a plugin)", "exec"), module.__dict__)
    return module


def test_readme_data_plugin_snippet(tmp_path, photo_path, bundled_model, monkeypatch, capsys, recorded_models):
    folder = tmp_path / "images"
    folder.mkdir()
    with Image.open(photo_path) as image:
        for i, angle in enumerate((0, 90, 180)):
            image.convert("RGB").rotate(angle).save(folder / f"{i}.jpg")
    (folder / "3.jpg").write_bytes(b"not a jpeg")  # skipped by ctx.batches(), as the README says
    app = vizkit.make_app(extra=[("my-analysis", readme_plugin_module())])
    assert app.status("my-analysis").error is None
    result = vizkit.run("my-analysis", bundled_model, data=folder, layer="conv2", batch_size=2, app=app)
    assert_no_hooks(bundled_model)
    x = vizkit.load_images([folder / f"{i}.jpg" for i in range(3)], bundled_model)  # 144x144, as the run used
    with vizkit.instrument(bundled_model) as im, torch.no_grad():
        im(x)
        expected = im.activation("conv2").flatten(2).mean(2).mean(0).numpy()
    assert_no_hooks(bundled_model)
    assert result["images"] == 3 and result.meta["inputs"]["skipped_images"]["count"] == 1
    assert np.allclose(result.arrays["mean"], expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(vizkit.UsageError, match="--data"):
        vizkit.run("my-analysis", bundled_model, images=[photo_path], layer="conv2", app=app)
    assert_no_hooks(bundled_model)

    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: app)
    out = tmp_path / "o"
    code, _, err = cli(
        capsys, "run", "my-analysis", "--model", "zfnet-compact", "--data", folder, "--layer", "conv2", "--out", out
    )
    assert code == 0, err
    _document, arrays = vizkit.load_result(out)
    assert np.allclose(arrays["mean"], expected, rtol=1e-4, atol=1e-6)
    for model in recorded_models:
        assert_no_hooks(model)
