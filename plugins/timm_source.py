"""The ``timm:`` model source: any `timm <https://github.com/huggingface/pytorch-image-models>`_
model by name, written as a third-party plugin would be (only vizkit's public API, registered
through ``register_model_sources``; ``pip install vizkit[timm]``).

Spec: ``timm:<name>[?option&option...]``, e.g. ``timm:convnext_tiny``, ``timm:resnet18.a1_in1k``
(a pretrained tag), ``timm:resnet18?pretrained``, ``timm:resnet18?num_classes=10``. Options:

* ``pretrained``: timm's pretrained weights (Hugging Face Hub or timm's URL, cached where timm
  caches them). Only then is the network used; an unreachable hub is one line naming the model
  and suggesting ``--weights``. Without it the model has timm's random initialisation
  (``timm.create_model(name, pretrained=False)``) and ``--weights FILE`` loads a state_dict.
* ``num_classes=N``: another classifier head (e.g. for a fine-tuned weights file).

The model carries its own input (:class:`vizkit.Preprocess` from timm's data config: crop =
``input_size``, resize = ``floor(crop / crop_pct)`` as timm's eval transform, ``mean``, ``std``)
and, for ImageNet heads (1000 classes, or timm's 12k/21k/22k subsets), the class names timm
ships (no download). vizkit resizes bilinearly: timm's ``interpolation`` (often bicubic) and a
``crop_mode`` other than ``center`` are not reproduced.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
from collections.abc import Callable
from typing import Any

from torch import nn

import vizkit
from vizkit.models import ModelInfo

PREFIX = "timm"
USAGE = "timm:<name>[?pretrained][&num_classes=N]"
INSTALL = "pip install vizkit[timm]"
INFO = "vizkit_info"  # where a model carries its vizkit.models.ModelInfo


def _timm() -> Any:
    """The timm module, or a one-line UsageError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise vizkit.UsageError(f"the timm: model source needs timm; {INSTALL}") from None
    return timm


def parse_spec(rest: str) -> tuple[str, dict[str, Any]]:
    """``name?pretrained&num_classes=10`` -> ``("name", {"pretrained": True, "num_classes": 10})``."""
    name, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key == "pretrained":
            if sep and value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise vizkit.UsageError(f"timm:{rest}: pretrained takes no value (or true/false), not {value!r}")
            options["pretrained"] = not sep or value.lower() in ("1", "true", "yes")
        elif key == "num_classes":
            if not value.isdigit() or int(value) < 1:
                raise vizkit.UsageError(f"timm:{rest}: num_classes must be a positive integer, not {value!r}")
            options["num_classes"] = int(value)
        else:
            raise vizkit.UsageError(f"timm:{rest}: unknown option {key!r}; options: pretrained, num_classes=N")
    if not name:
        raise vizkit.UsageError(f"no timm model named; use {USAGE}, e.g. timm:resnet18 (see timm.list_models())")
    return name, options


def _unknown(timm: Any, name: str) -> vizkit.UsageError:
    """The one-line error for a name timm does not know, with close matches from its registry."""
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.7)
    arch = name.split(".")[0]
    if not close:  # a fragment: the names that contain it, as timm.list_models('*x*') would
        close = timm.list_models(f"*{arch}*")[:4]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return vizkit.UsageError(f"unknown timm model '{name}'{hint}; see timm.list_models('*{arch}*')")


def preprocess_from_config(config: dict[str, Any]) -> vizkit.Preprocess | None:
    """vizkit's preprocessing for timm's data config (``timm.data.resolve_data_config``): crop =
    the input size, resize = ``floor(crop / crop_pct)`` (timm's eval transform), mean and std.
    None when the config does not describe a square three-channel input."""
    size = tuple(config.get("input_size") or ())
    mean, std = tuple(config.get("mean") or ()), tuple(config.get("std") or ())
    if len(size) != 3 or size[0] != 3 or len(mean) != 3 or len(std) != 3:
        return None
    crop = int(max(size[1], size[2]))  # vizkit crops squares; timm's non-square inputs are rare
    crop_pct = float(config.get("crop_pct") or 1.0)
    resize = max(crop, math.floor(crop / crop_pct))
    return vizkit.Preprocess(
        resize=resize,
        crop=crop,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
    )


def imagenet_labels(model: nn.Module) -> list[str] | None:
    """The class names timm ships for the ImageNet subset the model's head matches (1000:
    ImageNet-1k), first lemma of each synset; None for any other head."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    return [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]


def _pretrained(timm: Any, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(name, pretrained=True)``, any download failure as one line."""
    cfg = timm.models.get_pretrained_cfg(name)  # no network: is there anything to fetch?
    if cfg is None or not any(getattr(cfg, key, None) for key in ("hf_hub_id", "url", "file", "state_dict")):
        raise vizkit.UsageError(f"timm has no pretrained weights for '{name}'; pass --weights FILE")
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as error:  # no network, HF_HUB_OFFLINE, a timeout: LocalEntryNotFoundError and URLError are OSErrors
        reason = f"hub unreachable: {type(error).__name__}"
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:120]
        reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
    raise vizkit.UsageError(
        f"cannot download timm's pretrained weights for '{name}' ({reason}); "
        "fetch them where there is a network and pass --weights FILE"
    )


def build_timm(rest: str) -> nn.Module:
    """The timm model a ``timm:`` spec names (``rest`` is what follows ``timm:``), carrying its
    preprocessing and ImageNet class names as ``model.vizkit_info``."""
    name, options = parse_spec(rest)
    timm = _timm()
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):  # timm reads their config from the hub or a folder
        raise vizkit.UsageError(
            f"timm:{name}: hub and folder names are not supported; use timm:<name>?pretrained or --weights FILE"
        )
    if not timm.is_model(name):
        raise _unknown(timm, name)
    kwargs = {"num_classes": options["num_classes"]} if "num_classes" in options else {}
    try:
        if options.get("pretrained"):
            model = _pretrained(timm, name, kwargs)
        else:
            model = timm.create_model(name, pretrained=False, **kwargs)
    except vizkit.UsageError:
        raise
    except Exception as error:  # a model timm cannot build with these options
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise vizkit.UsageError(f"timm cannot build '{name}': {type(error).__name__}: {first}") from None
    from timm.data import resolve_data_config

    info = ModelInfo(
        preprocess=preprocess_from_config(resolve_data_config({}, model=model)),
        labels=imagenet_labels(model),
    )
    setattr(model, INFO, info)  # model.vizkit_info: load_model keeps it (a plain attribute, not a buffer)
    return model


@vizkit.hookimpl
def register_model_sources(register: Callable[[vizkit.ModelSource], None]) -> None:
    """``timm:<name>``: any model in timm's registry."""
    installed = importlib.util.find_spec("timm") is not None
    register(
        vizkit.ModelSource(
            "timm",
            build_timm,
            USAGE,
            "any timm model (random weights unless ?pretrained or --weights)"
            + ("" if installed else f"; timm is not installed: {INSTALL}"),
            prefix=PREFIX,
        )
    )
