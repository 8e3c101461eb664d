"""``vizkit demo``: every analysis that declares a demo, on the bundled model, plus a report; and
:func:`sample_images`, real photographs of the bundled model's classes found without copying any.

An analysis joins the demo by declaring ``demo={...}`` (its options for the demo) and, where the
default settings take too long for ``--quick``, ``demo_quick={...}`` (overrides of those);
``demo_images=N`` gives it only the first N of the demo's images. The
demo gives it what its ``inputs`` ask for: a few images (4, one per class, classes spread; 1 with
``--quick``) for ``"images"`` / ``"any"``, and a class-balanced pick of many more (30 a class, 300
of Imagenette's 10; 10 a class with ``--quick``) as ``data`` for ``"data"``: top-9 is selective
only among a few hundred images, and probes need a training and a test split per class. The
pick's classes carry the bundled model's names (``tench``, not the folder ``n01440764``). When
fewer images are at hand, a line says so; when none of the model's classes are, the first line
offers the one-command download (only when its server answers; nothing is downloaded unasked). An
analysis with ``model_from`` (one that rebuilds its own model, e.g. from a training run) gets no
model and uses its own. Option values may name a resource the demo finds, as the whole string:

* ``"{landmarks}"``: a landmarks file: the hand-marked dog faces of the shared data folder
  (``dog_landmarks.json``) when present, else one the demo writes with three fixed positions in
  the frame (centre, upper left, lower right) of its own images: the same place, not the same
  object part;
* ``"{train_run}"``: a ``vizkit train`` folder: ``$VIZKIT_TRAIN_RUN``, else ``./vizkit-train``.
  None there (or no snapshot in it yet): the analysis is skipped with a line saying so.

The demo owns its output folder: a second run into the same ``--out`` replaces its results (and
removes those of analyses that this run skipped or that failed). A folder the demo did not write
(it has no ``demo.json``) is refused unless ``--overwrite`` is given.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import matplotlib.cbook

import vizkit
from vizkit.app.downloads import downloaded_samples, samples_reachable
from vizkit.data import ImageList, Preprocess, image_list, preprocess_for
from vizkit.errors import UsageError
from vizkit.framework.registry import App
from vizkit.framework.results import RESULT_FILE, write_atomic
from vizkit.models.bundled import bundled_meta
from vizkit.toolkit.runs import RUN_FILE, snapshot_paths

if TYPE_CHECKING:
    from torch import nn

    from vizkit.framework.analysis import Analysis

DEMO_MODEL = "zfnet-compact"
DEMO_FILE = "demo.json"  # the demo's record of a run; also marks a folder as the demo's own
SAMPLES_ENV = "VIZKIT_SAMPLES"
SHARED_ENV = "VIZKIT_SHARED"
TRAIN_RUN_ENV = "VIZKIT_TRAIN_RUN"
DEFAULT_TRAIN_RUN = Path("vizkit-train")  # the default --out of `vizkit train`
FLAT_CLASSES = 10  # a folder without class sub-folders gives as many images as ten classes would


class Amounts(NamedTuple):
    """How many images a demo run gives its analyses. A data-set analysis (top-9 ranks every image
    it is given; probes need a training and a test split per class) gets many more than a
    single-image one, which draws a figure per image."""

    per_class: int  # images per class in the data set of the data-set analyses (inputs="data")
    images: int  # images for the single-image analyses, one per class, spread over the classes


FULL = Amounts(per_class=30, images=4)  # 300 images of Imagenette's 10 classes: top-9 is selective
QUICK = Amounts(per_class=10, images=1)


# ------------------------------------------------------------------------------------ samples
def sample_image() -> Path:
    """A photograph that ships with matplotlib (Grace Hopper): the offline fallback."""
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def shared_folder() -> Path:
    """The shared data folder: ``$VIZKIT_SHARED``, else ``shared`` beside the source checkout."""
    given = os.environ.get(SHARED_ENV)
    return Path(given) if given else Path(__file__).resolve().parents[2].parent / "shared"


@dataclass(frozen=True)
class Samples:
    """Images picked for the demo, with the class folder of each (None for loose images)."""

    paths: list[Path]
    folders: list[str | None]
    source: str  # where they came from, in words
    fallback: bool = False  # True: no real class images were found
    user: bool = False  # True: chosen by the user ($VIZKIT_SAMPLES)


def class_name(folder: str | None) -> str | None:
    """The bundled model's name for a class folder (``n01440764`` -> ``tench``), else the folder."""
    meta = bundled_meta() or {}
    names = dict(zip(meta.get("class_folders", []), meta.get("classes", [])))
    return names.get(folder, folder) if folder is not None else None


