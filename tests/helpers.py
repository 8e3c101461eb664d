"""Plain helpers the tests share, imported as ``from helpers import ...`` (fixtures live in
conftest.py): where the real data lives (../shared, skipped cleanly when absent), offline
stand-ins, a tiny convnet, references vizkit is checked against, and ways to run the CLI in this
process or in others (under torchrun)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import types
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.cbook
import numpy as np
import pytest
import sklearn.datasets
import torch
from torch import nn

import vizkit

if TYPE_CHECKING:
    from vizkit_plugins.occlusion.grid import OcclusionGrid

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIZKIT_SHARED", REPO.parent / "shared"))
SQUEEZENET_WEIGHTS = SHARED / "models" / "squeezenet1_0_imagenet.pt"
SAMPLES = SHARED / "data" / "imagenet-samples"
LABELS = SHARED / "data" / "imagenet_classes.txt"
IMAGENETTE = SHARED / "data" / "imagenette"


# ------------------------------------------------------------------------------- data
def needs_shared(*paths: Path) -> None:
    """Skip the test unless every one of ``paths`` (real data or weights in ../shared) exists."""
    for path in paths:
        if not path.exists():
            pytest.skip(f"shared data not available: {path}")


def sample(name: str) -> Path:
    """The imagenet-samples image whose file name contains ``name``."""
    needs_shared(SAMPLES)
    matches = sorted(SAMPLES.glob(f"*{name}*"))
    if not matches:
        pytest.skip(f"no sample image matching {name}")
    return matches[0]


def shipped_photos() -> list[Path]:
    """Photographs that ship with the dependencies: matplotlib's Grace Hopper, scikit-learn's
    china and flower."""
    images = Path(sklearn.datasets.__file__).parent / "images"
    return [
        Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
        images / "china.jpg",
        images / "flower.jpg",
    ]


# ------------------------------------------------------------------------------- models
def assert_no_hooks(model: torch.nn.Module) -> None:
    """Nothing vizkit added is left: no hook on any module, no TorchFunctionMode on the stack."""
    counts = vizkit.engine.hook_counts(model)
    assert all(count == 0 for count in counts.values()), counts
    assert torch._C._len_torch_function_stack() == 0, "a TorchFunctionMode was left on the stack"


def tiny_net(
    width: int = 4,
    classes: int = 3,
    *,
    seed: int = 0,
    kernel: int = 5,
    stride: int = 4,
    max_pool: bool = False,
    conv2_padding: int | None = 0,
    relu2: bool = False,
    gap: bool = True,
    named: bool = True,
) -> nn.Sequential:
    """A tiny convnet classifier, its weights drawn right after ``torch.manual_seed(seed)``.

    ``conv`` (3 -> width channels, ``kernel``, ``stride``) -> ``relu``
    [-> ``pool``: 3x3 max-pool, stride 2, with ``max_pool``]
    [-> ``conv2`` (width -> width, 3x3, ``conv2_padding``) [-> ``relu2``], unless the padding is None]
    -> ``gap`` (global average) -> ``flat`` -> ``fc`` (width -> classes). Without ``gap`` the
    linear layer is lazy (its input size follows the image's): one forward materialises it.
    ``named=False`` numbers the layers ("0", "1", ...) as a plain ``nn.Sequential`` does.
    The defaults: conv (5x5, stride 4) -> relu -> conv2 (3x3, no padding) -> gap -> flat -> fc,
    3 classes, seed 0. Each test asks for the variant it has always used: same seed, widths, layers.
    """
    torch.manual_seed(seed)
    layers: list[tuple[str, nn.Module]] = [("conv", nn.Conv2d(3, width, kernel, stride=stride)), ("relu", nn.ReLU())]
    if max_pool:
        layers.append(("pool", nn.MaxPool2d(3, 2)))
    if conv2_padding is not None:
        layers.append(("conv2", nn.Conv2d(width, width, 3, padding=conv2_padding)))
        if relu2:
            layers.append(("relu2", nn.ReLU()))
    if gap:
        layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(width, classes))]
    else:
        layers += [("flat", nn.Flatten()), ("fc", nn.LazyLinear(classes))]
    return nn.Sequential(OrderedDict(layers)) if named else nn.Sequential(*(module for _, module in layers))


def settings_probe(
    app: vizkit.framework.App, names: Iterable[str] | None = None
) -> list[tuple[vizkit.engine.Settings, vizkit.engine.Settings]]:
    """Wrap the run of each analysis in ``names`` (every analysis of ``app`` by default) so that
    it records the instrumented model's settings before and after it ran; returns the record."""
    seen: list[tuple[vizkit.engine.Settings, vizkit.engine.Settings]] = []
    for name in app.analyses if names is None else names:
        analysis = app.analyses[name]

        def wrapped(ctx, _run=analysis.run, **options):
            before = ctx.instrumented.settings
            try:
                return _run(ctx, **options)
            finally:
                seen.append((before, ctx.instrumented.settings))

        analysis.run = wrapped
    return seen


# ------------------------------------------------------------------------------- plugins
def nothing(ctx: vizkit.RunContext) -> vizkit.Result:
    """An analysis's run that does nothing: an empty result."""
    return vizkit.Result()


def analysis(name: str, run=nothing, options=()) -> vizkit.Analysis:
    """An analysis called ``name`` (described as "the NAME analysis") that takes no inputs."""
    return vizkit.Analysis(name, f"the {name} analysis", run, list(options), inputs="none")


def plugin(name: str, **hooks) -> types.ModuleType:
    """A third-party plugin: a module object (named ``name``) holding the given hook functions."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        function.__name__ = hook_name
        setattr(module, hook_name, vizkit.hookimpl(function))
    return module


# ------------------------------------------------------------------------------- references
def relative_error(a, b) -> float:
    """|a - b| / |b| (Frobenius norms, in double precision); a tensor or an array each."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def occlusion_as_captum(model: nn.Module, x: torch.Tensor, layer: str, target: int, grid: OcclusionGrid) -> np.ndarray:
    """captum's ``Occlusion`` attribution of ``x[0]`` (zero baseline, the window over every
    channel), rebuilt from the occlusion plugin's exact probability map on ``grid``: a pixel gets
    the mean, over the windows covering it, of p(unoccluded) - p(occluded by that window), and 0
    where no window covers it. (height, width), for one colour channel: they are all the same."""
    from vizkit_plugins.occlusion.maps import occlusion_maps

    with vizkit.instrument(model) as im:
        maps = occlusion_maps(
            im, x, layer, torch.tensor([0]), torch.tensor([target]), grid, torch.zeros(3), mode="exact"
        )
        with torch.no_grad():
            base = float(im(x).softmax(1)[0, target])
    total, count = np.zeros((grid.height, grid.width)), np.zeros((grid.height, grid.width))
    for (y0, x0), p in zip(grid.corners(), maps["true_class_prob"][0].ravel()):
        total[y0 : y0 + grid.size, x0 : x0 + grid.size] += base - p
        count[y0 : y0 + grid.size, x0 : x0 + grid.size] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


# ------------------------------------------------------------------------------- running the CLI
def cli(capsys: pytest.CaptureFixture[str], *argv) -> tuple[int, str, str]:
    """``vizkit ARGV`` in this process (each argument as ``str``): (exit status, stdout, stderr)."""
    import vizkit.app.cli

    code = vizkit.app.cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def free_port() -> int:
    """A free TCP port on the loopback interface (for torchrun's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_vizkit(argv: Sequence[str], processes: int = 1) -> subprocess.CompletedProcess[str]:
    """``python -m vizkit ARGV`` in a new process, or under torchrun in ``processes`` processes on
    this machine; each with one OpenMP thread (the same threads in every run: the same float
    rounding, so that one process and several can be compared exactly). Output captured as text."""
    command = [sys.executable, "-m", "vizkit", *argv]
    if processes > 1:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        assert torchrun, "torchrun ships with torch"
        rendezvous = ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
        command = [torchrun, "--nnodes", "1", "--nproc-per-node", str(processes), *rendezvous, "-m", "vizkit", *argv]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
