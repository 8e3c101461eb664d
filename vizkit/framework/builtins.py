"""vizkit's own contributions, registered through the same hooks as any plugin's: the bundled
models, the model spec forms (``torchvision:``, ``file.py:factory``, ``module:factory``) and the
projection rules (deconvnet, guided, gradient)."""

from __future__ import annotations

from collections.abc import Callable

from vizkit.data import Labels, Preprocess
from vizkit.engine.rules import BUILTIN_RULES, ProjectionRule
from vizkit.framework.hookspecs import hookimpl
from vizkit.models import ModelEntry, ModelSource
from vizkit.models.bundled import COMPACT_PREPROCESS, COMPACT_WEIGHTS, bundled_meta
from vizkit.models.sources import build_torchvision, call_factory, is_file_factory, is_module_factory
from vizkit.models.zfnet import zfnet, zfnet_compact


@hookimpl
def register_models(register: Callable[[ModelEntry], None]) -> None:
    """vizkit's own models: the paper's ZF layout (untrained) and the bundled compact ZF model."""
    register(
        ModelEntry(
            name="zfnet",
            factory=zfnet,
            description="the paper's ZF layout (224x224, 1000 classes), untrained: random weights "
            "(the trained ZF model is zfnet-compact)",
            tags=("paper", "untrained"),
        )
    )
    meta = bundled_meta()
    register(
        ModelEntry(
            name="zfnet-compact",
            factory=zfnet_compact,
            description="compact ZF variant for 144x144 crops, 10 Imagenette classes" + _accuracy_note(meta),
            weights=COMPACT_WEIGHTS if meta else None,
            labels=_bundled_labels(meta),
            preprocess=Preprocess.from_dict(meta["preprocess"]) if meta else COMPACT_PREPROCESS,
            tags=("compact", "trained" if meta else "untrained"),
        )
    )


def _bundled_labels(meta: dict | None) -> Labels | None:
    """The bundled model's class names, with the Imagenette folders' WordNet ids they stand for,
    so a data class folder (``n01440764``) or a ``--target`` wnid finds its class."""
    if not meta:
        return None
    labels = Labels(meta["classes"])
    folders = meta.get("class_folders")
    if folders and len(folders) == len(labels):
        labels.wnids = list(folders)
    return labels


@hookimpl
def register_model_sources(register: Callable[[ModelSource], None]) -> None:
    """vizkit's own spec forms: ``torchvision:<builder>``, ``file.py:factory`` and
    ``package.module:factory``."""
    register(
        ModelSource(
            "torchvision",
            build_torchvision,
            "torchvision:<builder>",
            "any torchvision classification builder",
            prefix="torchvision",
        )
    )
    register(
        ModelSource(
            "python-file",
            call_factory,
            "file.py:factory",
            "a callable in a Python file that returns an nn.Module",
            accepts=is_file_factory,
        )
    )
    register(
        ModelSource(
            "python-module",
            call_factory,
            "package.module:factory",
            "a callable in an importable module that returns an nn.Module",
            accepts=is_module_factory,
        )
    )


@hookimpl
def register_rules(register: Callable[[ProjectionRule], None]) -> None:
    """The built-in projection rules (deconvnet, guided, gradient)."""
    for rule in BUILTIN_RULES:
        register(rule())


def _accuracy_note(meta: dict | None) -> str:
    """What ``vizkit list`` says of the bundled weights' accuracy (an averaged export has none
    until it is measured)."""
    if not meta:
        return " (untrained: no bundled weights)"
    accuracy = (meta.get("val_accuracy_measured") or {}).get("top1", meta.get("val_accuracy"))
    return " (bundled weights)" if accuracy is None else f" (bundled weights: {accuracy:.1%} Imagenette val top-1)"
