"""The example third-party plugin in examples/vizkit-channel-stats.

(a) registered in a fresh app without installing it, checked against an independent computation
with plain torch forward hooks; (b) run through the CLI in-process with a patched app; (c) slow:
really pip-installed into the venv and run through the ``vizkit`` console script; (d) the
template's other registrations (a model, a spec form, a projection rule) and the analysis's options.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import vizkit
import vizkit.app.cli
from helpers import assert_no_hooks

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "examples" / "vizkit-channel-stats"
PLUGIN_NAME = "channel-stats"
SHARED = Path(os.environ.get("VIZKIT_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
SAMPLES = SHARED / "data" / "imagenet-samples"
IMAGE = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


# ---------------------------------------------------------------------- helpers
def reference_stats(model: torch.nn.Module, x: torch.Tensor, layer: str) -> dict[str, np.ndarray]:
    """Mean / max / positive fraction per channel, averaged over images, with a plain forward hook."""
    module = dict(model.named_modules())[layer]
    captured: list[torch.Tensor] = []
    # clone: an in-place ReLU after the layer would otherwise change the tensor we keep
    handle = module.register_forward_hook(lambda m, args, output: captured.append(output.detach().clone()))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        handle.remove()
    assert len(captured) == 1
    activation = captured[0].double()
    flat = activation.flatten(2) if activation.dim() > 2 else activation[:, :, None]
    return {
        "mean": flat.mean(dim=2).mean(dim=0).numpy(),
        "max": flat.amax(dim=2).mean(dim=0).numpy(),
        "positive_fraction": (flat > 0).double().mean(dim=2).mean(dim=0).numpy(),
    }


def check_against_reference(result: vizkit.Result, reference: dict[str, np.ndarray]) -> None:
    channels = reference["mean"].shape[0]
    for key in ("mean", "max", "positive_fraction"):
        array = result.arrays[key]
        assert array.dtype == np.float32 and array.shape == (channels,), (key, array.dtype, array.shape)
        assert np.allclose(array, reference[key], rtol=1e-4, atol=1e-5), key
    assert result["channels"] == channels
    assert result["dead_channels"] == int(np.count_nonzero(reference["positive_fraction"] == 0))
    top = result["top_channels"]
    assert len(top) == min(10, channels) and len(set(top)) == len(top)
    # the reported maps carry the 10 highest means, strongest first (robust to near-ties)
    assert np.allclose(reference["mean"][top], np.sort(reference["mean"])[::-1][: len(top)], rtol=1e-4, atol=1e-6)


@pytest.fixture
def plugin_module(monkeypatch):
    """The example plugin's module, importable from its source folder (not installed)."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    module = importlib.import_module("vizkit_channel_stats")
    assert Path(module.__file__).resolve().is_relative_to(PLUGIN_DIR.resolve())
    return module


@pytest.fixture
def app(plugin_module):
    app = vizkit.make_app(extra=[(PLUGIN_NAME, plugin_module)])
    status = app.status(PLUGIN_NAME)
    assert status is not None and status.error is None, status
    assert PLUGIN_NAME in app.analyses and app.analyses[PLUGIN_NAME].plugin == PLUGIN_NAME
    return app


@pytest.fixture(scope="module")
def squeezenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.squeezenet1_0().eval()  # random weights: no download


@pytest.fixture(scope="module")
def zfnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return vizkit.load_model("zfnet")


