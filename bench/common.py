"""What the benchmark scripts share: where the real data lives and how a run is timed."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHARED = Path(os.environ.get("VIZKIT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SQUEEZENET_WEIGHTS = SHARED / "models/squeezenet1_0_imagenet.pt"
POMERANIAN = SHARED / "data/imagenet-samples/n02112018_Pomeranian.jpg"


def squeezenet():
    """The real ImageNet SqueezeNet from ../shared, in eval mode."""
    import vizkit

    return vizkit.load_model("torchvision:squeezenet1_0", weights=SQUEEZENET_WEIGHTS)


def median_time(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall-clock seconds of ``repeats`` calls, and the last call's value."""
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value
