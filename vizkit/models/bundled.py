"""The weights that ship with vizkit: the compact ZF model trained on Imagenette."""

from __future__ import annotations

import json
from pathlib import Path

from vizkit.data import Preprocess

WEIGHTS = Path(__file__).parent / "weights"
COMPACT_WEIGHTS = WEIGHTS / "zfnet_compact_imagenette.pt"
COMPACT_META = WEIGHTS / "zfnet_compact_imagenette.json"  # classes, preprocessing, accuracy, command
COMPACT_PREPROCESS = Preprocess(resize=160, crop=144)


def bundled_meta() -> dict | None:
    """What ships next to the compact model's weights (None when no weights are bundled)."""
    if not (COMPACT_WEIGHTS.exists() and COMPACT_META.exists()):
        return None
    return json.loads(COMPACT_META.read_text())
