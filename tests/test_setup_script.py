"""scripts/setup.sh's choice of torch build, run for real against a stand-in Python.

Nothing is installed: the script runs in a copy of the checkout's layout (scripts/setup.sh and
pyproject.toml in a temporary folder, so the real .venv is never touched), with ``PYTHON`` a
wrapper whose ``-m venv`` makes environments whose ``python`` only records each pip command
line. The tests read those command lines: with ``--cpu`` torch and torchvision are asked of
torch's CPU index and everything else of PyPI; without it, nothing names another index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as setup.sh itself needs

CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# what `$PYTHON -m venv DIR` makes DIR/bin/python: a stand-in that records pip's arguments
ENV_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then
    if [ -n "${{FAIL_INDEX_URL:-}}" ] && [[ " $* " == *" --index-url "* ]]; then
        echo "ERROR: Could not find a version that satisfies the requirement torch" >&2  # an unreachable index
        exit 1
    fi
    "{real}" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$(dirname "$(dirname "$0")")" "${{@:3}}" >>"$PIP_LOG"
    [ "$3" = show ] && exit 1  # `pip show vizkit`: not installed there
    exit 0
fi
if [ "$1" = -c ]; then  # setup.sh's site_of: where the environment's packages go
    mkdir -p "$(dirname "$0")/../site-packages" && cd "$(dirname "$0")/../site-packages" && pwd
    exit 0
fi
echo "stand-in python: unexpected $*" >&2
exit 1
"""

# $PYTHON: makes stand-in environments, runs setup.sh's inline Python with the real one
SYSTEM_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = venv ]; then
    target="${{@: -1}}"
    mkdir -p "$target/bin"
    cp "{env_python}" "$target/bin/python"
    chmod +x "$target/bin/python"
    exit 0
fi
exec "{real}" "$@"
"""


@pytest.fixture
def setup(tmp_path):
    """Run a copy of scripts/setup.sh with arguments and variables; returns (exit status, stderr,
    the pip command lines as [environment, *pip arguments])."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not available")
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", checkout / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", checkout / "pyproject.toml")
    env_python = tmp_path / "env-python"
    env_python.write_text(ENV_PYTHON.format(real=sys.executable))
    system_python = tmp_path / "python"
    system_python.write_text(SYSTEM_PYTHON.format(real=sys.executable, env_python=env_python))
    system_python.chmod(0o755)
    log = tmp_path / "pip.log"

    def run(*args: str, **variables: str) -> tuple[int, str, list[list[str]]]:
        log.write_text("")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VIZKIT_TORCH", "VIRTUAL_ENV"))}
        environment = {
            **base,
            "PYTHON": str(system_python),
            "VIZKIT_ENV_CACHE": str(tmp_path / "cache"),
            "PIP_LOG": str(log),
            **variables,
        }
        ran = subprocess.run(
            ["bash", str(checkout / "scripts" / "setup.sh"), *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return ran.returncode, ran.stderr, calls

    run.checkout = checkout  # type: ignore[attr-defined]
    return run


def dependencies() -> tuple[list[str], list[str]]:
    """(torch and torchvision, everything else) as pyproject.toml lists them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    every = project["dependencies"] + project["optional-dependencies"]["test"]
    torch = [d for d in every if d.split(">")[0].split("=")[0].strip() in ("torch", "torchvision")]
    return torch, [d for d in every if d not in torch]


def installs(calls: list[list[str]]) -> list[list[str]]:
    """The dependency installs into the cached environment: not pip's own upgrade, not the
    checkout's editable install."""
    return [c for c in calls if c[1] == "install" and "--upgrade" not in c and "-e" not in c]


def test_cpu_asks_torch_of_its_cpu_index_and_the_rest_of_pypi(setup):
    torch, rest = dependencies()
    assert len(torch) == 2 and rest  # torch and torchvision
    status, err, calls = setup("--cpu")
    assert status == 0, err
    first, second = installs(calls)
    assert first[first.index("--index-url") + 1] == CPU_INDEX and first[-2:] == torch
    assert "--index-url" not in second and "--extra-index-url" not in second and second[-len(rest) :] == rest
    assert not any(d in second for d in torch)
    assert "torch's CPU build" in err and "torch: cpu build" in err
    assert (setup.checkout / ".venv" / "vizkit-torch").read_text().strip() == "cpu"
    # the editable install of the checkout goes into its own .venv
    assert any("-e" in c and c[-1] == str(setup.checkout) for c in calls)


def test_default_names_no_other_index_and_keeps_its_cache_key(setup):
    torch, rest = dependencies()
    status, err, calls = setup()
    assert status == 0, err
    (only,) = installs(calls)
    assert not any("index-url" in a for c in calls for a in c)
    assert only[-len(torch) - len(rest) :] == torch + rest
    # the key of a default environment is what it was before --cpu existed: caches stay valid
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = sorted(project["dependencies"]) + sorted(project["optional-dependencies"]["test"])
    version = sys.version.split()[0]
    key = hashlib.sha256("\n".join([version, *deps]).encode()).hexdigest()[:16]
    assert Path(only[0]).name == f"venv-{key}"


def test_cpu_is_another_environment_and_is_remembered(setup, tmp_path):
    status, _, cpu_calls = setup("--cpu")
    cpu_env = installs(cpu_calls)[0][0]
    status, err, calls = setup()  # a plain run (e.g. .ci/run) keeps the checkout's choice
    assert status == 0 and installs(calls) == [] and f"dependencies from {cpu_env};" in err, err
    status, err, calls = setup("--pypi-torch")  # back to PyPI's: another environment
    (pypi,) = installs(calls)
    assert status == 0 and pypi[0] != cpu_env and "index-url" not in " ".join(pypi)
    assert (setup.checkout / ".venv" / "vizkit-torch").read_text().strip() == "pypi"
    status, err, calls = setup(VIZKIT_TORCH="cpu")  # the variable, like --cpu: the CPU environment again
    assert status == 0 and installs(calls) == [] and f"dependencies from {cpu_env};" in err, err
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([Path(cpu_env).name, Path(pypi[0]).name])


def test_another_cpu_index_reaches_pip_and_the_key(setup):
    mirror = "https://mirror.example/torch-cpu"
    _, _, default_cpu = setup("--cpu")
    status, err, calls = setup("--cpu", VIZKIT_TORCH_CPU_INDEX=mirror)
    assert status == 0, err
    first = installs(calls)[0]
    assert first[first.index("--index-url") + 1] == mirror and first[0] != installs(default_cpu)[0][0]


def test_bad_choices_are_refused(setup):
    status, err, calls = setup("--gpu")
    assert status == 2 and "unknown option '--gpu'" in err and "--cpu" in err and calls == []
    status, err, calls = setup(VIZKIT_TORCH="cuda")
    assert status == 2 and "VIZKIT_TORCH must be cpu or pypi" in err and calls == []
    status, _, _ = setup("--help")
    assert status == 0


def test_an_unreachable_cpu_index_says_so(setup, tmp_path):
    status, err, _ = setup("--cpu", FAIL_INDEX_URL="1")
    assert status == 1 and "could not install torch's CPU build from " + CPU_INDEX in err, err
    assert not any((tmp_path / "cache").glob("venv-*/.complete"))  # a later run builds it again
