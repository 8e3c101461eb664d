"""The architecture: layering, the public API of plugins, every hook exercised, scoped settings,
no global side effects, and the window arithmetic every engine shares."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import helpers
import vizkit
import vizkit.app.cli
from helpers import assert_no_hooks, settings_probe, shipped_photos
from vizkit.engine.geometry import Window, conv_window, pool_window
from vizkit.framework import hookspecs

REPO = Path(__file__).resolve().parents[1]

# lowest first; a module may import its own layer and the layers below it, never above
LAYERS = [
    {"vizkit.errors", "vizkit.version", "vizkit._lazy"},
    {"vizkit.engine"},
    {"vizkit.data"},
    {"vizkit.models"},
    {"vizkit.framework"},
    {"vizkit.toolkit"},
    {"vizkit.app"},
]


def _layer_of(module: str) -> int | None:
    for index, names in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in names):
            return index
    return None


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]  # `from vizkit import models`
    return found


def test_lower_layers_never_import_higher_ones():
    problems = []
    for path in sorted((REPO / "vizkit").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        if module in ("vizkit", "vizkit.__main__"):  # the public API and the entry point sit on top
            continue
        own = _layer_of(module)
        assert own is not None, f"{module} belongs to no layer: add it to LAYERS and to vizkit/__init__'s list"
        for imported in _imports(path):
            if imported == "vizkit" and own < len(LAYERS) - 1:  # the app may use the public API
                problems.append(f"{module} imports the vizkit package itself (which imports every layer)")
            target = _layer_of(imported)
            if target is not None and target > own:
                problems.append(f"{module} (layer {own}) imports {imported} (layer {target})")
    assert not problems, "\n".join(problems)


NAMESPACES = ("data", "engine", "framework", "models", "toolkit")


def _public(path: str) -> bool:
    """Whether a dotted name under ``vizkit`` is public API: a top-level name, a name a public
    sub-namespace lists in ``__all__``, or a public attribute of a public module there
    (``vizkit.toolkit.figures.show``)."""
    parts = path.split(".")
    if parts[0] != "vizkit":
        return True
    if len(parts) == 1:
        return True
    if parts[1] not in vizkit.__all__:
        return False
    if len(parts) == 2:
        return True
    if parts[1] not in NAMESPACES:  # an attribute of a top-level class or function: its own business
        return not parts[2].startswith("_")
    namespace = importlib.import_module(f"vizkit.{parts[1]}")
    if parts[2] not in namespace.__all__:
        return False
    value = getattr(namespace, parts[2])
    return len(parts) == 3 or not isinstance(value, types.ModuleType) or not parts[3].startswith("_")


def _reached(path: Path) -> set[str]:
    """Every ``vizkit....`` a file imports or reaches by attribute (``vizkit.data.ensure_device``)."""
    tree = ast.parse(path.read_text())
    found = {name for name in _imports(path) if name.split(".")[0] == "vizkit"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):  # inner nodes add the chain's prefixes: public when it is
            chain = []
            value: ast.expr = node
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "vizkit":
                found.add(".".join(["vizkit", *reversed(chain)]))
    return found


def _plugin_files() -> list[Path]:
    return sorted([*(REPO / "plugins").rglob("*.py"), *(REPO / "examples").rglob("*.py")])


def test_built_in_plugins_use_only_the_public_api():
    """Plugins (and the examples) reach nothing that is not public: not by import, and not by
    attribute reach-through into a module below a namespace (``vizkit.data.ensure_device``)."""
    problems = []
    for path in _plugin_files():
        for name in sorted(_reached(path)):
            # a chain is checked as far as it names vizkit's own objects (methods of a public class are fine)
            if not _public(".".join(name.split(".")[:4])):
                problems.append(f"{path.relative_to(REPO)} reaches {name}")
    assert not problems, "\n".join(problems)


def test_the_public_api_check_catches_reach_through(tmp_path):
    reach = tmp_path / "reach.py"
    reach.write_text("import vizkit\nvizkit.data.decode.load_image\nvizkit.engine.recorder.Recorder\n")
    assert {n for n in _reached(reach) if not _public(n)} == {
        "vizkit.data.decode",  # a module below a namespace is internal: its chain is refused from there on
        "vizkit.data.decode.load_image",
        "vizkit.engine.recorder",
        "vizkit.engine.recorder.Recorder",
    }
    fine = tmp_path / "fine.py"
    fine.write_text(
        "import vizkit\nfrom vizkit.toolkit import figures\nvizkit.toolkit.figures.show\nvizkit.Result.save\n"
    )
    assert all(_public(n) for n in _reached(fine))


def test_sub_namespaces_resolve_every_public_name():
    for namespace in NAMESPACES:
        module = importlib.import_module(f"vizkit.{namespace}")
        assert module.__doc__ and len(module.__all__) == len(set(module.__all__)), namespace
        for name in module.__all__:
            assert getattr(module, name) is not None, f"vizkit.{namespace}.{name}"
            assert name in dir(module)


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module and of its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            value = first.value if isinstance(first, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def _identifiers(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, ast.alias):
        return [node.asname or node.name]
    return []


def test_the_app_layer_names_no_built_in_analysis():
    """An analysis owns what is particular to it, its report view included: no module of the
    core's app layer (the CLI, demo, report shell) spells a built-in analysis's name in a string
    or an identifier (``"top9"``, ``probes_view``), or imports a built-in plugin; docstrings may
    mention one as an example."""
    app = vizkit.make_app()
    names = {name for name, analysis in app.analyses.items() if app.is_builtin(analysis.plugin)}
    assert {"top9", "probes", "correspondence", "attribution", "deconvnet", "occlusion"} <= names
    word = re.compile(r"(?<![a-z0-9])(" + "|".join(map(re.escape, sorted(names))) + r")(?![a-z0-9])", re.IGNORECASE)
    problems = []
    for path in sorted((REPO / "vizkit" / "app").rglob("*.py")):
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            line = getattr(node, "lineno", "?")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                found = word.search(node.value)
                if found:
                    problems.append(f"{path.name}:{line} says {found.group()!r}")
            for identifier in _identifiers(node):
                found = word.search(identifier.replace("_", " "))
                if found:
                    problems.append(f"{path.name}:{line} has the identifier {identifier!r}")
        problems += [f"{path.name} imports {name}" for name in _imports(path) if name.startswith("vizkit_plugins")]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------- plugin hooks
class Absolute(vizkit.ProjectionRule):
    """A rule only a test would want: the magnitude of the signal crosses each ReLU."""

    name = "absolute"
    title = "Absolute-value projections"
    description = "test rule"
    uses_forward_input = False

    def relu_down(self, signal, forward_input):
        return signal.abs()


def tiny_net(width: int) -> nn.Module:
    """The shared tiny net with a max-pool and two ReLU convs, 4 classes, seeded by its width."""
    return helpers.tiny_net(width, 4, seed=width, stride=2, max_pool=True, conv2_padding=1, relu2=True)


def echo(ctx: vizkit.RunContext, word: str) -> vizkit.Result:
    return vizkit.Result(summary={"word": word})


class EveryHook:
    """A plugin implementing every hook spec vizkit has."""

    @vizkit.hookimpl
    def register_analyses(self, register):
        register(vizkit.Analysis("echo", "repeat a word", echo, [vizkit.Option("word", str, "hi")], inputs="none"))

    @vizkit.hookimpl
    def register_models(self, register):
        register(vizkit.ModelEntry("tiny-8", lambda: tiny_net(8), "a tiny net"))

    @vizkit.hookimpl
    def register_model_sources(self, register):
        register(
            vizkit.ModelSource("tiny", lambda rest: tiny_net(int(rest)), "tiny:<width>", "tiny nets", prefix="tiny")
        )

    @vizkit.hookimpl
    def register_rules(self, register):
        register(Absolute())

    @vizkit.hookimpl
    def register_map_methods(self, register):
        register(
            vizkit.MapMethod(
                "blank", "an all-zero map", lambda request: torch.zeros(request.x.shape[0], *request.x.shape[-2:])
            )
        )

    @vizkit.hookimpl
    def register_commands(self, cli):
        import click

        @cli.command("hello")
        def hello() -> None:
            click.echo("hello from a plugin")


def specs() -> set[str]:
    return {name for name in dir(hookspecs) if name.startswith("register_")}


def test_every_hook_spec_is_exercised_by_the_test_plugin(monkeypatch, capsys, tmp_path):
    # a new hook spec fails here until EveryHook (and the checks below) exercise it
    assert specs() == {name for name in dir(EveryHook) if name.startswith("register_")}
    app = vizkit.make_app(extra=[("every-hook", EveryHook())])
    assert all(status.error is None for status in app.statuses), app.statuses
    assert app.analyses["echo"].plugin == "every-hook"
    assert app.models["tiny-8"].plugin == "every-hook"
    assert app.model_sources["tiny"].plugin == "every-hook"
    assert app.rules["absolute"].plugin == "every-hook"
    assert app.map_methods["blank"].plugin == "every-hook"
    assert vizkit.run("echo", tiny_net(2), app=app, word="yo")["word"] == "yo"  # register_analyses
    assert vizkit.load_model("tiny-8", app=app).fc.in_features == 8  # register_models
    assert vizkit.load_model("tiny:5", app=app).fc.in_features == 5  # register_model_sources
    sanity = vizkit.run(
        "sanity", tiny_net(2), images=torch.randn(1, 3, 16, 16), app=app, method="blank", metrics="none"
    )
    assert sanity["all_zero"]["blank"] == [[0, 1, 2, 3]]  # register_map_methods: trained and 3 steps, all zero
    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: app)
    assert vizkit.app.cli.main(["hello"]) == 0  # register_commands
    assert "hello from a plugin" in capsys.readouterr().out
    assert vizkit.app.cli.main(["layers", "tiny:6", "--json"]) == 0  # a plugin's spec form on the CLI
    assert [layer["name"] for layer in json.loads(capsys.readouterr().out)][:3] == ["conv", "relu", "pool"]
    assert vizkit.app.cli.main(["list", "models"]) == 0
    assert "tiny:<width>" in capsys.readouterr().out


def test_a_plugin_rule_drives_both_projection_paths_and_the_cli(monkeypatch, capsys, tmp_path, photo_path):
    # register_rules: one class, and both paths and every --rule option know it
    app = vizkit.make_app(extra=[("every-hook", EveryHook())])
    model = tiny_net(6).eval()
    x = torch.randn(2, 3, 33, 33)
    with vizkit.instrument(model) as im:
        im(x)
        auto = vizkit.project(im, x, "relu2", [0, 3], rule=app.rule("absolute"))
        explicit = vizkit.project(im, x, "relu2", [0, 3], rule=app.rule("absolute"), method="explicit")
        plain = vizkit.project(im, x, "relu2", [0, 3])
    assert torch.allclose(auto.images, explicit.images, atol=1e-6)
    assert not torch.allclose(auto.images, plain.images)  # the rule changed what crossed the ReLU
    assert_no_hooks(model)

    monkeypatch.setattr(vizkit.app.cli, "make_app", lambda: app)
    out = tmp_path / "absolute"
    argv = [
        "run",
        "deconvnet",
        "--model",
        "zfnet-compact",
        "--image",
        str(photo_path),
        "--layer",
        "conv2",
        "--top",
        "2",
        "--rule",
        "absolute",
        "--out",
        str(out),
        "--quiet",
    ]
    assert vizkit.app.cli.main(argv) == 0
    document, _arrays = vizkit.load_result(out)
    assert document["params"]["rule"] == "absolute" and document["rule"] == "absolute"
    assert vizkit.app.cli.main(["run", "deconvnet", "--help"]) == 0
    assert "absolute" in capsys.readouterr().out
    assert vizkit.app.cli.main([*argv[:-4], "--rule", "nosuch", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(vizkit.UsageError, match="--rule must be one of"):
        vizkit.run("deconvnet", vizkit.load_model("zfnet-compact"), images=[photo_path], layer="conv2", rule="nosuch")


# ------------------------------------------------------------------------------- scoped settings
ANALYSES = {
    "deconvnet": {"images": True, "layer": "conv3", "top": 2},
    "occlusion": {"images": True, "size": 48, "stride": 48, "mode": "batched"},
    "attribution": {"images": True, "method": "saliency,guidedbackprop,layergradcam", "deletion_steps": 2},
    "sanity": {
        "images": True,
        "method": "deconvnet,saliency,layergradcam",
        "layers": "conv5,fc8",
        "metrics": "deletion",
        "deletion_steps": 2,
    },
    "filters": {"images": True},
    "top9": {"data": True, "layer": "conv3", "channels": "0-3", "k": 2, "workers": 0, "patch_size": 16},
    "atlas": {"tree": True, "layers": "conv2,conv5,fc6", "k": 2, "workers": 0, "patch_size": 16},
    "featvis": {"data": True, "layer": "conv2", "units": "0-1", "steps": 3, "size": 32, "workers": 0, "shown": 2},
    "correspondence": {"landmarks": True, "layers": "conv3,fc7", "random": 2, "size": 30},
    "invariance": {"images": True, "layers": "conv1,fc7", "steps": 3, "transforms": "translate,rotate"},
    "probes": {
        "tree": True,
        "layers": "conv5,fc7",
        "train_per_class": 2,
        "test_per_class": 1,
        "folds": 1,
        "cv_folds": 2,
        "workers": 0,
        "classifiers": "softmax",
    },
}


def test_every_analysis_is_checked_for_scoped_settings():
    # a new analysis fails here until it is added to ANALYSES (evolution has its own test below)
    assert set(vizkit.make_app().analyses) == {*ANALYSES, "evolution"}


class _Explode(RuntimeError):
    pass


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_settings_are_restored_after_every_analysis_also_on_error(
    name, bundled_model, photo_path, offline_photo_list, tmp_path
):
    app = vizkit.make_app()
    seen = settings_probe(app)
    options = dict(ANALYSES[name])
    inputs: dict = {}
    if options.pop("images", False):
        inputs["images"] = [photo_path]
    if options.pop("data", False):
        inputs["data"] = offline_photo_list
    if options.pop("tree", False):  # three classes of three crops of the shipped photographs
        from PIL import Image

        for label, source in zip(("a", "b", "c"), shipped_photos()):
            (tmp_path / "tree" / label).mkdir(parents=True)
            for i in range(3):
                Image.open(source).convert("RGB").rotate(9 * i).save(tmp_path / "tree" / label / f"{i}.jpg")
        inputs["data"] = tmp_path / "tree"
        if name == "probes":
            options["cache"] = str(tmp_path / "cache")
    if options.pop("landmarks", False):
        marks = [{"image": str(path), "eye": [250, 300], "nose": [260, 340]} for path in (photo_path, photo_path)]
        (tmp_path / "marks.json").write_text(json.dumps(marks))
        options["landmarks"] = str(tmp_path / "marks.json")
    vizkit.run(name, bundled_model, app=app, batch_size=8, **inputs, **options)
    forwards = 0
    # then fail at each of the first forwards in turn: wherever it stops, nothing is left changed
    # (forward 1 is vizkit.run's blank check of the input size, before the analysis starts)
    for fail_at in range(1, 7):
        calls = {"n": 0}

        def bomb(module, args, _at=fail_at, calls=calls):
            calls["n"] += 1
            if calls["n"] > _at:
                raise _Explode(f"forward {calls['n']}")

        if "cache" in options:  # a fresh feature cache, or the features come without a forward
            options["cache"] = str(tmp_path / f"cache{fail_at}")
        handle = bundled_model.conv1.register_forward_pre_hook(bomb)
        try:
            vizkit.run(name, bundled_model, app=app, batch_size=8, **inputs, **options)
            forwards += 1
        except _Explode:
            pass
        finally:
            handle.remove()
        assert_no_hooks(bundled_model)
    assert forwards < 6, "no run failed: the probe did not reach the analysis"
    assert len(seen) == 7
    for before, after in seen:
        assert before == after == vizkit.engine.Settings(), (before, after)


def test_evolution_restores_settings_weights_and_reports_the_snapshot(tmp_path, bundled_model, offline_photo_list):
    model = vizkit.load_model("zfnet-compact")
    run_dir = tmp_path / "run"
    # a minimal "run": two snapshots of the bundled weights, the second one perturbed
    state = {k: v.float() for k, v in bundled_model.state_dict().items()}
    run_dir.mkdir()
    vizkit.framework.save_torch_atomic(run_dir / "weights_epoch001.pt", state)
    vizkit.framework.save_torch_atomic(run_dir / "weights_epoch002.pt", {k: v * 1.01 for k, v in state.items()})
    vizkit.toolkit.write_run_info(run_dir, "zfnet-compact", tmp_path, {}, vizkit.data.preprocess_for(model))
    app = vizkit.make_app()
    seen = settings_probe(app)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)  # the caller's own weights, which must come back
    own = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    result = vizkit.run("evolution", model, app=app, data=offline_photo_list, run=str(run_dir), maps=2, sample=6)
    assert model.training  # the caller's mode is back
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())
    assert result.meta["model"]["weights"] == str(run_dir / "weights_epoch002.pt")
    assert result.meta["model"]["weights_sha256"] == vizkit.models.sha256_file(run_dir / "weights_epoch002.pt")
    assert vizkit.models.model_info(model).weights != str(run_dir / "weights_epoch002.pt")
    # a run that fails part-way (after loading a snapshot) also gives the caller's weights back
    for fail_at in (1, 4, 9):
        calls = {"n": 0}

        def bomb(module, args, _at=fail_at, calls=calls):
            calls["n"] += 1
            if calls["n"] > _at:
                raise _Explode(f"forward {calls['n']}")

        handle = model.conv1.register_forward_pre_hook(bomb)
        try:
            with pytest.raises(_Explode):
                vizkit.run("evolution", model, app=app, data=offline_photo_list, run=str(run_dir), maps=2, sample=6)
        finally:
            handle.remove()
        assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items()), fail_at
        assert model.training
        assert_no_hooks(model)
    assert len(seen) == 4 and all(before == after == vizkit.engine.Settings() for before, after in seen)


def test_configured_is_scoped_and_nests():
    model = tiny_net(4).eval()
    x = torch.randn(1, 3, 33, 33)
    with vizkit.instrument(model, layers=["conv"]) as im:
        start = im.settings
        with im.configured(layers=["relu"], switches=False):
            with im.configured(layers=None):
                im(x)
                assert im.settings.layers == frozenset() and not im.settings.switches
            im(x)
            assert "relu" in im._rec.acts and "conv" not in im._rec.acts and not im.pools
            with pytest.raises(ZeroDivisionError), im.configured(switches=True):
                raise ZeroDivisionError
            assert not im.settings.switches
        assert im.settings == start
        im(x)
        assert im.pools == ["pool"] and im.activation("conv").shape[1] == 4


# ------------------------------------------------------------------------------- side effects
def test_importing_and_running_leaves_the_process_alone(tmp_path, photo_path):
    script = f"""
