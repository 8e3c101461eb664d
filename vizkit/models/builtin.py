"""The models that ship with vizkit, registered through the same hook as a plugin's."""

from __future__ import annotations

from typing import Callable

from vizkit.hookspecs import hookimpl
from vizkit.models import ModelEntry
from vizkit.models.zfnet import zfnet


@hookimpl
def register_models(register: Callable[[ModelEntry], None]) -> None:
    register(ModelEntry(
        name="zfnet",
        factory=zfnet,
        description="Zeiler & Fergus 2013 layout at 224x224, 1000 classes (untrained)",
        tags=("paper", "untrained"),
    ))
