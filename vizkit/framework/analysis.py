"""What an analysis is: the types a plugin writes one with.

A plugin declares an :class:`Analysis`: a name, a one-line description, its :class:`Option` s
(turned into CLI options and keyword arguments), a ``run(ctx, **options)`` that receives a
:class:`RunContext` holding the shared instrumented model and returns a :class:`Result`, and
optionally a :class:`~vizkit.framework.ReportView` (how ``vizkit report`` shows its results).
How it is run is :mod:`vizkit.framework.runner`'s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from vizkit.data import (
    ImageList,
    Preprocess,
    SkippedImages,
    accumulation_dtype,
    first_readable,
    label_name,
    load_images,
    model_dtype,
    read_batches,
)
from vizkit.engine.instrumented import Instrumented
from vizkit.engine.rules import ProjectionRule, resolve_rule
from vizkit.errors import UsageError
from vizkit.framework.report_view import ReportView
from vizkit.framework.results import Result

if TYPE_CHECKING:  # pragma: no cover
    from vizkit.framework.registry import App


@dataclass(frozen=True)
class Option:
    """One option of an analysis: ``--name-with-dashes`` on the CLI, ``name`` in Python.

    ``type`` is int, float, str, bool (a flag) or a tuple of allowed strings (a choice, matched
    ignoring case and surrounding spaces; ``run`` receives the declared spelling). With
    ``comma_separated``, a choice option takes one or more of its choices joined by commas
    (``--classifiers svm,softmax``) and ``run`` receives them as a list, in the order given, each once;
    ``parse`` optionally turns the value into what ``run`` receives (and raises UsageError);
    ``registry`` ("rules") makes the value a name registered there by some plugin (the CLI
    offers them as choices), e.g. ``Option("rule", registry="rules", default="deconvnet")``.

    An int or float option's accepted range is declared once, here, and checked before the
    analysis runs (a one-line UsageError naming the flag and the bound; ``--help`` shows the range):
    ``minimum`` / ``maximum`` are inclusive bounds, ``exclusive_minimum`` / ``exclusive_maximum``
    make one strict (``Option("stdev", float, 0.15, minimum=0, exclusive_minimum=True)``: above 0).
    A float option never takes NaN or infinity; an int option never takes a fraction.
    ``output_folder`` marks a str option naming a folder the analysis writes into (a cache): it
    must be a folder, or one that can be created, and the one-line error says why not.

    ``applies`` says, from all the resolved options, whether this one has any effect on the run
    (``Option("drill_down", float, 0.15, applies=lambda options: options["mode"] == "fast")``);
    one that does not is still checked, but left out of ``result.json``'s ``params``, which thus
    holds exactly the settings the result depends on (:func:`applied_params`). An analysis
    that learns only from its inputs that an option did not apply (a default class folder to
    exclude that the data lacks) lists it in ``result.meta["not_applicable"]``.
    """

    name: str
    type: Any = str
    default: Any = None
    help: str = ""
    required: bool = False
    multiple: bool = False
    parse: Callable[[Any], Any] | None = None
    registry: Literal["rules"] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    output_folder: bool = False
    comma_separated: bool = False
    applies: Callable[[dict[str, Any]], bool] | None = field(default=None, compare=False)

    @property
    def flag(self) -> str:
        """The option's command-line flag (``--batch-size`` for ``batch_size``)."""
        return "--" + self.name.replace("_", "-")

    @property
    def range_text(self) -> str:
        """The accepted range in words ("at least 1", "in (0, 1]"); empty when unbounded."""
        low, high = self.minimum, self.maximum
        if low is None and high is None:
            return ""
        if high is None:
            return f"{'above' if self.exclusive_minimum else 'at least'} {low:g}"
        if low is None:
            return f"{'below' if self.exclusive_maximum else 'at most'} {high:g}"
        if self.exclusive_minimum or self.exclusive_maximum:
            return (
                f"in {'(' if self.exclusive_minimum else '['}{low:g}, {high:g}{')' if self.exclusive_maximum else ']'}"
            )
        return f"between {low:g} and {high:g}"

    def convert(self, value: Any) -> Any:
        """``value`` checked and converted as this option declares (a choice's spelling, a number
        inside its range, a usable output folder, then ``parse``); None stays None. A bad value is a
        UsageError naming the flag."""
        if value is None:
            return None
        if isinstance(self.type, tuple):
            value = self._choice(value)
        elif self.type in (int, float) and not isinstance(value, bool):
            value = self._number(value)
        if self.output_folder:
            self._check_output_folder(value)
        return self.parse(value) if self.parse else value

    def _choice(self, value: Any) -> str | list[str]:
        """``value`` as the declared spelling of its choice (with ``comma_separated``: of each
        of its comma-separated choices, a list without repeats)."""
        spelled = {str(choice).lower(): choice for choice in self.type}
        if not self.comma_separated:
            key = str(value).strip().lower()
            if key not in spelled:
                raise UsageError(f"{self.flag} must be one of {', '.join(self.type)}, not '{value}'")
            return spelled[key]
        parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
        keys = [str(part).strip().lower() for part in parts if str(part).strip()]
        if not keys or any(key not in spelled for key in keys):
            raise UsageError(f"{self.flag} takes {', '.join(self.type)} (comma-separated), not '{value}'")
        return [spelled[key] for key in dict.fromkeys(keys)]

    def _check_output_folder(self, value: Any) -> None:
        """``value`` is a folder, or the first of its parents that exists is a writable one."""
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise UsageError(f"{self.flag} expects a folder, got '{value}'")
        folder = Path(value)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{self.flag} {folder} is not a folder")
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            why = "is not a folder" if not existing.is_dir() else "is not writable"
            raise UsageError(f"{self.flag} {folder} cannot be created: {existing} {why}")

    def _number(self, value: Any) -> int | float:
        """``value`` as this option's int or float, inside its declared range."""
        kind = self.type.__name__
        try:
            number = float(value) if self.type is float or isinstance(value, float) else int(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{self.flag} expects {'an' if kind == 'int' else 'a'} {kind}, got '{value}'") from None
        if not math.isfinite(number):
            raise UsageError(f"{self.flag} must be a finite number, not {value}")
        if self.type is int:
            if not float(number).is_integer():
                raise UsageError(f"{self.flag} expects a whole number, got {value}")
            number = int(number)
            if abs(number) > INT_LIMIT and (self.maximum is None or self.maximum > INT_LIMIT):  # torch's C ints
                raise UsageError(f"{self.flag} must be at most {INT_LIMIT} in size, not {value}")
        low, high = self.minimum, self.maximum
        if low is not None and (number <= low if self.exclusive_minimum else number < low):
            raise UsageError(
                f"{self.flag} must be {'above' if self.exclusive_minimum else 'at least'} {low:g}, not {value}"
            )
        if high is not None and (number >= high if self.exclusive_maximum else number > high):
            raise UsageError(
                f"{self.flag} must be {'below' if self.exclusive_maximum else 'at most'} {high:g}, not {value}"
            )
        return number


INT_LIMIT = 2**31 - 1  # no int option goes beyond (torch turns them into C ints: 2**63 overflows)


def applied_params(
    options: Sequence[Option], resolved: dict[str, Any], not_applicable: Sequence[str] = ()
) -> dict[str, Any]:
    """The resolved options that applied to a run, as ``result.json``'s ``params`` records them
    (tuples as lists): those whose :attr:`Option.applies` says so (or that declare none), less
    the ones the analysis named in ``not_applicable``.

    Args:
        options: the analysis's declared options.
        resolved: their values, as :meth:`Analysis.resolve_options` returns them.
        not_applicable: option names the analysis found did not apply to its inputs.
    """
    skipped = {not_applicable} if isinstance(not_applicable, str) else set(not_applicable)
    for option in options:
        if option.applies is not None and option.name in resolved and not option.applies(resolved):
            skipped.add(option.name)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items() if k not in skipped}


