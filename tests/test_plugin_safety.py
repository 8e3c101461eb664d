"""Plugins cannot break vizkit: a third-party name never replaces a built-in one (whatever order
the plugins load in), two plugins claiming one name are both refused, and an exception inside a
plugin's analysis, model or rule is one line naming the plugin (a built-in's: a bug in vizkit).
``VIZKIT_DEBUG=1`` adds the full traceback to any error."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import click
import pytest
import torch
from torch import nn

import vizkit
import vizkit.app.cli
import vizkit_plugins.top9
import vizkit_plugins.train
from helpers import analysis, cli, plugin, tiny_net
from vizkit.framework import builtins
from vizkit.framework.manager import is_builtin_module


# ---------------------------------------------------------------------- helpers
def tiny_models(register) -> None:
    register(vizkit.ModelEntry("tiny", tiny_net, "a tiny net"))


class Rule(vizkit.ProjectionRule):
    """A rule with a chosen name that fails (or not) when a signal crosses a ReLU."""

    title = "test rule"
    description = "test rule"

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail

    def relu_down(self, signal, forward_input):
        if self.fail:
            raise ValueError("the rule's own bug")
        return signal.clamp(min=0)


@pytest.fixture
def run_cli(monkeypatch, capsys, no_hooks_left):
    """``run_cli(app, *argv)``: the CLI on ``app``; (exit status, stdout, stderr). Every model it
    loaded is checked for left-over hooks at the end of the test, also after failing runs."""
    monkeypatch.delenv("VIZKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("VIZKIT_DEBUG", raising=False)

    def run(app: vizkit.framework.App, *argv) -> tuple[int, str, str]:
        monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: app)
        return cli(capsys, *argv)

    return run


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vizkit: error: "), err
    return lines[0]


# ---------------------------------------------------------------------- name clashes
def test_builtin_names_are_recognised_by_module_not_order():
    assert is_builtin_module("vizkit_plugins.top9") and is_builtin_module("vizkit.framework.builtins")
    assert not is_builtin_module("vizkit_plugins_extra.top9") and not is_builtin_module("vizkitty")
    assert not is_builtin_module(None)
    app = vizkit.make_app()
    assert app.status("top9").builtin and app.status("builtin").builtin


@pytest.mark.parametrize("impostor_first", [True, False])
def test_a_plugin_cannot_replace_a_builtin_analysis(impostor_first):
    impostor = plugin(
        "impostor_pkg",
        register_analyses=lambda register: register(analysis("top9", options=[vizkit.Option("impostor_flag", bool)])),
    )
    pair = [("impostor", impostor), ("top9", vizkit_plugins.top9)]
    app = vizkit.make_app(entry_point_group=None, extra=pair if impostor_first else pair[::-1])

    assert app.analyses["top9"].plugin == "top9"
    assert "impostor_flag" not in {o.name for o in app.analyses["top9"].options}
    error = app.status("impostor").error
    assert error and "'top9'" in error and "impostor" in error and "built-in" in error
    assert app.status("top9").error is None
    assert app.warnings == [error]


def test_the_cli_shows_the_builtins_options_and_warns_once(run_cli):
    impostor = plugin(
        "impostor_pkg",
        register_analyses=lambda register: register(analysis("top9", options=[vizkit.Option("impostor_flag", bool)])),
    )
    app = vizkit.make_app(extra=[("impostor", impostor)])

    code, out, err = run_cli(app, "run", "top9", "--help")
    assert code == 0, err
    assert "--impostor-flag" not in out and "--layer" in out
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("vizkit: warning: analysis 'top9' of plugin 'impostor'")

    code, out, err = run_cli(app, "list", "plugins", "--json")
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["impostor"]["status"] == "error" and "'top9'" in rows["impostor"]["error"]
    assert not rows["impostor"]["builtin"] and rows["top9"]["builtin"] and rows["top9"]["status"] == "ok"


def test_models_sources_and_rules_of_builtin_names_are_left_out():
    impostor = plugin(
        "impostor_pkg",
        register_models=lambda register: register(vizkit.ModelEntry("zfnet-compact", tiny_net)),
        register_model_sources=lambda register: register(
            vizkit.ModelSource("torchvision", lambda rest: tiny_net(), "torchvision:<x>", prefix="torchvision")
        ),
        register_rules=lambda register: register(Rule("deconvnet")),
    )
    # the impostor registers before vizkit's own registrations
    app = vizkit.make_app(entry_point_group=None, extra=[("impostor", impostor), ("core-again", builtins)])
    assert app.models["zfnet-compact"].factory is not tiny_net
    assert app.model_sources["torchvision"].plugin == "builtin"
    assert not isinstance(app.rules["deconvnet"], Rule)
    assert len(app.warnings) == 3
    assert all("plugin 'impostor'" in warning for warning in app.warnings)


def test_two_third_party_plugins_claiming_a_name_are_both_refused():
    first = plugin(
        "first_pkg", register_analyses=lambda register: (register(analysis("twin")), register(analysis("solo")))
    )
    second = plugin("second_pkg", register_analyses=lambda register: register(analysis("twin")))
    app = vizkit.make_app(entry_point_group=None, extra=[("one", first), ("two", second)])
    assert "twin" not in app.analyses
    assert app.analyses["solo"].plugin == "one"  # the rest of the plugin still works
    for name in ("one", "two"):
        error = app.status(name).error
        assert error and "'twin'" in error and "plugin 'one'" in error and "plugin 'two'" in error
    assert len(app.warnings) == 1


def test_commands_keep_vizkits_names(run_cli):
    def impostor_commands(cli: click.Group) -> None:
        @cli.command("list")
        def fake_list() -> None:
            click.echo("impostor list")

        @cli.command("train")
        def fake_train() -> None:
            click.echo("impostor train")

        @cli.command("hello")
        def hello() -> None:
            click.echo("hello from the impostor")

    def rival_commands(cli: click.Group) -> None:
        @cli.command("hello")
        def hello() -> None:
            click.echo("hello from the rival")

    impostor = plugin("impostor_pkg", register_commands=impostor_commands)
    rival = plugin("rival_pkg", register_commands=rival_commands)
    # registered before the built-in train plugin: vizkit's names still win
    app = vizkit.make_app(
        entry_point_group=None, extra=[("impostor", impostor), ("train", vizkit_plugins.train), ("rival", rival)]
    )
    cli = vizkit.app.cli.build_cli(app)
    assert cli.commands["train"].callback.__module__ == "vizkit_plugins.train"
    assert "hello" not in cli.commands  # two third-party plugins: neither
    assert app.commands == {"train": "train"}
    assert any("command 'list' of plugin 'impostor'" in w and "vizkit itself" in w for w in app.warnings)
    assert any("command 'train' of plugin 'impostor'" in w for w in app.warnings)
    assert app.status("rival").error and "'hello'" in app.status("rival").error

    code, out, err = run_cli(app, "list", "analyses")
    assert code == 0 and "impostor list" not in out
    assert err.count("vizkit: warning: ") == 3


# ---------------------------------------------------------------------- failures inside plugins
def explode(ctx: vizkit.RunContext) -> vizkit.Result:
    return _deeper()


def _deeper() -> vizkit.Result:
    raise ValueError("bad value\nsecond line")


def test_a_failing_plugin_analysis_is_one_line_naming_the_plugin(run_cli, tmp_path):
    broken = plugin(
        "broken_pkg",
        register_analyses=lambda register: register(analysis("explode", explode)),
        register_models=tiny_models,
    )
    app = vizkit.make_app(extra=[("broken", broken)])
    code, _, err = run_cli(app, "run", "explode", "--model", "tiny", "--out", tmp_path / "o", "--quiet")
    assert code == 1
    line = one_error_line(err)
    assert line.startswith(
        "vizkit: error: plugin 'broken' failed in analysis 'explode': ValueError: bad value second line"
    )
    assert "not in vizkit" in line and "VIZKIT_DEBUG=1" in line


def test_a_failing_plugin_model_factory_is_one_line(run_cli, tmp_path):
    def factory() -> nn.Module:
        raise RuntimeError("cannot build")

    broken = plugin(
        "broken_pkg",
        register_models=lambda register: register(vizkit.ModelEntry("fragile", factory)),
        register_model_sources=lambda register: register(
            vizkit.ModelSource("fragile-src", lambda rest: {}["missing"], "fragile:<x>", prefix="fragile")
        ),
    )
    app = vizkit.make_app(extra=[("broken", broken)])
    code, _, err = run_cli(app, "layers", "fragile")
    assert code == 1
    assert one_error_line(err).startswith("vizkit: error: plugin 'broken' failed in model 'fragile': RuntimeError: ")
    code, _, err = run_cli(app, "layers", "fragile:3")
    assert code == 1
    assert one_error_line(err).startswith(
        "vizkit: error: plugin 'broken' failed in model source 'fragile-src': KeyError: 'missing'"
    )


def test_a_failing_plugin_rule_is_blamed_on_its_plugin_not_the_analysis(run_cli, tmp_path, photo_path):
    rules = plugin(
        "rules_pkg",
        register_rules=lambda register: register(Rule("fragile", fail=True)),
        register_models=tiny_models,
    )
    app = vizkit.make_app(extra=[("rules", rules)])
    argv = ["run", "deconvnet", "--model", "tiny", "--image", photo_path, "--layer", "conv2"]
    code, _, err = run_cli(app, *argv, "--top", "1", "--rule", "fragile", "--out", tmp_path / "o", "--quiet")
    assert code == 1
    line = one_error_line(err)
    assert line.startswith("vizkit: error: plugin 'rules' failed in projection rule 'fragile': ValueError:"), line


def test_a_failing_builtin_analysis_is_a_bug_in_vizkit(run_cli, tmp_path):
    app = vizkit.make_app(extra=[("models", plugin("models_pkg", register_models=tiny_models))])
    app.analyses["filters"] = dataclasses.replace(app.analyses["filters"], run=lambda ctx, **options: 1 / 0)
    code, _, err = run_cli(app, "run", "filters", "--model", "tiny", "--out", tmp_path / "o", "--quiet")
    assert code == 1
    line = one_error_line(err)
    assert line.startswith("vizkit: error: analysis 'filters' failed: ZeroDivisionError: division by zero")
    assert "a bug in vizkit" in line


PICKY_MODEL = """
import torch
from torch import nn