def pick(listing: ImageList, per_class: int) -> tuple[list[Path], list[str | None]]:
    """A deterministic, class-balanced subset of ``listing``: the first ``per_class`` images (in
    sorted order) of each class of an ImageFolder tree, or the first ``FLAT_CLASSES * per_class``
    images of a folder or list without classes."""
    if not listing.classes:
        chosen = listing.paths[: FLAT_CLASSES * per_class]
        return chosen, [None] * len(chosen)
    taken: dict[int, int] = {}
    paths: list[Path] = []
    folders: list[str | None] = []
    for path, target in zip(listing.paths, listing.targets):
        if taken.get(target, 0) < per_class:
            taken[target] = taken.get(target, 0) + 1
            paths.append(path)
            folders.append(listing.classes[target])
    return paths, folders


def find_samples(per_class: int = 2) -> Samples:
    """Real images of the bundled model's classes, read where they are (never copied):
    ``$VIZKIT_SAMPLES`` (a folder, ImageFolder tree or list file), else the Imagenette val tree of
    the shared data folder, else the one ``vizkit samples --download`` fetched, else matplotlib's
    photograph (``fallback``)."""
    if per_class < 1:
        raise UsageError(f"images per class must be at least 1, not {per_class}")
    given = os.environ.get(SAMPLES_ENV)
    if given:
        try:
            listing = image_list(given)
        except UsageError as error:
            raise UsageError(f"{SAMPLES_ENV}={given}: {error}") from None
        paths, folders = pick(listing, per_class)
        return Samples(paths, folders, f"{SAMPLES_ENV}={given}", user=True)
    for val in (shared_folder() / "data" / "imagenette" / "val", downloaded_samples()):
        if val is not None and val.is_dir():
            try:
                paths, folders = pick(image_list(val), per_class)
                return Samples(paths, folders, str(val))
            except UsageError:  # an empty or unreadable tree: look further
                pass
    return Samples([sample_image()], [None], "matplotlib's sample photograph", fallback=True)


FALLBACK_HINT = (
    "no images of the bundled model's classes found, so only matplotlib's sample photograph is used "
    "(`vizkit samples --download` fetches Imagenette's 3,925 validation images once, about 94 MB; "
    f"or set {SAMPLES_ENV} to a folder or class tree of images, or {SHARED_ENV} to a folder holding "
    "data/imagenette/val)"
)


def sample_images(n_per_class: int = 2) -> list[Path]:
    """Real photographs of the bundled ``zfnet-compact`` model's classes, to try analyses on.

    Nothing is copied: the images are read where they are. Looked for in order:
    ``$VIZKIT_SAMPLES`` (a folder, an ImageFolder tree or a text file of paths); the Imagenette
    val tree of the shared data folder (``$VIZKIT_SHARED/data/imagenette/val``, by default
    ``shared`` beside the source checkout); the Imagenette val tree that
    :func:`vizkit.download_samples` (``vizkit samples --download``) fetched into vizkit's cache;
    else the one photograph that ships with matplotlib (Grace Hopper, which the model calls a chain
    saw), with a warning saying how to get real images. ``vizkit samples`` prints the same list.

    Args:
        n_per_class: images per class: the first ones, in sorted order, of each class folder (a
            folder without class sub-folders gives its first ``10 * n_per_class`` images).
    """
    found = find_samples(n_per_class)
    if found.fallback:
        warnings.warn(FALLBACK_HINT, stacklevel=2)
    return found.paths


