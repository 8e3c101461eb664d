"""Shared fixtures: the real data and weights in ../shared (skipped cleanly when absent), and
offline stand-ins that run everywhere: photographs that ship with matplotlib and scikit-learn,
the bundled trained model, and random weights. Plain helper functions (and where the data
lives) are in helpers.py, imported as ``from helpers import ...``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

import vizkit
from helpers import IMAGENETTE, LABELS, SQUEEZENET_WEIGHTS, assert_no_hooks, needs_shared, sample, shipped_photos

warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# progress lines (every 10 s off a terminal) would make a test's stderr depend on the machine's
# load; tests/test_progress.py sets its own interval
os.environ.setdefault("VIZKIT_PROGRESS_INTERVAL", "3600")


@pytest.fixture(scope="session")
def squeezenet():
    needs_shared(SQUEEZENET_WEIGHTS, LABELS)
    return vizkit.load_model("torchvision:squeezenet1_0", weights=SQUEEZENET_WEIGHTS, labels=LABELS)


@pytest.fixture(scope="session")
def dog_image() -> Path:
    return sample("golden_retriever")


@pytest.fixture(scope="session")
def dog_tensor(dog_image) -> torch.Tensor:
    return vizkit.load_images([dog_image], vizkit.Preprocess())


@pytest.fixture
def recorded_models(monkeypatch) -> list[torch.nn.Module]:
    """Every model built by spec during the test (``vizkit.load_model``, the CLI, a run's
    default model, training)."""
    from vizkit.framework import loading

    models: list[torch.nn.Module] = []
    build_model = loading.build_model
    # vizkit's public names resolve lazily and keep what they found: resolve this one now, or a
    # first `vizkit.build_model` during the test would keep the wrapper below for good
    assert vizkit.build_model is build_model

    def recording_build_model(*args, **kwargs):
        model, entry = build_model(*args, **kwargs)
        models.append(model)
        return model, entry

    monkeypatch.setattr(loading, "build_model", recording_build_model)
    return models


@pytest.fixture
def no_hooks_left(recorded_models) -> Iterator[list[torch.nn.Module]]:
    """``recorded_models``, each checked for left-over hooks when the test ends (also after a
    failing or interrupted run). A module that wants it for every test says
    ``pytestmark = pytest.mark.usefixtures("no_hooks_left")``."""
    yield recorded_models
    for model in recorded_models:
        assert_no_hooks(model)


@pytest.fixture(scope="session")
def tiny_imagenette(tmp_path_factory):
    """3 classes x (6 train + 3 val) real Imagenette images, linked (not copied) into a tree."""
    needs_shared(IMAGENETTE)
    root = tmp_path_factory.mktemp("imagenette")
    for split, count in (("train", 6), ("val", 3)):
        for folder in sorted((IMAGENETTE / split).iterdir())[:3]:
            target = root / split / folder.name
            target.mkdir(parents=True)
            for image in sorted(folder.glob("*.jpg"))[:count]:
                (target / image.name).symlink_to(image)
    return root


# ------------------------------------------------------------------------------- offline stand-ins
@pytest.fixture(scope="session")
def photo_path() -> Path:
    return shipped_photos()[0]


@pytest.fixture(scope="session")
def photo_tensor(photo_path) -> torch.Tensor:
    """A real photograph at 224x224, ImageNet-normalised, from no ../shared."""
    return vizkit.load_images([photo_path], vizkit.Preprocess())


@pytest.fixture(scope="session")
def bundled_model() -> torch.nn.Module:
    """The trained zfnet-compact that ships with vizkit (Imagenette, 144x144)."""
    return vizkit.load_model("zfnet-compact")


@pytest.fixture(scope="session")
def offline_photo_list(tmp_path_factory) -> Path:
    """A text file listing 24 photographs made from the shipped ones (crops, flips, turns)."""
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for source in shipped_photos():
        image = Image.open(source).convert("RGB")
        width, height = image.size
        for i in range(8):
            box = (i * width // 24, (7 - i) * height // 28, width - (7 - i) * width // 24, height - i * height // 28)
            variant = image.crop(box).rotate(11 * i)
            if i % 2:
                variant = variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            path = root / f"{source.stem}_{i}.jpg"
            variant.save(path)
            paths.append(path)
    listing = root / "images.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    return listing


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module of many small forwards (``pytestmark =
    pytest.mark.usefixtures("one_thread")``): one thread is faster there, and on a shared 2-core
    machine two OpenMP threads waiting on each other were measured 20x slower (ResNet-18 at 64 px:
    29 ms a forward on one thread, 650 ms on two, under a load of 8). The thread count comes back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
