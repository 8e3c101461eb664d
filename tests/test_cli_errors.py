"""The CLI's behaviour on user mistakes, run in-process through ``vizkit.app.cli.main(argv)``.

Every bad input ends with exit status 2 (usage error) or 1 (run failure), a one-line
``vizkit: error: ...`` (or click's own usage error) and never a traceback. Also: ``list`` /
``layers`` output, and broken, duplicate or disabled plugins.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.cbook
import pytest
import torch
from torch import nn

import vizkit
import vizkit.app.cli
from helpers import analysis, assert_no_hooks, cli, plugin

IMAGE = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


class NotATensor:
    """A custom class: a file pickling one of these must be refused under weights_only."""

    def __init__(self) -> None:
        self.payload = "anything"


# ---------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def loaded_models(monkeypatch, no_hooks_left):
    """Every model the CLI loads; each must be free of hooks when the test ends."""
    monkeypatch.delenv("VIZKIT_DISABLE_PLUGINS", raising=False)
    return no_hooks_left


def assert_error(result: tuple[int, str, str], code: int | tuple[int, ...], *fragments: str) -> str:
    """A user error: the exit status, one ``vizkit: error:`` line naming ``fragments``, no traceback."""
    status, out, err = result
    codes = code if isinstance(code, tuple) else (code,)
    assert status in codes, (status, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    message = lines[0]
    assert message.startswith("vizkit: error: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def assert_click_usage_error(result: tuple[int, str, str], *fragments: str) -> str:
    status, out, err = result
    assert status == 2, (status, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]  # one line, like vizkit's own errors
    assert len(lines) == 1 and lines[0].startswith("vizkit: error: ") and "--help')" in lines[0], err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def deconvnet(*extra) -> list:
    """A fast deconvnet run on the untrained bundled ZF model."""
    return ["run", "deconvnet", "--model", "zfnet", "--image", IMAGE, "--layer", "conv2", "--top", "1", *extra]


def assert_clean(models: list[nn.Module], count: int = 1) -> None:
    assert len(models) == count
    for model in models:
        assert_no_hooks(model)


# ---------------------------------------------------------------------- models and weights
def test_unknown_model(capsys, tmp_path):
    result = cli(
        capsys,
        "run",
        "deconvnet",
        "--model",
        "nosuchmodel",
        "--image",
        IMAGE,
        "--layer",
        "conv2",
        "--out",
        tmp_path / "o",
    )
    assert_error(result, 2, "nosuchmodel", "zfnet", "torchvision:")


def test_unknown_torchvision_builder(capsys, tmp_path):
    result = cli(
        capsys,
        "run",
        "deconvnet",
        "--model",
        "torchvision:alexnett",
        "--image",
        IMAGE,
        "--layer",
        "x",
        "--out",
        tmp_path / "o",
    )
    message = assert_error(result, 2, "alexnett")
    assert "did you mean alexnet" in message


def test_missing_weights_file(capsys, tmp_path):
    result = cli(capsys, *deconvnet("--weights", tmp_path / "nope.pt", "--out", tmp_path / "o"))
    assert_error(result, 2, "nope.pt", "not found")


def test_weights_that_do_not_fit(capsys, tmp_path):
    other = tmp_path / "other.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).state_dict(), other)
    result = cli(capsys, *deconvnet("--weights", other, "--out", tmp_path / "o"))
    assert_error(result, 2, "other.pt", "do not fit")
    assert not (tmp_path / "o" / "result.json").exists()


def test_pickled_object_is_refused_without_trust(capsys, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"conv1.conv.weight": torch.zeros(1), "extra": NotATensor()}, evil)
    result = cli(capsys, *deconvnet("--weights", evil, "--out", tmp_path / "o"))
    message = assert_error(result, 2, "evil.pt", "--trust-weights")
    assert "refus" in message


def test_pickled_object_with_trust_is_still_not_a_state_dict(capsys, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"conv1.conv.weight": torch.zeros(1), "extra": NotATensor()}, evil)
    result = cli(capsys, *deconvnet("--weights", evil, "--trust-weights", "--out", tmp_path / "o"))
    assert_error(result, 2, "evil.pt", "state_dict")


def test_missing_labels_file(capsys, tmp_path):
    result = cli(capsys, *deconvnet("--labels", tmp_path / "labels.txt", "--out", tmp_path / "o"))
    assert_error(result, 2, "labels.txt", "not found")


def test_cuda_when_unavailable(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = cli(capsys, *deconvnet("--device", "cuda", "--out", tmp_path / "o"))
    assert_error(result, 2, "cuda")


# ---------------------------------------------------------------------- analyses and inputs
def test_unknown_analysis(capsys, tmp_path):
    result = cli(capsys, "run", "nosuch", "--model", "zfnet", "--image", IMAGE, "--out", tmp_path / "o")
    assert_error(result, 2, "nosuch", "deconvnet")


def test_unknown_layer_lists_valid_layers(capsys, tmp_path, loaded_models):
    result = cli(
        capsys, "run", "deconvnet", "--model", "zfnet", "--image", IMAGE, "--layer", "conv9", "--out", tmp_path / "o"
    )
    message = assert_error(result, 2, "conv9", "valid layers")
    for name in ("conv1", "conv5", "fc6", "fc7", "conv2.pool"):
        assert name in message
    assert not (tmp_path / "o" / "result.json").exists()
    assert_clean(loaded_models)


def test_missing_image_file(capsys, tmp_path):
    result = cli(
        capsys,
        "run",
        "deconvnet",
        "--model",
        "zfnet",
        "--image",
        tmp_path / "nope.jpg",
        "--layer",
        "conv2",
        "--out",
        tmp_path / "o",
    )
    assert_error(result, 2, "nope.jpg")


def test_unreadable_image(capsys, tmp_path, loaded_models):
    fake = tmp_path / "x.jpg"
    fake.write_text("this is not an image\n")
    result = cli(
        capsys, "run", "deconvnet", "--model", "zfnet", "--image", fake, "--layer", "conv2", "--out", tmp_path / "o"
    )
    assert_error(result, 2, "x.jpg")
    for model in loaded_models:
        assert_no_hooks(model)


def test_missing_required_layer(capsys, tmp_path):
    result = cli(capsys, "run", "deconvnet", "--model", "zfnet", "--image", IMAGE, "--out", tmp_path / "o")
    assert_error(result, 2, "--layer")


def test_channel_out_of_range(capsys, tmp_path, loaded_models):
    result = cli(
        capsys,
        "run",
        "deconvnet",
        "--model",
        "zfnet",
        "--image",
        IMAGE,
        "--layer",
        "conv2",
        "--channels",
        "9999",
        "--out",
        tmp_path / "o",
    )
    assert_error(result, 2, "9999", "256")
    assert not (tmp_path / "o" / "result.json").exists()
    assert_clean(loaded_models)


def test_missing_model_is_a_one_line_usage_error(capsys, tmp_path):
    """--model may only be left out where an analysis names its own model (evolution --run)."""
    status, _out, err = cli(capsys, "run", "deconvnet", "--image", IMAGE, "--layer", "conv2", "--out", tmp_path / "o")
    assert status == 2 and err.strip() == "vizkit: error: analysis 'deconvnet' needs --model"
    assert not (tmp_path / "o").exists()


def test_bad_option_type_is_a_click_usage_error(capsys, tmp_path):
    result = cli(capsys, *deconvnet("--top", "many", "--out", tmp_path / "o"))
    assert_click_usage_error(result, "--top", "many")


def test_out_holding_a_result_needs_overwrite(capsys, tmp_path, loaded_models):
    out = tmp_path / "o"
    code, _, err = cli(capsys, *deconvnet("--out", out))
    assert code == 0, err
    assert (out / "result.json").is_file() and (out / "arrays.npz").is_file() and list(out.glob("*.png"))
    first = (out / "result.json").read_text()

    assert_error(cli(capsys, *deconvnet("--out", out)), 2, str(out), "--overwrite")
    assert (out / "result.json").read_text() == first  # refused: left untouched

    code, _, err = cli(capsys, *deconvnet("--out", out, "--overwrite"))
    assert code == 0, err
    assert "Traceback" not in err
    assert json.loads((out / "result.json").read_text())["analysis"] == "deconvnet"
    assert_clean(loaded_models, count=2)  # the refused run stops before loading the model


# ---------------------------------------------------------------------- list and layers
def test_list(capsys):
    code, out, err = cli(capsys, "list")
    assert code == 0, err
    for fragment in ("analyses:", "models:", "plugins:", "deconvnet", "zfnet", "torchvision:"):
        assert fragment in out


def test_list_plugins_json(capsys):
    code, out, err = cli(capsys, "list", "plugins", "--json")
    assert code == 0, err
    plugins = json.loads(out)
    assert isinstance(plugins, list)
    by_name = {p["name"]: p for p in plugins}
    assert by_name["deconvnet"]["status"] == "ok" and by_name["deconvnet"]["error"] is None
    assert all({"name", "source", "status", "error"} <= set(p) for p in plugins)


def test_layers_zfnet(capsys):
    code, out, err = cli(capsys, "layers", "zfnet")
    assert code == 0, err
    for shape in ("96x55x55", "256x13x13", "384x13x13", "256x6x6", "4096"):
        assert shape in out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.split()}
    assert "96x55x55" in rows["conv1"] and "256x13x13" in rows["conv2"] and "384x13x13" in rows["conv3"]
    assert "256x6x6" in rows["conv5"] and "4096" in rows["fc6"] and "4096" in rows["fc7"]
    assert "switches" in rows["conv1.pool"]


def test_layers_unknown_model(capsys):
    assert_error(cli(capsys, "layers", "nosuchmodel"), 2, "nosuchmodel")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_layers_inception_functional_pool(capsys):
    code, out, err = cli(capsys, "layers", "torchvision:inception_v3")
    assert code == 0, err
    line = next((l for l in out.splitlines() if l.split() and l.split()[0] == "Mixed_6a.max_pool2d"), None)
    assert line is not None, out
    assert "F.max_pool2d" in line and "switches" in line


# ---------------------------------------------------------------------- plugins
def _raising(register):
    raise RuntimeError("boom while registering")


def _good(register):
    register(analysis("good-one"))


def test_broken_plugins_are_reported_and_others_keep_working():
    raising = plugin("raising", register_analyses=_raising)
    misspelled = plugin("misspelled", register_analysis=lambda register: register(analysis("never")))
    good = plugin("good", register_analyses=_good)
    app = vizkit.make_app(extra=[("raising", raising), ("misspelled", misspelled), ("good", good)])

    statuses = {s.name: s for s in app.statuses}
    assert "boom while registering" in statuses["raising"].error
    assert "register_analysis" in statuses["misspelled"].error
    assert "register_analyses" in statuses["misspelled"].error  # the did-you-mean hint
    assert statuses["good"].error is None and statuses["deconvnet"].error is None
    assert {"deconvnet", "good-one"} <= set(app.analyses)
    assert "never" not in app.analyses


def test_broken_plugin_does_not_take_the_cli_down(capsys, monkeypatch, tmp_path, loaded_models):
    raising = plugin("raising", register_analyses=_raising)
    misspelled = plugin("misspelled", register_analysis=lambda register: None)
    monkeypatch.setattr(
        vizkit.app.cli, "make_app", lambda: vizkit.make_app(extra=[("raising", raising), ("misspelled", misspelled)])
    )

    code, out, err = cli(capsys, "list", "plugins")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "boom while registering" in rows["raising"]
    assert "register_analysis" in rows["misspelled"]
    assert "ok" in rows["deconvnet"]

    code, out, err = cli(capsys, *deconvnet("--out", tmp_path / "o"))
    assert code == 0, err
    assert (tmp_path / "o" / "result.json").is_file()
    assert_clean(loaded_models)


def test_duplicate_analysis_names_name_both_plugins():
    first = plugin("first", register_analyses=lambda register: register(analysis("twin")))
    second = plugin("second", register_analyses=lambda register: register(analysis("twin")))
    app = vizkit.make_app(extra=[("plugin-one", first), ("plugin-two", second)])
    errors = [s.error for s in app.statuses if s.error]
    assert any("twin" in e and "plugin-one" in e and "plugin-two" in e for e in errors), errors
    assert "twin" not in app.analyses and "deconvnet" in app.analyses  # both refused: neither is used


def test_duplicate_of_a_builtin_analysis_names_both_plugins():
    impostor = plugin("impostor", register_analyses=lambda register: register(analysis("deconvnet")))
    app = vizkit.make_app(extra=[("impostor", impostor)])
    error = app.status("impostor").error
    assert error and "'deconvnet'" in error and "impostor" in error
    assert app.analyses["deconvnet"].plugin == "deconvnet"  # the first registration is kept


def test_disable_plugins_environment(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("VIZKIT_DISABLE_PLUGINS", "deconvnet")
    app = vizkit.make_app()
    assert "deconvnet" not in app.analyses
    assert app.status("deconvnet").disabled
    assert "zfnet" in app.models  # the core models are unaffected

    code, out, err = cli(capsys, "list", "plugins", "--json")
    assert code == 0, err
    assert {p["name"]: p["status"] for p in json.loads(out)}["deconvnet"] == "disabled"
    assert_error(cli(capsys, *deconvnet("--out", tmp_path / "o")), 2, "deconvnet")


@pytest.mark.parametrize(
    "argv,fragments",
    [
        (["run", "top9", "--model", "zfnet-compact", "--data", IMAGE, "--layer", "conv5"], ["is one image", "--image"]),
        (
            ["run", "top9", "--model", "zfnet-compact", "--data", IMAGE.parent, "--layer", "conv5", "--workers", "-1"],
            ["--workers"],
        ),
        (
            [
                "run",
                "top9",
                "--model",
                "zfnet-compact",
                "--data",
                IMAGE.parent,
                "--layer",
                "conv5",
                "--maps-per-page",
                "0",
            ],
            ["--maps-per-page"],
        ),
        (
            ["run", "deconvnet", "--model", "zfnet-compact", "--image", IMAGE, "--layer", "conv5", "--std", "0,0,0"],
            ["--std must be three positive"],
        ),
        (
            ["run", "deconvnet", "--model", "zfnet-compact", "--image", IMAGE, "--layer", "conv5", "--crop", "400"],
            ["--crop 400 is larger than --resize 160"],
        ),
        (
            [
                "run",
                "deconvnet",
                "--model",
                "zfnet-compact",
                "--image",
                IMAGE,
                "--layer",
                "conv5",
                "--resize",
                "400",
                "--crop",
                "400",
            ],
            ["the model cannot take 3x400x400 inputs", "--crop"],
        ),
    ],
)
def test_option_values_that_used_to_reach_torch(argv, fragments, capsys, tmp_path):
    out = tmp_path / "o"
    assert_error(cli(capsys, *argv, "--out", out), 2, *fragments)
    assert not out.exists()


def test_an_out_folder_that_cannot_be_created_is_refused_before_the_run(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["run", "deconvnet", "--model", "zfnet-compact", "--image", IMAGE, "--layer", "conv5"]
    assert_error(cli(capsys, *argv, "--out", blocker / "x"), 2, "cannot be created", "is not a folder")


@pytest.mark.parametrize(
    ("option", "fragment"),
    [("--crop", "not 160 and 0"), ("--resize", "not 0 and 144")],
)
def test_a_zero_resize_or_crop_is_refused_not_read_as_the_default(option, fragment, capsys, tmp_path):
    out = tmp_path / "o"
    argv = ["run", "deconvnet", "--model", "zfnet-compact", "--image", IMAGE, "--layer", "conv5", option, "0"]
    assert_error(cli(capsys, *argv, "--out", out), 2, "must be positive", fragment)
    assert not out.exists()


def test_layers_size_zero_is_refused_not_read_as_the_default(capsys):
    assert_error(cli(capsys, "layers", "zfnet-compact", "--size", "0"), 2, "--size 0 is too small")


@pytest.mark.parametrize("command", ["run", "demo"])
def test_an_empty_out_is_refused_not_read_as_the_default_folder(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = (
        ["run", "deconvnet", "--model", "zfnet-compact", "--image", IMAGE, "--layer", "conv5"]
        if command == "run"
        else ["demo", "--quick"]
    )
    assert_error(cli(capsys, *argv, "--out", ""), 2, "--out is empty")
    assert list(tmp_path.iterdir()) == []


def test_clicks_own_checks_are_one_line_and_no_arguments_show_the_help(capsys):
    from vizkit.app.cli import main

    for argv, fragment in (
        (["run", "occlusion", "--model", "zfnet-compact", "--mode", "x"], "Invalid value for '--mode'"),
        (["run", "occlusion", "--bogus"], "No such option '--bogus'"),
        (["nosuch"], "No such command 'nosuch'"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vizkit: error: ") and fragment in err[0], err
    for argv in ([], ["run"]):  # nothing asked: the help, on stdout, not an error
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith("Usage: vizkit") and captured.err == ""