def spread(paths: list[Path], folders: list[str | None], count: int) -> list[Path]:
    """``count`` images for single-image analyses: one from each of ``count`` classes spread
    evenly over the sorted classes (then second images, ...), or the first ``count`` loose ones."""
    groups: dict[str | None, list[Path]] = {}
    for path, folder in zip(paths, folders):
        groups.setdefault(folder, []).append(path)
    keys = list(groups)
    if count > 1 and len(keys) > count:
        chosen = [keys[round(i * (len(keys) - 1) / (count - 1))] for i in range(count)]
        keys = chosen + [k for k in keys if k not in chosen]
    picked: list[Path] = []
    depth = 0
    while len(picked) < min(count, len(paths)):
        for key in keys:
            if depth < len(groups[key]) and len(picked) < count:
                picked.append(groups[key][depth])
        depth += 1
    return picked


# ------------------------------------------------------------------------------------ resources
class Skip(Exception):
    """An analysis the demo cannot run here (a resource it needs is missing): not a failure."""


def frame_landmarks(images: list[Path], out: Path) -> Path:
    """A landmarks file marking three fixed positions of the frame (not object parts) on
    ``images``, written to ``out/landmarks.json``: the correspondence analysis then runs on any
    images, measuring whether occluding the same place changes their features alike."""
    from vizkit.data import load_image

    entries = []
    for path in images:
        width, height = load_image(path).size
        cx, cy, step = width / 2, height / 2, min(width, height) / 4  # inside any centre crop
        entries.append(
            {
                "image": str(path.resolve()),
                "centre": [round(cx), round(cy)],
                "upper_left": [round(cx - step), round(cy - step)],
                "lower_right": [round(cx + step), round(cy + step)],
            }
        )
    document = {
        "description": "Fixed positions of the frame written by `vizkit demo` (no hand-marked landmarks "
        "were at hand): the same place in every image, not the same object part.",
        "images": entries,
    }
    path = out / "landmarks.json"
    write_atomic(path, (json.dumps(document, indent=1) + "\n").encode())
    return path


def find_train_run() -> Path:
    """The training run the demo shows: ``$VIZKIT_TRAIN_RUN``, else ``./vizkit-train``."""
    given = os.environ.get(TRAIN_RUN_ENV)
    run = Path(given) if given else DEFAULT_TRAIN_RUN
    where = f"{TRAIN_RUN_ENV}={given}" if given else f"./{DEFAULT_TRAIN_RUN}"
    if not (run / RUN_FILE).is_file():
        raise Skip(
            f"no training run at hand ({where} has no {RUN_FILE}; `vizkit train --out vizkit-train ...` "
            f"writes one, or set {TRAIN_RUN_ENV})"
        )
    if not snapshot_paths(run):
        raise Skip(f"the training run {run} has no weight snapshot yet")
    return run