@dataclass
class Analysis:
    """An analysis a plugin contributes (``register(vizkit.Analysis(...))`` in ``register_analyses``).

    ``name`` is what ``vizkit run NAME`` and :func:`vizkit.run` take; ``run(ctx, **options)``
    does the work; ``options`` become its CLI options and keyword arguments; ``inputs`` says
    whether it needs --image files, --data, either or none; ``demo`` / ``demo_quick`` are its
    options in ``vizkit demo``; ``model_from`` picks a model when none is given; ``view`` shows
    its results in ``vizkit report`` (a :class:`~vizkit.framework.ReportView`, or just its
    ``render`` function; None: the generic rendering); ``plugin`` is filled in by the registry.
    """

    name: str
    description: str
    run: Callable[..., Result]
    options: list[Option] = field(default_factory=list)
    inputs: Literal["images", "data", "any", "none"] = "images"
    demo: dict[str, Any] | None = None  # options for `vizkit demo`; None: not part of the demo
    demo_quick: dict[str, Any] | None = None  # `vizkit demo --quick`: overrides of ``demo`` (vizkit.app.demo)
    demo_images: int | None = None  # `vizkit demo` gives it only this many of its images (None: all)
    # the model spec to use when none is given, from the resolved options (e.g. the one a
    # training run recorded); None: a model must be given
    model_from: Callable[[dict[str, Any]], str] | None = None
    # how `vizkit report` shows its results (its own tables, pictures); None: the generic rendering
    view: ReportView | None = None
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.view is not None and not isinstance(self.view, ReportView):
            if not callable(self.view):
                raise TypeError(
                    f"analysis '{self.name}': view must be a vizkit.ReportView, not {type(self.view).__name__}"
                )
            self.view = ReportView(self.view)  # a bare render function: a view without style or script

    def option(self, name: str) -> Option:
        """The declared option ``name`` (KeyError when the analysis has none of that name)."""
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def default_model(self, given: dict[str, Any]) -> str:
        """The model spec this analysis uses when the caller names none."""
        if self.model_from is None:
            raise UsageError(f"analysis '{self.name}' needs --model")
        return self.model_from(self.resolve_options(given))

    def resolve_options(self, given: dict[str, Any], app: App | None = None) -> dict[str, Any]:
        """Defaults filled in, values converted; unknown or missing options refused (and,
        with ``app``, names that its registries do not hold)."""
        names = {o.name for o in self.options}
        unknown = sorted(set(given) - names)
        if unknown:
            valid = ", ".join(sorted(names)) or "none"
            raise UsageError(f"analysis '{self.name}' has no option '{unknown[0]}' (options: {valid})")
        resolved = {}
        for option in self.options:
            value = given.get(option.name, option.default)
            if option.required and value in (None, (), []):
                raise UsageError(f"analysis '{self.name}' needs {option.flag}")
            if option.multiple:
                value = tuple(option.convert(v) for v in (value or ()))
            else:
                value = option.convert(value)
            if option.registry and app is not None and value is not None:
                registered = getattr(app, option.registry)
                for name in value if option.multiple else (value,):
                    if name not in registered:
                        raise UsageError(f"{option.flag} must be one of {', '.join(sorted(registered))}, not '{name}'")
            resolved[option.name] = value
        return resolved


