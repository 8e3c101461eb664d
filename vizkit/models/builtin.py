"""The models that ship with vizkit, registered through the same hook as a plugin's."""

from __future__ import annotations

from typing import Callable

from vizkit.hookspecs import hookimpl
from vizkit.models import ModelEntry
from pathlib import Path

from vizkit.data import Preprocess
from vizkit.models.zfnet import zfnet, zfnet_compact

WEIGHTS = Path(__file__).parent / "weights"
COMPACT_WEIGHTS = WEIGHTS / "zfnet_compact_imagenette.pt"
COMPACT_CLASSES = WEIGHTS / "zfnet_compact_imagenette.classes.txt"
COMPACT_PREPROCESS = Preprocess(resize=160, crop=144)


@hookimpl
def register_models(register: Callable[[ModelEntry], None]) -> None:
    register(ModelEntry(
        name="zfnet",
        factory=zfnet,
        description="Zeiler & Fergus 2013 layout at 224x224, 1000 classes (untrained)",
        tags=("paper", "untrained"),
    ))
    trained = COMPACT_WEIGHTS.exists()
    register(ModelEntry(
        name="zfnet-compact",
        factory=zfnet_compact,
        description="compact ZF variant for 144x144 crops, 10 Imagenette classes"
        + (" (trained weights bundled)" if trained else " (untrained: no bundled weights yet)"),
        weights=COMPACT_WEIGHTS if trained else None,
        labels=COMPACT_CLASSES.read_text().split("\n")[:10] if COMPACT_CLASSES.exists() else None,
        preprocess=COMPACT_PREPROCESS,
        tags=("compact", "trained" if trained else "untrained"),
    ))