# ---------------------------------------------------------------------- (a) API, not installed
def test_plugin_imports_only_vizkit_public_api():
    tree = ast.parse((PLUGIN_DIR / "vizkit_channel_stats" / "__init__.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    vizkit_modules = {name for name in imported if name == "vizkit" or name.startswith("vizkit.")}
    assert vizkit_modules == {"vizkit"}, vizkit_modules


def test_entry_point_declared():
    import tomllib

    project = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]
    assert project["name"] == "vizkit-channel-stats"
    assert project["entry-points"]["vizkit"] == {PLUGIN_NAME: "vizkit_channel_stats"}
    assert any(dep.split()[0].startswith("vizkit") for dep in project["dependencies"])


def test_analysis_declaration(app):
    analysis = app.analysis(PLUGIN_NAME)
    assert analysis.description and "\n" not in analysis.description
    assert analysis.option("layer").required
    assert analysis.inputs in ("images", "any")


@pytest.mark.parametrize("layer", ["features.0", "features.3", "features.12", "classifier.1"])
def test_matches_forward_hooks_on_squeezenet(app, squeezenet, layer):
    torch.manual_seed(1)
    x = torch.randn(3, 3, 160, 160)  # any size: squeezenet pools adaptively
    result = vizkit.run(PLUGIN_NAME, squeezenet, images=x, app=app, layer=layer, batch_size=2)
    assert_no_hooks(squeezenet)
    check_against_reference(result, reference_stats(squeezenet, x, layer))
    assert result["layer"] == layer
    assert result.analysis == PLUGIN_NAME
    assert_no_hooks(squeezenet)


def test_image_files_on_zfnet(app, zfnet, tmp_path):
    grey = tmp_path / "grey.png"
    Image.open(IMAGE).convert("L").save(grey)  # greyscale input is converted to RGB
    paths = [IMAGE, grey]
    result = vizkit.run(PLUGIN_NAME, zfnet, images=paths, app=app, layer="conv2")
    assert_no_hooks(zfnet)
    x = vizkit.load_images(paths, vizkit.Preprocess())
    check_against_reference(result, reference_stats(zfnet, x, "conv2"))
    assert result["channels"] == 256

    figure = result.figures["channel_stats"]
    (ax,) = figure.axes
    assert "conv2" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()
    heights = [patch.get_height() for patch in ax.patches]
    assert len(heights) == 256
    assert np.all(np.diff(heights) <= 1e-9), "bars are not sorted descending"
    assert np.allclose(heights[0], result.arrays["mean"].max())

    saved = result.save(tmp_path / "out")
    document, arrays = vizkit.load_result(saved)
    assert document["analysis"] == PLUGIN_NAME
    assert document["layer"] == "conv2" and document["channels"] == 256
    assert document["top_channels"] == result["top_channels"]
    assert set(arrays) >= {"mean", "max", "positive_fraction"}
    assert (saved / "channel_stats.png").stat().st_size > 0


def test_data_folder_input(app, zfnet, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    with Image.open(IMAGE) as image:
        image.convert("RGB").save(folder / "a.jpg")
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("RGB").save(folder / "b.png")
    result = vizkit.run(PLUGIN_NAME, zfnet, data=folder, app=app, layer="conv1", batch_size=1)
    assert_no_hooks(zfnet)
    x = vizkit.load_images(sorted(folder.iterdir()), vizkit.Preprocess())
    check_against_reference(result, reference_stats(zfnet, x, "conv1"))


def test_imagenet_samples(app, squeezenet):
    if not SAMPLES.is_dir():
        pytest.skip(f"shared data not available: {SAMPLES}")
    paths = sorted(SAMPLES.glob("*.jpg"))[:4]
    if len(paths) < 2:
        pytest.skip(f"too few images in {SAMPLES}")
    result = vizkit.run(PLUGIN_NAME, squeezenet, images=paths, app=app, layer="features.7", batch_size=3)
    assert_no_hooks(squeezenet)
    x = vizkit.load_images(paths, vizkit.Preprocess())
    check_against_reference(result, reference_stats(squeezenet, x, "features.7"))


def test_fc_layer_has_one_unit_per_channel(app, zfnet):
    result = vizkit.run(PLUGIN_NAME, zfnet, images=[IMAGE], app=app, layer="fc8")
    assert_no_hooks(zfnet)
    assert result["channels"] == 1000
    # a single unit per map: the mean is the max is the activation itself
    assert np.allclose(result.arrays["mean"], result.arrays["max"])
    assert set(np.unique(result.arrays["positive_fraction"])) <= {0.0, 1.0}


def test_unknown_layer_fails_cleanly(app, zfnet):
    with pytest.raises(vizkit.VizkitError) as caught:
        vizkit.run(PLUGIN_NAME, zfnet, images=[IMAGE], app=app, layer="conv9")
    assert "conv9" in str(caught.value) and "conv5" in str(caught.value)
    assert_no_hooks(zfnet)


def test_missing_inputs_and_layer_are_usage_errors(app, zfnet):
    with pytest.raises(vizkit.UsageError, match="--image"):
        vizkit.run(PLUGIN_NAME, zfnet, app=app, layer="conv2")
    with pytest.raises(vizkit.UsageError, match="--layer"):
        vizkit.run(PLUGIN_NAME, zfnet, images=[IMAGE], app=app)
    assert_no_hooks(zfnet)


def test_disabled_by_environment(plugin_module, monkeypatch):
    monkeypatch.setenv("VIZKIT_DISABLE_PLUGINS", PLUGIN_NAME)
    app = vizkit.make_app(extra=[(PLUGIN_NAME, plugin_module)])
    assert PLUGIN_NAME not in app.analyses
    assert app.status(PLUGIN_NAME).disabled


# ---------------------------------------------------------------------- (b) CLI, in-process
@pytest.fixture
def cli_app(monkeypatch, plugin_module, recorded_models):
    """Make ``vizkit.app.cli.main`` build its app with the example plugin; record loaded models."""
    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: vizkit.make_app(extra=[(PLUGIN_NAME, plugin_module)]))
    return recorded_models


def test_cli_run(cli_app, tmp_path, capsys):
    out = tmp_path / "o"
    code = vizkit.app.cli.main(
        ["run", PLUGIN_NAME, "--model", "zfnet", "--image", str(IMAGE), "--layer", "conv2", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.out + captured.err
    assert (out / "result.json").is_file() and (out / "arrays.npz").is_file()
    assert list(out.glob("*.png"))
    document, arrays = vizkit.load_result(out)
    assert document["analysis"] == PLUGIN_NAME and document["layer"] == "conv2" and document["channels"] == 256
    assert document["params"]["layer"] == "conv2"
    assert arrays["mean"].shape == (256,) and arrays["mean"].dtype == np.float32
    assert len(cli_app) == 1
    for model in cli_app:
        assert_no_hooks(model)


def test_cli_lists_and_helps(cli_app, capsys):
    assert vizkit.app.cli.main(["list", "plugins"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if PLUGIN_NAME in l)
    assert "ok" in line
    assert vizkit.app.cli.main(["list", "analyses", "--json"]) == 0
    names = [a["name"] for a in json.loads(capsys.readouterr().out)]
    assert PLUGIN_NAME in names and "deconvnet" in names
    assert vizkit.app.cli.main(["run", PLUGIN_NAME, "--help"]) == 0
    assert "--layer" in capsys.readouterr().out


def test_cli_unknown_layer(cli_app, tmp_path, capsys):
    out = tmp_path / "o"
    code = vizkit.app.cli.main(
        ["run", PLUGIN_NAME, "--model", "zfnet", "--image", str(IMAGE), "--layer", "conv9", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code in (1, 2)
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vizkit: error:") and "conv9" in lines[0]
    assert not (out / "result.json").exists()
    assert len(cli_app) == 1
    for model in cli_app:
        assert_no_hooks(model)


def test_report_shows_the_plugins_own_view(cli_app, tmp_path, capsys, plugin_module):
    """The plugin ships a report view (only the public API): `vizkit report` shows its table, with
    its style sheet, and leaves the keys it showed out of the generic summary; without the plugin
    the same result gets the generic rendering."""
    from vizkit.app.report import write_report

    out = tmp_path / "results" / "stats"
    argv = ["run", PLUGIN_NAME, "--model", "zfnet", "--image", str(IMAGE), "--layer", "conv2", "--top", "5"]
    assert vizkit.app.cli.main([*argv, "--out", str(out)]) == 0
    assert vizkit.app.cli.main(["report", str(tmp_path)]) == 0, capsys.readouterr().err
    text = (tmp_path / "index.html").read_text()
    document, _arrays = vizkit.load_result(out)
    table = text.split('<table class="records channel-stats">', 1)[1].split("</table>", 1)[0]
    assert [int(m) for m in re.findall(r"<th>map (\d+)</th>", table)] == document["top_channels"]
    assert f"{document['dead_channels']} of 256 maps never positive (dead)" in table
    assert text.count(plugin_module.REPORT_CSS) == 1  # the view's style sheet, once
    assert "<th>top_channels</th>" not in text and "<th>dead_channels</th>" not in text  # shown by the view
    assert "<th>projected</th>" in text  # a key the view leaves to the generic rendering

    path, count = write_report(tmp_path, vizkit.make_app())  # the plugin missing: the generic rendering
    generic = path.read_text()
    assert count == 1 and "channel-stats td.bar" not in generic and 'class="records channel-stats"' not in generic
    assert "<th>top_channels</th>" in generic and "<th>dead_channels</th>" in generic

    broken = json.loads((out / "result.json").read_text())
    broken["top_values"] = "high"  # data the view does not expect: it steps aside
    (out / "result.json").write_text(json.dumps(broken))
    app = vizkit.make_app(extra=[(PLUGIN_NAME, plugin_module)])
    shown = write_report(tmp_path, app)[0].read_text()
    assert 'class="records channel-stats"' not in shown and "<th>top_values</th>" in shown


# ---------------------------------------------------------------------- (c) really installed
def _installed() -> bool:
    try:
        importlib.metadata.distribution("vizkit-channel-stats")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _vizkit_script() -> str:
    script = Path(sys.executable).parent / ("vizkit.exe" if os.name == "nt" else "vizkit")
    found = str(script) if script.exists() else shutil.which("vizkit")
    if not found:
        pytest.skip("the vizkit console script is not installed next to this Python")
    return found


@pytest.mark.slow
def test_pip_installed_plugin(tmp_path):
    vizkit_script = _vizkit_script()
    pip = [sys.executable, "-m", "pip"]
    if subprocess.run([*pip, "--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not available in this environment")
    was_installed = _installed()
    egg_info = PLUGIN_DIR / "vizkit_channel_stats.egg-info"
    had_egg_info = egg_info.exists()
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIZKIT_DISABLE_PLUGINS", None)
    try:
        if not was_installed:
            installed = subprocess.run(
                [*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN_DIR)],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=300,
            )
            assert installed.returncode == 0, installed.stdout + installed.stderr

        listed = subprocess.run(
            [vizkit_script, "list", "plugins"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
        )
        assert listed.returncode == 0, listed.stderr
        line = next((l for l in listed.stdout.splitlines() if l.split() and l.split()[0] == PLUGIN_NAME), None)
        assert line is not None, listed.stdout
        assert "ok" in line and "entry point vizkit_channel_stats" in line, line

        out = tmp_path / "o"
        ran = subprocess.run(
            [
                vizkit_script,
                "run",
                PLUGIN_NAME,
                "--model",
                "zfnet",
                "--image",
                str(IMAGE),
                "--layer",
                "conv2",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        assert "Traceback" not in ran.stderr
        document = json.loads((out / "result.json").read_text())
        assert document["analysis"] == PLUGIN_NAME and document["channels"] == 256
        assert (out / "arrays.npz").is_file() and (out / "channel_stats.png").is_file()

        disabled = subprocess.run(
            [vizkit_script, "list", "plugins", "--json"],
            capture_output=True,
            text=True,
            env={**env, "VIZKIT_DISABLE_PLUGINS": PLUGIN_NAME},
            cwd=tmp_path,
            timeout=120,
        )
        statuses = {p["name"]: p["status"] for p in json.loads(disabled.stdout)}
        assert statuses[PLUGIN_NAME] == "disabled"
    finally:
        if not was_installed:
            subprocess.run(
                [*pip, "uninstall", "-y", "vizkit-channel-stats"],
                capture_output=True,
                env=env,
                cwd=tmp_path,
                timeout=300,
            )
            if not had_egg_info:
                shutil.rmtree(egg_info, ignore_errors=True)
    if not was_installed:
        assert not _installed(), "uninstalling vizkit-channel-stats failed"


# ---------------------------------------------------------------------- (d) the template's other hooks
def test_template_registers_a_model_a_spec_form_and_a_rule(app, plugin_module):
    assert app.models["tinycnn"].plugin == PLUGIN_NAME
    assert app.model_sources["tinycnn"].plugin == PLUGIN_NAME
    assert app.rules["leaky-deconvnet"].plugin == PLUGIN_NAME
    state = torch.random.get_rng_state()
    named = vizkit.load_model("tinycnn", app=app)
    assert torch.equal(torch.random.get_rng_state(), state), "building the model reseeded the global generator"
    assert vizkit.data.preprocess_for(named) == vizkit.Preprocess(resize=72, crop=64)  # the entry's own
    wide = vizkit.load_model("tinycnn:24", app=app)
    assert wide.conv1.out_channels == 24 and vizkit.data.preprocess_for(wide).crop == 64  # the factory's own
    again = vizkit.load_model("tinycnn:24", app=app)
    assert all(torch.equal(a, b) for a, b in zip(wide.state_dict().values(), again.state_dict().values()))
    for bad in ("tinycnn:0", "tinycnn:wide"):
        with pytest.raises(vizkit.UsageError, match="tinycnn:<width>"):
            vizkit.load_model(bad, app=app)


def test_leaky_rule_on_both_projection_paths(plugin_module):
    model = plugin_module.tiny_cnn(8).eval()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    with vizkit.instrument(model) as im:
        im(x)
        leaky = plugin_module.LeakyDeconvnetRule()
        auto = vizkit.project(im, x, "conv3", [0, 5], rule=leaky)
        explicit = vizkit.project(im, x, "conv3", [0, 5], rule=leaky, method="explicit")
        deconv = vizkit.project(im, x, "conv3", [0, 5], rule="deconvnet")
        no_leak = vizkit.project(im, x, "conv3", [0, 5], rule=plugin_module.LeakyDeconvnetRule(slope=0.0))
    assert_no_hooks(model)
    assert torch.allclose(auto.images, explicit.images, atol=1e-5)  # both paths read the same rule
    assert torch.allclose(no_leak.images, deconv.images, atol=1e-6)  # slope 0 is the paper's rule
    assert not torch.allclose(auto.images, deconv.images, atol=1e-4)  # the leak changes the picture


def test_options_sort_top_project_and_rule(app, plugin_module):
    model = vizkit.load_model("tinycnn", app=app)
    result = vizkit.run(
        PLUGIN_NAME, model, images=[IMAGE], app=app, layer="conv2", top=3, sort="max", project=2, rule="leaky-deconvnet"
    )
    assert_no_hooks(model)
    x = vizkit.load_images([IMAGE], model)
    assert x.shape == (1, 3, 64, 64)  # the entry's preprocessing, used by vizkit.run too
    reference = reference_stats(model, x, "conv2")
    assert result["ranked_by"] == "max"
    assert np.allclose(reference["max"][result["top_channels"]], np.sort(reference["max"])[::-1][:3], rtol=1e-4)
    assert np.allclose(result["top_values"], reference["max"][result["top_channels"]], rtol=1e-4)
    assert result["projected"]["rule"] == "leaky-deconvnet"
    assert result["projected"]["channels"] == result["top_channels"][:2]
    assert result.arrays["projections"].shape == (2, 3, 64, 64)
    with vizkit.instrument(model) as im:
        im(x)
        expected = vizkit.project(
            im, x, "conv2", result["projected"]["channels"], rule=plugin_module.LeakyDeconvnetRule()
        )
    assert_no_hooks(model)
    assert np.allclose(result.arrays["projections"], expected.images[0].numpy(), atol=1e-5)
    figure = result.figures["channel_stats_projections"]
    assert len(figure.axes) == 3 and "Leaky" in figure._suptitle.get_text()
    (bars,) = result.figures["channel_stats"].axes
    assert bars.get_ylabel() == "largest activation"

    quiet = vizkit.run(PLUGIN_NAME, model, images=[IMAGE], app=app, layer="conv2", project=0)
    assert "projections" not in quiet.arrays and "channel_stats_projections" not in quiet.figures
    for bad, match in (({"top": 0}, "--top"), ({"project": -1}, "--project"), ({"sort": "median"}, "--sort")):
        with pytest.raises(vizkit.UsageError, match=match):
            vizkit.run(PLUGIN_NAME, model, images=[IMAGE], app=app, layer="conv2", **bad)
    with pytest.raises(vizkit.UsageError, match="--rule"):
        vizkit.run(PLUGIN_NAME, model, images=[IMAGE], app=app, layer="conv2", rule="nosuchrule")
    assert_no_hooks(model)


def test_cli_template_options_and_the_rule_elsewhere(cli_app, tmp_path, capsys):
    assert vizkit.app.cli.main(["run", PLUGIN_NAME, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--top", "--sort", "--project", "--rule"):
        assert flag in text
    assert "leaky-deconvnet" in text
    assert vizkit.app.cli.main(["list", "models"]) == 0
    listed = capsys.readouterr().out
    assert "tinycnn:<width>" in listed and "tinycnn " in listed
    assert vizkit.app.cli.main(["layers", "tinycnn:8"]) == 0
    assert "3x64x64" in capsys.readouterr().out.splitlines()[0]
    out = tmp_path / "leaky"
    args = ["run", "deconvnet", "--model", "tinycnn", "--image", str(IMAGE), "--layer", "conv3", "--top", "2"]
    code = vizkit.app.cli.main([*args, "--rule", "leaky-deconvnet", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document, arrays = vizkit.load_result(out)
    assert document["rule"] == "leaky-deconvnet" and arrays["projections"].shape == (2, 3, 64, 64)
    for model in cli_app:
        assert_no_hooks(model)