@dataclass
class RunContext:
    """Everything an analysis's ``run`` receives besides its own options."""

    model: nn.Module
    instrumented: Instrumented
    preprocess: Preprocess
    device: torch.device
    labels: list[str] | None = None
    image_paths: list[Path] = field(default_factory=list)
    image_tensors: Tensor | None = None
    data: ImageList | None = None
    batch_size: int = 32
    seed: int = 0
    progress: bool = False
    out: Path | None = None  # where the result will be saved (for checkpoints), if known
    analysis: str = ""
    app: App | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)  # seeded with ``seed``
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # seeded with ``seed``
    # unreadable --data files: skipped with a warning and counted (``strict``: the first one stops the run)
    strict: bool = False
    skipped: SkippedImages = field(default_factory=SkippedImages)

    def __post_init__(self) -> None:
        self.skipped.strict = self.skipped.strict or self.strict

    def rule(self, name: str | ProjectionRule) -> ProjectionRule:
        """The projection rule registered under ``name`` (built-in or a plugin's)."""
        if self.app is None:
            return resolve_rule(name)
        return self.app.rule(name)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (:func:`vizkit.data.model_dtype`): :meth:`images` and
        :meth:`batches` give it, and the instrumented model casts any other floating input to it.
        Sums and statistics over what it computes are best taken in :attr:`accumulation_dtype`."""
        return model_dtype(self.model, strict=False)

    @property
    def accumulation_dtype(self) -> torch.dtype:
        """The dtype to accumulate sums and statistics of the model's outputs in: float32 for a
        float16 or bfloat16 model, else the model's own (:func:`vizkit.data.accumulation_dtype`)."""
        return accumulation_dtype(self.dtype)

    def images(self) -> Tensor:
        """The --image inputs as one preprocessed batch on the device, in the model's dtype."""
        if self.image_tensors is not None:
            return self.image_tensors.to(self.device, self.dtype)
        if not self.image_paths:
            raise UsageError(f"analysis '{self.analysis}' needs --image")
        return load_images(self.image_paths, self.preprocess).to(self.device, self.dtype)

    def dataset(self) -> ImageList:
        """The --data images. Read them with :meth:`batches` / :meth:`first_image`, which skip
        unreadable files (recorded in ``ctx.skipped``, reported in result.json) or, with
        ``--strict``, stop at the first one; ``dataset()[i]`` raises for an unreadable file."""
        if self.data is None:
            raise UsageError(f"analysis '{self.analysis}' needs --data")
        return self.data

    def batches(
        self, images: ImageList | None = None, indices: Sequence[int] | None = None, workers: int = 0
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(images on the device in the model's dtype, their indices)`` in batches of ``batch_size``, unreadable
        files left out and recorded in ``skipped`` (see :func:`vizkit.data.read_batches`).

        Args:
            images: the image list to read; None: --data.
            indices: the positions to read, in this order (None: all).
            workers: data-loading worker processes (0: load in this process).
        """
        source = self.dataset() if images is None else images
        for x, where in read_batches(source, self.skipped, indices, self.batch_size, workers):
            yield x.to(self.device, self.dtype, non_blocking=True), where

    def first_image(self, images: ImageList | None = None) -> tuple[Tensor, int]:
        """The first readable image (preprocessed, on the CPU) and its index, e.g. to learn a
        layer's shape; the unreadable ones before it are recorded in ``skipped``, and a dataset
        with none readable is a UsageError.

        Args:
            images: the image list; None: --data.
        """
        return first_readable(self.dataset() if images is None else images, self.skipped)

    def label(self, index: int) -> str:
        """How figures and summaries name class ``index``: the model's label for it, or
        ``class <index>`` without labels."""
        return label_name(self.labels, int(index))

    def image_names(self) -> list[str]:
        """The --image inputs' names, for titles and per-image summary keys: file names, a repeated
        one (the same name in two folders, or one file given twice) made unique by its position
        (``x.jpg [1]``, ``x.jpg [2]``) so that no entry keyed by name overwrites another's."""
        if self.image_paths:
            return unique_names([p.name for p in self.image_paths])
        count = 0 if self.image_tensors is None else self.image_tensors.shape[0]
        return [f"image {i}" for i in range(count)]


def unique_names(names: list[str]) -> list[str]:
    """``names`` with each repeated one suffixed by its 1-based position: ``x.jpg [2]``."""
    repeated = {name for name in names if names.count(name) > 1}
    return [f"{name} [{i + 1}]" if name in repeated else name for i, name in enumerate(names)]
