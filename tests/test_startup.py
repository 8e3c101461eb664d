"""Start-up stays light: ``import vizkit`` and building the command line (``--help``, ``list``,
``run ANALYSIS --help``, which import every plugin to read its options) leave the heavy libraries
unimported: torchvision (which imports torch._dynamo: seconds), matplotlib, captum, scikit-learn,
scipy. They load where they are used. Checked on ``sys.modules`` in a fresh interpreter, not by
the clock, so the test is reliable on a busy machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vizkit

HEAVY = ("torchvision", "matplotlib", "captum", "sklearn", "scipy", "torch._dynamo")

SCRIPT = f"""
import contextlib, io, json, sys
heavy = {HEAVY!r}
loaded = lambda: sorted(name for name in heavy if name in sys.modules)
report = {{}}
import vizkit
report["import vizkit"] = loaded() + (["torch"] if "torch" in sys.modules else [])
import vizkit.app.cli as cli
report["import vizkit.app.cli"] = loaded()
cli.build_cli(cli.make_app())
report["build_cli"] = loaded()
for argv in (["--help"], ["list"], ["run", "top9", "--help"], ["run", "invariance", "--help"], ["train", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    report[" ".join(argv)] = loaded() + ([] if code == 0 else [f"exit status {{code}}"])
print(json.dumps(report))
"""


def test_the_command_line_starts_without_heavy_imports():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {step: [] for step in report}, report  # each step: what it imported that it should not
    assert len(report) == 8


def test_every_public_name_resolves_lazily():
    assert "__getattr__" in vars(vizkit)  # PEP 562: names are imported on first use
    lazy = set(vizkit._LAZY)
    eager = {"UsageError", "VizkitError", "hookimpl", "__version__"}
    assert lazy | eager == set(vizkit.__all__) and not lazy & eager
    assert set(vizkit.__all__) <= set(dir(vizkit))
    for name in vizkit.__all__:
        assert getattr(vizkit, name) is not None
    assert vizkit.toolkit.figures is sys.modules["vizkit.toolkit.figures"]
    assert vizkit.models.describe is vizkit.models.describe
    with pytest.raises(AttributeError, match="no_such_name"):
        vizkit.no_such_name  # noqa: B018
