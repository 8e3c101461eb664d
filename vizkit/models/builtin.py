"""The models that ship with vizkit, registered through the same hook as a plugin's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from vizkit.data import Preprocess
from vizkit.hookspecs import hookimpl
from vizkit.models import ModelEntry
from vizkit.models.zfnet import zfnet, zfnet_compact

WEIGHTS = Path(__file__).parent / "weights"
COMPACT_WEIGHTS = WEIGHTS / "zfnet_compact_imagenette.pt"
COMPACT_META = WEIGHTS / "zfnet_compact_imagenette.json"  # classes, preprocessing, accuracy, command
COMPACT_PREPROCESS = Preprocess(resize=160, crop=144)


def bundled_meta() -> dict | None:
    """What ships next to the compact model's weights (None when no weights are bundled)."""
    if not (COMPACT_WEIGHTS.exists() and COMPACT_META.exists()):
        return None
    return json.loads(COMPACT_META.read_text())


@hookimpl
def register_models(register: Callable[[ModelEntry], None]) -> None:
    register(ModelEntry(
        name="zfnet",
        factory=zfnet,
        description="Zeiler & Fergus 2013 layout at 224x224, 1000 classes (untrained)",
        tags=("paper", "untrained"),
    ))
    meta = bundled_meta()
    register(ModelEntry(
        name="zfnet-compact",
        factory=zfnet_compact,
        description="compact ZF variant for 144x144 crops, 10 Imagenette classes"
        + (f" (bundled weights: {meta['val_accuracy']:.1%} Imagenette val top-1)" if meta else " (untrained: no bundled weights)"),
        weights=COMPACT_WEIGHTS if meta else None,
        labels=meta["classes"] if meta else None,
        preprocess=Preprocess.from_dict(meta["preprocess"]) if meta else COMPACT_PREPROCESS,
        tags=("compact", "trained" if meta else "untrained"),
    ))