class Picky(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, stride=4)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.abs().sum() > 0:  # the blank check forward passes, a real image does not
            raise KeyError("picky")
        return self.fc(self.conv2(torch.relu(self.conv(x))).mean((2, 3)))


def build():
    return Picky()
"""


def test_an_error_in_the_users_model_names_their_file_not_vizkit(run_cli, tmp_path, photo_path):
    (tmp_path / "picky.py").write_text(PICKY_MODEL)
    app = vizkit.make_app()
    argv = ["run", "deconvnet", "--model", f"{tmp_path / 'picky.py'}:build", "--image", photo_path]
    code, _, err = run_cli(app, *argv, "--layer", "conv2", "--top", "1", "--out", tmp_path / "o", "--quiet")
    assert code == 1
    line = one_error_line(err)
    assert line.startswith("vizkit: error: analysis 'deconvnet' failed: KeyError: 'picky'"), line
    assert f"{tmp_path / 'picky.py'}:" in line and "in forward" in line and "bug in vizkit" not in line


def test_user_errors_stay_user_errors(run_cli):
    def strict(ctx: vizkit.RunContext) -> vizkit.Result:
        raise vizkit.UsageError("--thing must be positive")

    app = vizkit.make_app(
        extra=[
            (
                "strict",
                plugin(
                    "strict_pkg",
                    register_analyses=lambda register: register(analysis("strict", strict)),
                    register_models=tiny_models,
                ),
            )
        ]
    )
    code, _, err = run_cli(app, "run", "strict", "--model", "tiny", "--quiet")
    assert code == 2 and one_error_line(err) == "vizkit: error: --thing must be positive"


def test_debug_adds_the_traceback_in_process(run_cli, monkeypatch, tmp_path):
    broken = plugin(
        "broken_pkg",
        register_analyses=lambda register: register(analysis("explode", explode)),
        register_models=tiny_models,
    )
    app = vizkit.make_app(extra=[("broken", broken)])
    monkeypatch.setenv("VIZKIT_DEBUG", "1")
    code, _, err = run_cli(app, "run", "explode", "--model", "tiny", "--out", tmp_path / "o", "--quiet")
    assert code == 1
    assert "Traceback (most recent call last)" in err and "in _deeper" in err
    assert err.strip().splitlines()[-1].startswith("vizkit: error: plugin 'broken' failed in analysis 'explode'")


def test_debug_shows_the_traceback_of_a_user_error_in_a_subprocess():
    command = [sys.executable, "-m", "vizkit", "run", "no-such-analysis"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "VIZKIT_DEBUG": "1"})
    assert done.returncode == 2, done.stderr
    assert "Traceback (most recent call last)" in done.stderr and "UsageError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("vizkit: error: unknown analysis 'no-such-analysis'")


# ---------------------------------------------------------------------- results a plugin returns
@pytest.mark.parametrize(
    ("result", "message"),
    [
        (vizkit.Result("bad", summary={"model": "mine"}), "reserved result key"),
        (vizkit.Result("bad", summary={"tags": {"a", "b"}}), "JSON cannot hold: Object of type set"),
        (vizkit.Result("bad", figures={"sub/figure": object()}), "names a figure 'sub/figure'"),
    ],
)
def test_a_result_that_cannot_be_saved_leaves_the_previous_one(tmp_path, result, message):
    """The summary is checked before anything is written: a plugin's unsavable result used to
    delete the previous result.json (with --overwrite) and leave its own arrays behind."""
    vizkit.Result("good", summary={"value": 1}, arrays={"a": torch.ones(2).numpy()}).save(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    result.arrays = {"b": torch.zeros(3).numpy()}
    with pytest.raises(vizkit.VizkitError, match=message):
        result.save(tmp_path, overwrite=True)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_tensors_in_a_summary_are_saved_as_numbers(tmp_path):
    summary = {"scores": torch.ones(2, requires_grad=True), "best": torch.tensor(2.5), "n": torch.tensor(3)}
    vizkit.Result("tensors", summary=summary).save(tmp_path)
    document, _ = vizkit.load_result(tmp_path)
    assert (document["scores"], document["best"], document["n"]) == ([1.0, 1.0], 2.5, 3)


def test_a_plugin_left_out_is_named_when_its_name_is_asked_for():
    """A misspelt hook or a registration that raises leaves the plugin out; asking for what it
    meant to add then says so, rather than only that the name is unknown."""
    typo = plugin("typo_pkg", register_analysis=lambda register: register(analysis("mine")))
    raises = plugin("raises_pkg", register_models=lambda register: 1 / 0)
    good = plugin("good_pkg", register_analyses=lambda register: register(analysis("fine")))
    app = vizkit.make_app(entry_point_group=None, extra=[("typo", typo), ("raises", raises), ("good", good)])
    assert "did you mean register_analyses" in app.status("typo").error
    assert "ZeroDivisionError" in app.status("raises").error
    assert "fine" in app.analyses and app.status("good").error is None
    for ask in (lambda: app.analysis("mine"), lambda: vizkit.load_model("mine", app=app), lambda: app.rule("mine")):
        with pytest.raises(
            vizkit.UsageError, match=r"plugin\(s\) 'typo', 'raises' failed to load.*vizkit list plugins"
        ):
            ask()
    clean = vizkit.make_app(entry_point_group=None, extra=[("good", good)])
    with pytest.raises(vizkit.UsageError) as caught:
        clean.analysis("mine")
    assert "failed to load" not in str(caught.value)
