"""Shared fixtures: the real data and weights in ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

import vizkit

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIZKIT_SHARED", REPO.parent / "shared"))
SQUEEZENET_WEIGHTS = SHARED / "models" / "squeezenet1_0_imagenet.pt"
SAMPLES = SHARED / "data" / "imagenet-samples"
LABELS = SHARED / "data" / "imagenet_classes.txt"
IMAGENETTE = SHARED / "data" / "imagenette"

warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def needs_shared(*paths: Path) -> None:
    for path in paths:
        if not path.exists():
            pytest.skip(f"shared data not available: {path}")


@pytest.fixture(scope="session")
def squeezenet():
    needs_shared(SQUEEZENET_WEIGHTS, LABELS)
    return vizkit.load_model("torchvision:squeezenet1_0", weights=SQUEEZENET_WEIGHTS, labels=LABELS)


def sample(name: str) -> Path:
    """The imagenet-samples image whose file name contains ``name``."""
    needs_shared(SAMPLES)
    matches = sorted(SAMPLES.glob(f"*{name}*"))
    if not matches:
        pytest.skip(f"no sample image matching {name}")
    return matches[0]


@pytest.fixture(scope="session")
def dog_image() -> Path:
    return sample("golden_retriever")


@pytest.fixture(scope="session")
def dog_tensor(dog_image) -> torch.Tensor:
    return vizkit.load_images([dog_image], vizkit.Preprocess())


def assert_no_hooks(model: torch.nn.Module) -> None:
    counts = vizkit.hook_counts(model)
    assert all(count == 0 for count in counts.values()), counts
    assert torch._C._len_torch_function_stack() == 0, "a TorchFunctionMode was left on the stack"


@pytest.fixture
def recorded_models(monkeypatch) -> list[torch.nn.Module]:
    """Every model built by spec during the test (``vizkit.load_model``, the CLI, a run's
    default model, training)."""
    from vizkit.framework import loading

    models: list[torch.nn.Module] = []
    build_model = loading.build_model

    def recording_build_model(*args, **kwargs):
        model, entry = build_model(*args, **kwargs)
        models.append(model)
        return model, entry

    monkeypatch.setattr(loading, "build_model", recording_build_model)
    return models


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