import random, matplotlib, numpy as np, torch
matplotlib.use("svg")
import vizkit
model = vizkit.load_model("zfnet-compact").train()  # building a model draws its initial weights
random.seed(1); np.random.seed(1); torch.manual_seed(1)
states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
result = vizkit.run("deconvnet", model, images=[{str(photo_path)!r}], layer="conv2", top=1, seed=123)
result.save({str(tmp_path / "out")!r})
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert random.getstate() == states[0]
assert (np.random.get_state()[1] == states[1]).all()
assert torch.equal(torch.get_rng_state(), states[2])
assert model.training
print("clean")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr[-2000:]
    assert (tmp_path / "out" / "deconvnet.png").stat().st_size > 10_000


def test_model_mode_is_restored_after_a_failing_run(bundled_model, photo_path):
    model = vizkit.load_model("zfnet-compact").train()
    with pytest.raises(vizkit.UsageError):
        vizkit.run("deconvnet", model, images=[photo_path], layer="conv9")
    assert model.training
    assert_no_hooks(model)


# ------------------------------------------------------------------------------- window geometry
@pytest.mark.parametrize(
    "kernel,stride,padding,dilation", [(3, 1, 1, 1), (7, 2, 3, 1), (3, 2, 0, 2), (5, 3, 2, 1), (1, 1, 0, 1)]
)
def test_window_ranges_match_brute_force(kernel, stride, padding, dilation):
    window = conv_window((kernel, kernel), stride, padding, dilation)
    assert window is not None
    size = 23
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    reads = {o: {o * stride - padding + dilation * k for k in range(kernel)} for o in range(out)}
    for lo in range(out):
        for hi in range(lo, min(out, lo + 3)):
            first, last = window.input_range(0, lo, hi)
            needed = set().union(*(reads[o] for o in range(lo, hi + 1)))
            assert (first, last) == (min(needed), max(needed))
            assert window.input_extent(0, hi - lo + 1) == last - first + 1
    for lo in range(size):
        for hi in range(lo, min(size, lo + 4)):
            touched = [o for o in range(out) if reads[o] & set(range(lo, hi + 1))]
            first, last = window.output_range(0, lo, hi)
            clipped = (max(first, 0), min(last, out - 1))
            # never misses an output (incremental inference stays exact); tight without dilation,
            # which can leave inputs that no window reads inside the span
            assert all(clipped[0] <= o <= clipped[1] for o in touched), (lo, hi)
            if dilation == 1:
                assert clipped == ((touched[0], touched[-1]) if touched else clipped) and (
                    touched or clipped[0] > clipped[1]
                )


def test_pool_stride_defaults_to_the_kernel_and_same_padding_resolves():
    assert pool_window(3, None).stride == (3, 3) and pool_window(2, []).stride == (2, 2)
    assert conv_window((3, 3), 1, "same", 2) == Window((3, 3), (1, 1), (2, 2), (2, 2))
    assert conv_window((4, 4), 1, "same", 1) is None  # asymmetric: no window describes it
    padding = Window((3, 3), (2, 2), (1, 1)).transposed_output_padding((15, 16), (8, 8))
    assert padding == (0, 1)
