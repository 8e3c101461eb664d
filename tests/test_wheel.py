"""Packaging: the wheel built from the checkout holds every package, the bundled weights and the
report's unit browser, and once installed into a fresh venv (outside the checkout, so the source
tree cannot be imported) it finds its ten built-in plugins and runs ``vizkit demo --quick`` on the
weights inside the installed package.

The fresh venv gets the dependencies the way ``scripts/setup.sh`` gives a checkout its own: a
``.pth`` file adding the site folders this test's torch, matplotlib, ... come from (nothing is
downloaded); the wheel itself goes in with ``pip install --no-deps --no-index``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (setup.sh needs it too)

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
ENTRY_POINTS = PYPROJECT["project"]["entry-points"]["vizkit"]
# the top-level modules of vizkit's dependencies: the fresh venv reads them where this Python does
DEPENDENCIES = ("torch", "torchvision", "captum", "matplotlib", "click", "pluggy", "tqdm", "numpy", "PIL")
# in the source tree, never in the wheel
SKIPPED_PARTS = {"__pycache__"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def _source_roots() -> dict[str, Path]:
    """Top-level package name -> its folder in the checkout (pyproject's package-dir)."""
    return {name: REPO / folder for name, folder in SETUPTOOLS["package-dir"].items()}


def _package_files(root: Path) -> list[Path]:
    """The files below a package folder that the wheel must carry (sources and data)."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not SKIPPED_PARTS & set(path.parts) and path.suffix not in SKIPPED_SUFFIXES
    )


def _wheel_name(package: str, path: Path) -> str:
    """Where ``path`` (below ``package``'s source folder) lands in the wheel."""
    return "/".join([package, *path.relative_to(_source_roots()[package]).parts])


# ------------------------------------------------------------------------------ fast checks of pyproject
def test_pyproject_lists_every_package_folder():
    """A folder missing from [tool.setuptools] packages is silently left out of the wheel (its
    modules or data missing once installed), so every folder holding a file is listed."""
    listed = set(SETUPTOOLS["packages"])
    needed = set()
    for package, root in _source_roots().items():
        for path in _package_files(root):
            needed.add(".".join([package, *path.parent.relative_to(root).parts]))
    assert needed - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - needed == set(), "pyproject.toml lists packages that do not exist"


def test_entry_points_name_existing_plugin_modules():
    assert len(ENTRY_POINTS) == 16  # the built-in plugins, cdbn the newest
    plugins = _source_roots()["vizkit_plugins"]
    for name, target in ENTRY_POINTS.items():
        module = target.split(":")[0].removeprefix("vizkit_plugins.")
        assert (plugins / f"{module}.py").is_file() or (plugins / module / "__init__.py").is_file(), name


# ------------------------------------------------------------------------------ the wheel, installed
def _copy_checkout(destination: Path) -> None:
    """The checkout's files (tracked, and new ones git does not ignore) without build leftovers:
    setuptools' build/ folder never deletes a removed module, and the build writes nothing here."""
    listed = None
    if (REPO / ".git").exists() and shutil.which("git"):
        ran = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=False,
        )
        if ran.returncode == 0:
            listed = [name for name in ran.stdout.decode().split("\0") if name]
    if listed is None:  # not a git checkout: everything but the usual leftovers
        ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc")
        shutil.copytree(REPO, destination, ignore=ignore)
        return
    for name in listed:
        source = REPO / name
        if source.is_file():  # a file deleted but not yet staged is listed and absent
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    ran = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    assert ran.returncode == 0, f"{' '.join(map(str, command))} failed:\n{ran.stdout}\n{ran.stderr}"
    return ran


def _dependency_sites() -> list[str]:
    """The site folders this Python imports vizkit's dependencies from."""
    sites = []
    for module in DEPENDENCIES:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"{module} is not importable here"
        site = str(Path(spec.origin).resolve().parents[1])
        if site not in sites:
            sites.append(site)
    return sites


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_demo(tmp_path):
    start = time.perf_counter()
    source, dist = tmp_path / "source", tmp_path / "dist"
    _copy_checkout(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(source)], 300)
    (wheel,) = dist.glob("vizkit-*.whl")
    built = time.perf_counter()

    # what the wheel holds: every file of every package folder (modules, weights, browser.css/js)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    copied = {name: source / root.relative_to(REPO) for name, root in _source_roots().items()}
    expected = {
        "/".join([package, *path.relative_to(root).parts])
        for package, root in copied.items()
        for path in _package_files(root)
    }
    assert expected - names == set(), "files of the checkout missing from the wheel"
    assert {
        "vizkit/models/weights/zfnet_compact_imagenette.pt",
        "vizkit/models/weights/zfnet_compact_imagenette.json",
        "vizkit_plugins/top9/browser.css",
        "vizkit_plugins/top9/browser.js",
    } <= names
    for name, target in ENTRY_POINTS.items():
        assert f"{name} = {target}" in entry_points
    assert "vizkit = vizkit.app.cli:main" in entry_points

    # a fresh venv: its own site-packages, the dependencies through a .pth file, the wheel
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], 120)
    scripts = Path(sysconfig.get_path("scripts", vars={"base": str(venv), "platbase": str(venv)}))
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 60).stdout.strip()
    )
    lines = [f"import site; site.addsitedir({path!r})" for path in _dependency_sites()]
    (site / "_vizkit_dependencies.pth").write_text("\n".join(lines) + "\n")
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], 300)

    # run from a folder outside the checkout, with nothing pointing back at it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"} and not key.startswith("VIZKIT_")
    }
    env.update(
        PATH=f"{scripts}{os.pathsep}{env.get('PATH', '')}",
        MPLBACKEND="Agg",
        PYTHONWARNINGS="ignore::FutureWarning",
        VIZKIT_SHARED=str(tmp_path / "no-shared-data"),  # the demo falls back to matplotlib's photograph
        VIZKIT_CACHE=str(tmp_path / "cache"),
    )
    where = _run(
        [
            str(python),
            "-c",
            "import json, importlib.metadata as m, vizkit, vizkit_plugins, vizkit.models.bundled;"
            "print(json.dumps([vizkit.__file__, vizkit_plugins.__file__, str(m.distribution('vizkit').locate_file(''))]))",
        ],
        120,
        cwd=elsewhere,
        env=env,
    )
    for path in json.loads(where.stdout):
        assert Path(path).resolve().is_relative_to(site.resolve()), f"{path} is not the installed copy"

    vizkit = str(scripts / "vizkit")
    plugins = json.loads(_run([vizkit, "list", "plugins", "--json"], 120, cwd=elsewhere, env=env).stdout)
    found = {p["name"]: p for p in plugins if p["name"] != "builtin"}
    assert set(found) == set(ENTRY_POINTS), plugins
    assert all(p["status"] == "ok" and p["distribution"] == "vizkit 0.1.0" for p in found.values()), plugins
    analyses = _run([vizkit, "list", "analyses"], 120, cwd=elsewhere, env=env).stdout
    # every entry point but four adds an analysis: train adds a command, timm a model source, adn and cdbn both
    expected = set(ENTRY_POINTS) - {"train", "timm", "adn", "cdbn"}
    assert {line.split()[0] for line in analyses.splitlines() if line.strip()} == expected
    models = _run([vizkit, "list", "models"], 120, cwd=elsewhere, env=env).stdout
    assert "timm:" in models and "adn:" in models and "cdbn:" in models

    installed = time.perf_counter()
    out = elsewhere / "demo"
    demo = _run([vizkit, "demo", "--quick", "--out", str(out)], 600, cwd=elsewhere, env=env)
    record = json.loads((out / "demo.json").read_text())
    ran = [name for name, entry in record["analyses"].items() if entry["status"] == "ok"]
    assert {"deconvnet", "filters", "occlusion", "top9"} <= set(ran), demo.stderr
    assert not [name for name, entry in record["analyses"].items() if entry["status"] not in ("ok", "skipped")]
    for name in ran:
        document = json.loads((out / name / "result.json").read_text())
        if document.get("model"):  # the bundled weights, read from the installed package
            weights = Path(document["model"]["weights"]).resolve()
            assert weights.is_relative_to(site.resolve()) and weights.name == "zfnet_compact_imagenette.pt", name
    page = (out / "index.html").read_text()
    browser = (site / "vizkit_plugins" / "top9" / "browser.js").read_text()
    assert browser[:200] in page  # the unit browser, from the installed package
    now = time.perf_counter()
    print(
        f"wheel: built {built - start:.1f} s, installed and plugins listed {installed - built:.1f} s, "
        f"demo {now - installed:.1f} s; total {now - start:.1f} s"
    )