@dataclass
class Resources:
    """What ``demo=`` options may name as ``"{landmarks}"`` or ``"{train_run}"``, found once."""

    images: list[Path]
    out: Path
    notes: Callable[[str], None]
    found: dict[str, Path] = field(default_factory=dict)

    def get(self, name: str) -> Path:
        """The path of resource ``name``, found once (:class:`Skip` when it is not at hand here)."""
        if name not in self.found:
            if name == "landmarks":
                self.found[name] = self._landmarks()
            elif name == "train_run":
                self.found[name] = find_train_run()
            else:
                raise UsageError(f"the demo has no resource '{{{name}}}' (it has {{landmarks}}, {{train_run}})")
        return self.found[name]

    def _landmarks(self) -> Path:
        dogs = shared_folder() / "data" / "dog_landmarks.json"
        if dogs.is_file():
            return dogs
        if len(self.images) < 2:
            raise Skip(
                f"needs landmarks on two or more images, and has {len(self.images)} "
                f"(set {SHARED_ENV} to a folder holding data/dog_landmarks.json, or pass --data with more images)"
            )
        self.notes(
            "demo: note: the landmarks are fixed frame positions (no dog_landmarks.json found; set VIZKIT_SHARED)"
        )
        return frame_landmarks(self.images, self.out)

    def fill(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with every ``"{name}"`` value replaced by that resource's path, and every
        ``"{result:NAME}"`` by the folder of this demo's NAME result (analyses run in name order),
        or left out when that analysis did not run or failed."""
        filled = {}
        for key, value in options.items():
            if isinstance(value, str) and value.startswith("{result:") and value.endswith("}"):
                folder = self.out / value[len("{result:") : -1]
                if not (folder / "result.json").is_file():
                    self.notes(f"demo: note: no {folder.name} result to give as --{key.replace('_', '-')}")
                    continue
                value = str(folder)
            elif isinstance(value, str) and value.startswith("{") and value.endswith("}"):
                value = str(self.get(value[1:-1]))
            filled[key] = value
        return filled


# ------------------------------------------------------------------------------------ the demo
@dataclass
class DemoSummary:
    """What a demo run did: per analysis its status (``ok``, ``skipped``, ``failed``)."""

    statuses: dict[str, str]
    report: Path
    count: int

    @property
    def failed(self) -> list[str]:
        """The analyses that failed (the caller's exit status follows from them)."""
        return [name for name, status in self.statuses.items() if status == "failed"]


def _previous_results(out: Path) -> set[str]:
    """The analyses whose results an earlier demo saved in ``out`` (plain folder names only)."""
    try:
        record = json.loads((out / DEMO_FILE).read_text())
        names = {name for name, entry in record.get("analyses", {}).items() if entry.get("status") == "ok"}
    except (OSError, ValueError, AttributeError):
        return set()
    return {name for name in names if isinstance(name, str) and name not in ("", ".", "..") and "/" not in name}


def check_demo_out(out: Path, overwrite: bool) -> None:
    """The demo writes into a new or empty folder, or one it wrote before (holding ``demo.json``);
    any other folder only with ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_FILE).is_file() and not overwrite:
        raise UsageError(
            f"--out {out} holds files the demo did not write; choose a new folder or pass --overwrite to write into it"
        )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, UsageError) else f"{type(error).__name__}: {text}"


def run_demo(
    app: App,
    out: Path,
    data: str | None,
    quick: bool,
    overwrite: bool,
    echo: Callable[[str], None] = print,
    progress: bool = False,
) -> DemoSummary:
    """Run every analysis that declares a demo on the bundled model, save each result in
    ``out/<analysis>``, write the report, and return what happened.

    A failing analysis is reported in one line and the others still run; the caller decides the
    exit status from :attr:`DemoSummary.failed`.

    Args:
        app: the plugin registry whose analyses run.
        out: the demo's folder (see :func:`check_demo_out`).
        data: the user's images (a folder, ImageFolder tree or text file of paths); None: the
            sample images (:func:`find_samples`).
        quick: fewer images and each analysis's ``demo_quick`` settings (well under a minute).
        overwrite: write into a folder the demo did not make.
        echo: where progress lines go.
        progress: each analysis's progress on stderr as it runs (a bar on a terminal, else a
            line every ~10 s).
    """
    check_demo_out(out, overwrite)
    amounts = QUICK if quick else FULL
    picked = _demo_images(data, amounts.per_class, echo)
    model = vizkit.load_model(DEMO_MODEL, app=app)
    dataset = _class_balanced_set(picked, preprocess_for(model))
    inputs = _DemoInputs(
        model, spread(picked.paths, picked.folders, amounts.images), dataset, quick, picked.lenient, progress
    )
    echo(_header(picked, dataset, len(inputs.images)))
    short = _short_of_images(picked, amounts.per_class, app)
    if short:
        echo(short)
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_results(out)
    resources = Resources(spread(picked.paths, picked.folders, max(3, amounts.images)), out, echo)  # landmark images
    record: dict[str, Any] = {
        "vizkit_version": vizkit.__version__,
        "model": DEMO_MODEL,
        "quick": quick,
        "source": picked.source,
        "images": [str(p) for p in inputs.images],
        "data": [{"path": str(p), "class": class_name(f)} for p, f in zip(picked.paths, picked.folders)],
        "analyses": {},
    }
    write_atomic(out / DEMO_FILE, (json.dumps(record, indent=2) + "\n").encode())  # marks the folder as ours
    width = max((len(name) for name in app.analyses), default=8)
    for analysis in sorted(app.analyses.values(), key=lambda a: a.name):
        if analysis.demo is None:
            continue
        entry, line = _run_analysis(app, analysis, out / analysis.name, inputs, resources)
        record["analyses"][analysis.name] = entry
        echo(f"demo: {analysis.name:<{width}}  {line}")
    _remove_stale_results(out, previous, record["analyses"])
    write_atomic(out / DEMO_FILE, (json.dumps(record, indent=2) + "\n").encode())
    from vizkit.app.report import write_report  # imported here: `import vizkit` stays light

    report, count = write_report(out, app)
    echo(f"demo: report with {count} result(s): {report}")
    statuses = {name: entry["status"] for name, entry in record["analyses"].items()}
    return DemoSummary(statuses, report, count)


def _header(picked: _DemoImages, dataset: ImageList, single: int) -> str:
    """The line that says what the demo runs on: the data-set analyses get the whole pick, the
    single-image ones a few of its images."""
    classes = dataset.classes
    counts = sorted(Counter(picked.folders).values())
    per_class = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
    return (
        f"demo: {DEMO_MODEL} on {len(picked.paths)} image(s)"
        + (f" of {len(classes)} class{'es' if len(classes) != 1 else ''}" if classes else "")
        + f" from {picked.source}"
        + (f" ({per_class} per class)" if classes else "")
        + f"; the single-image analyses use {single} of them"
    )


def _short_of_images(picked: _DemoImages, per_class: int, app: App) -> str | None:
    """A note when the data-set analyses get fewer images than the demo asks for (``per_class``
    of each class): top-9 out of a few dozen images is hardly selective. None when the pick is
    whole, or is only the fallback photograph (whose note says so already)."""
    names = sorted(a.name for a in app.analyses.values() if a.demo is not None and a.inputs == "data")
    counts = Counter(picked.folders)
    wanted = per_class * (len(counts) if picked.folders and picked.folders[0] is not None else FLAT_CLASSES)
    if not names or len(picked.paths) >= wanted or picked.fallback:
        return None
    return (
        f"demo: note: only {len(picked.paths)} image(s) for the data-set analyses ({', '.join(names)}), fewer "
        f"than the {per_class} a class the demo asks for; top-9 is selective only among a few hundred"
    )


@dataclass(frozen=True)
class _DemoImages:
    """The demo's class-balanced pick of images, where it came from, and whether an analysis
    that refuses them is skipped (``lenient``) rather than failed."""

    paths: list[Path]
    folders: list[str | None]
    source: str
    lenient: bool
    fallback: bool = False  # only matplotlib's photograph: no images of the model's classes found


DOWNLOAD_OFFER = (
    "demo: no images of the bundled model's classes were found: `vizkit samples --download` fetches them "
    "once (Imagenette's 3,925 validation images, about 94 MB, into vizkit's cache), then run `vizkit demo` "
    "again; this run goes on with matplotlib's one sample photograph"
)
NO_SAMPLES_NOTE = (
    "demo: note: no images of the bundled model's classes found, so only matplotlib's sample photograph "
    f"is used (set {SAMPLES_ENV} to a folder or class tree of images, or {SHARED_ENV} to a folder holding "
    "data/imagenette/val, or pass --data)"
)


def _demo_images(data: str | None, per_class: int, echo: Callable[[str], None]) -> _DemoImages:
    """The images the demo runs on: the user's ``data``, else the sample images. When only the
    fallback photograph was found, the first line says so: it offers the one-command download
    when the samples' server answers (:func:`~vizkit.app.downloads.samples_reachable`, at most
    ~2 s), else it names the other ways to give images. Nothing is downloaded here."""
    # on the user's images or the fallback photograph, an analysis that refuses them (a usage
    # error: e.g. probes without class folders) is skipped; on the sample images it has failed
    if data is not None:
        paths, folders = pick(image_list(data), per_class)
        return _DemoImages(paths, folders, f"--data {data}", lenient=True)
    samples = find_samples(per_class)
    if samples.fallback:
        echo(DOWNLOAD_OFFER if samples_reachable() else NO_SAMPLES_NOTE)
    lenient = samples.fallback or samples.user
    return _DemoImages(samples.paths, samples.folders, samples.source, lenient, fallback=samples.fallback)


def _class_balanced_set(picked: _DemoImages, preprocess: Preprocess) -> ImageList:
    """The pick as the data set that ``inputs="data"`` analyses get: classes in the order of their
    folders' names, named as the bundled model names them (``tench``, not ``n01440764``; a folder
    it does not know keeps its own name)."""
    folders = sorted({f for f in picked.folders if f is not None})
    names = [class_name(f) or f for f in folders]  # the model's names ("tench"), not wnids, where known
    classes = names if len(set(names)) == len(names) else folders
    return ImageList(
        picked.paths,
        classes,
        [folders.index(f) for f in picked.folders if f is not None] if folders else [],
        preprocess,
        source=f"{picked.source} (the demo's class-balanced pick)",
    )


@dataclass(frozen=True)
class _DemoInputs:
    """What every analysis of one demo run is given, and how it runs."""

    model: nn.Module
    images: list[Path]  # for single-image analyses
    dataset: ImageList  # for analyses of a data set
    quick: bool  # each analysis's demo_quick settings over its demo ones
    lenient: bool  # a usage error is a skip (the user's images or the fallback photograph)
    progress: bool = False  # each analysis's progress on stderr


def _run_analysis(
    app: App, analysis: Analysis, target: Path, inputs: _DemoInputs, resources: Resources
) -> tuple[dict[str, Any], str]:
    """Run one analysis's demo and save its result in ``target``: its entry in ``demo.json``
    (status, reason, seconds) and its progress line. A failure is recorded, never raised, so
    that the other analyses still run."""
    started = time.perf_counter()
    entry: dict[str, Any] = {"folder": analysis.name}
    try:
        demo = analysis.demo or {}
        options = resources.fill({**demo, **((analysis.demo_quick or {}) if inputs.quick else {})})
        result = vizkit.run(
            analysis.name,
            None if analysis.model_from is not None else inputs.model,
            images=inputs.images[: analysis.demo_images] if analysis.inputs in ("images", "any") else None,
            data=inputs.dataset if analysis.inputs == "data" else None,
            app=app,
            out=target,
            progress=inputs.progress,
            **options,
        )
        result.save(target, overwrite=True)
        entry["status"] = "ok"
        line = f"{time.perf_counter() - started:6.1f}s  {target}"
    except Skip as why:
        entry.update(status="skipped", reason=str(why))
        line = f"skipped: {why}"
    except Exception as error:  # one analysis failing must not stop the others
        if inputs.lenient and isinstance(error, UsageError):  # it refuses these images: not the demo's fault
            entry.update(status="skipped", reason=_one_line(error))
            line = f"skipped: {_one_line(error)}"
        else:
            entry.update(status="failed", reason=_one_line(error))
            line = f"FAILED after {time.perf_counter() - started:.1f}s: {_one_line(error)}"
    entry["seconds"] = round(time.perf_counter() - started, 2)
    return entry, line


def _remove_stale_results(out: Path, previous: set[str], entries: dict[str, dict[str, Any]]) -> None:
    """Remove the results an earlier demo saved for analyses that did not succeed this time:
    they would pass for this run's."""
    done = {name for name, entry in entries.items() if entry["status"] == "ok"}
    for name in sorted(previous - done):
        if (out / name / RESULT_FILE).is_file():
            shutil.rmtree(out / name)
