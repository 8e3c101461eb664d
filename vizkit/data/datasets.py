"""Datasets with skip accounting: an ordered list of image files (a folder, an ImageFolder tree
or a text file of paths), batches that leave unreadable files out, and the record of what was
skipped and why (``inputs.skipped_images`` in result.json)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from vizkit.data.images import UnreadableImage, is_image_file, load_image
from vizkit.data.preprocess import Preprocess
from vizkit.errors import UsageError


@dataclass
class ImageList(Dataset):
    """An ordered list of image files, each with an optional class (ImageFolder sub-folder).

    ``images[i]`` is ``(preprocessed image, i)`` and raises :class:`UnreadableImage` for a file
    that cannot be read; :meth:`read` returns a :class:`BadImage` instead, and
    :func:`read_batches` batches the list, leaving such files out (or stopping at the first one,
    when strict). ``source`` names where the list came from (the ``--data`` value), for messages.
    """

    paths: list[Path]
    classes: list[str] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    preprocess: Preprocess = field(default_factory=Preprocess)
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.preprocess(load_image(self.paths[index])), index

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:
        return (self[i] for i in range(len(self)))

    def read(self, index: int) -> tuple[Tensor, int] | BadImage:
        """``self[index]``, or a :class:`BadImage` saying why the file cannot be read (never
        raises for a bad file, so a DataLoader worker can hand it back with its batch).

        Args:
            index: the item's position in the list.
        """
        try:
            image = load_image(self.paths[index])
        except UnreadableImage as error:
            return BadImage(index, str(self.paths[index]), error.why, error.detail)
        return self.preprocess(image), index

    @property
    def where(self) -> str:
        """How messages name the list: its source, else its first file's folder."""
        if self.source:
            return self.source
        return str(Path(self.paths[0]).parent) if self.paths else "an empty image list"


@dataclass(frozen=True)
class BadImage:
    """An item of an :class:`ImageList` whose file cannot be read: ``index`` in that list, the
    file's ``path``, ``why`` (a short kind, see :class:`UnreadableImage`) and the reader's
    ``detail``. What :meth:`ImageList.read` returns in place of ``(image, index)``."""

    index: int
    path: str
    why: str
    detail: str


class SkippedImages:
    """The unreadable images one run met while reading a dataset.

    Without ``strict`` each is skipped: the first :attr:`WARN_FIRST` get a warning on stderr that
    names the file and says why, later ones only a single line saying that more follow; the
    count, the kinds and the first :attr:`LISTED` files go to ``result.json``
    (``inputs.skipped_images``, see :meth:`summary`). With ``strict`` the first one is an
    :class:`UnreadableImage` (a one-line error naming it). A file is recorded once, however
    often it is met (a per-epoch rescan, a resumed scan).

    Args:
        strict: stop at the first unreadable image instead of skipping it.
        source: how messages name the dataset (the ``--data`` value).
        stream: where warnings go; None: ``sys.stderr`` at the time of writing.
    """

    WARN_FIRST = 5  # files named one warning each; later ones are counted quietly
    LISTED = 20  # files listed in result.json; the count covers all of them

    def __init__(self, strict: bool = False, source: str = "", stream: TextIO | None = None) -> None:
        self.strict = strict
        self.source = source
        self._stream = stream
        self._records: dict[str, tuple[str, str]] = {}  # path -> (why, detail), in the order met

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, path: object) -> bool:
        return str(path) in self._records

    @property
    def count(self) -> int:
        """How many distinct files were skipped."""
        return len(self._records)

    @property
    def paths(self) -> list[str]:
        """The skipped files, in the order they were met."""
        return list(self._records)

    def _warn(self, text: str) -> None:
        print(f"vizkit: warning: {text}", file=self._stream or sys.stderr, flush=True)

    def add(self, bad: BadImage, warn: bool = True) -> None:
        """Record an unreadable item (or, when strict, raise :class:`UnreadableImage` for it).

        Args:
            bad: the item, as :meth:`ImageList.read` returned it.
            warn: print the warning for it (a record merged from a checkpoint or another
                process is added quietly).
        """
        if self.strict:
            raise UnreadableImage(
                f"cannot read image {bad.path}: {bad.why} ({bad.detail}); --strict stops at the first unreadable "
                "image (without it, unreadable images are skipped with a warning)",
                bad.path,
                bad.why,
                bad.detail,
            )
        if bad.path in self._records:
            return
        self._records[bad.path] = (bad.why, bad.detail)
        if not warn:
            return
        if len(self._records) <= self.WARN_FIRST:
            detail = f": {bad.detail}" if bad.detail and bad.detail != bad.why else ""
            self._warn(f"skipping unreadable image {bad.path} ({bad.why}{detail})")
        elif len(self._records) == self.WARN_FIRST + 1:
            self._warn(
                f"more unreadable images: skipping them without a warning each (their count and the first "
                f"{self.LISTED} go to result.json)"
            )

    def take(self, batch: tuple[Tensor, Tensor, list[BadImage]]) -> tuple[Tensor, Tensor]:
        """A batch of :func:`read_batches`' loader with its unreadable items recorded (see
        :meth:`add`): the readable images and their indices.

        Args:
            batch: (images, indices, bad items), as the collate function of :func:`image_loader`
                makes it.
        """
        images, indices, bad = batch
        for item in bad:
            self.add(item)
        return images, indices

    def why(self) -> dict[str, int]:
        """How many files were skipped for each kind of reason, most common first."""
        return dict(Counter(why for why, _ in self._records.values()).most_common())

    def summary(self) -> dict[str, Any]:
        """What ``result.json`` holds under ``inputs.skipped_images``: ``count`` (files
        skipped), ``why`` (count per kind of reason), ``files`` (the first :attr:`LISTED`, in the
        order met, each ``{"path", "why", "detail"}``) and ``listed`` (how many ``files`` holds)."""
        files = [
            {"path": path, "why": why, "detail": detail}
            for path, (why, detail) in list(self._records.items())[: self.LISTED]
        ]
        return {"count": self.count, "why": self.why(), "files": files, "listed": len(files)}

    def state_dict(self) -> list[list[str]]:
        """The records as plain lists (for a checkpoint loaded with ``weights_only=True``)."""
        return [[path, why, detail] for path, (why, detail) in self._records.items()]

    def load_state_dict(self, rows: Iterable[Sequence[str]]) -> None:
        """Add the records of :meth:`state_dict` (quietly; already known files are kept as they are).

        Args:
            rows: ``[path, why, detail]`` lists, e.g. from a checkpoint.
        """
        for path, why, detail in rows:
            self._records.setdefault(str(path), (str(why), str(detail)))

    def none_readable(self, images: ImageList) -> UsageError:
        """The error for a dataset none of whose images could be read (to raise).

        Args:
            images: the dataset; its first recorded file is given as the example.
        """
        example = next((str(p) for p in images.paths if str(p) in self._records), None)
        detail = ""
        if example is not None:
            why, text = self._records[example]
            detail = f", e.g. {example} ({why}: {text})" if text != why else f", e.g. {example} ({why})"
        return UsageError(f"no readable images in {self.source or images.where}: {len(images)} skipped{detail}")

    def report(self, what: str = "") -> None:
        """One closing warning line with the count and kinds (nothing when none was skipped).

        Args:
            what: who is speaking, e.g. the analysis's name (a prefix of the line).
        """
        if not self._records:
            return
        kinds = ", ".join(f"{n} {why}" for why, n in self.why().items())
        where = f" in {self.source}" if self.source else ""
        plural = "s" if self.count != 1 else ""
        self._warn(
            f"{what + ': ' if what else ''}skipped {self.count} unreadable image{plural}{where} ({kinds}); "
            "listed under inputs.skipped_images in result.json (--strict stops at the first one instead)"
        )


class _Readable(Dataset):
    """An ImageList whose items are ``(image, index)`` or a BadImage, never an exception (so a
    worker hands bad files back with the batch instead of dying)."""

    def __init__(self, images: ImageList) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | BadImage:
        return self.images.read(index)


def collate_readable(items: list[tuple[Tensor, int] | BadImage]) -> tuple[Tensor, Tensor, list[BadImage]]:
    """A DataLoader collate function for :meth:`ImageList.read` items: ``(images, indices,
    bad)``, the readable items stacked as usual and the unreadable ones passed on as
    :class:`BadImage` s. A batch of only bad items has empty ``images`` and ``indices``.

    Args:
        items: the batch's items, in order.
    """
    good = [item for item in items if not isinstance(item, BadImage)]
    bad = [item for item in items if isinstance(item, BadImage)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images, indices = default_collate(good)
    return images, indices, bad


def workers_ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGINT and SIGTERM and leaves stopping
    to the main process.

    Ctrl-C in a terminal signals the whole process group, workers included; a worker killed by
    it makes the main process fail with "DataLoader worker exited unexpectedly" instead of
    finishing its step and saving its checkpoint. Workers still end with the main process (the
    DataLoader shuts them down, and they exit when their parent is gone).

    Args:
        worker_id: the worker's number (DataLoader passes it; unused).
    """
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def image_loader(
    images: ImageList, indices: Sequence[int] | None = None, batch_size: int = 32, workers: int = 0
) -> DataLoader:
    """A DataLoader over ``images`` (in order) whose batches are ``(images, indices, bad)`` (see
    :func:`collate_readable`); :meth:`SkippedImages.take` records the bad ones. Unreadable
    files travel back from the workers as data, never as a worker's exception.

    Args:
        images: the dataset.
        indices: the positions to load, in this order (None: all of them).
        batch_size: items per batch (bad ones included, so batch ``b`` always covers the same
            positions).
        workers: data-loading worker processes (0: load in this process).
    """
    dataset: Dataset = _Readable(images)
    if indices is not None:
        dataset = Subset(dataset, list(indices))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_readable,
        worker_init_fn=workers_ignore_stop_signals,  # Ctrl-C reaches them too: the main process stops cleanly
    )


def read_batches(
    images: ImageList,
    skipped: SkippedImages | None = None,
    indices: Sequence[int] | None = None,
    batch_size: int = 32,
    workers: int = 0,
    keep_empty: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(images [B,3,H,W], indices [B])`` batches of a dataset, its unreadable files left out
    and recorded in ``skipped`` (warned about, counted), or, when ``skipped.strict``, an
    :class:`UnreadableImage` at the first one.

    Args:
        images: the dataset.
        skipped: where unreadable files are recorded; None: a fresh, non-strict record.
        indices: the positions to read, in this order (None: all of them).
        batch_size: positions per batch; a batch holds fewer images when some were unreadable.
        workers: data-loading worker processes (0: load in this process).
        keep_empty: also yield batches whose every image was unreadable (empty tensors), so
            that a caller counting batches (checkpoints, shards) stays in step.
    """
    record = SkippedImages() if skipped is None else skipped
    for batch in image_loader(images, indices, batch_size, workers):
        good, where = record.take(batch)
        if len(where) or keep_empty:
            yield good, where


def first_readable(images: ImageList, skipped: SkippedImages | None = None) -> tuple[Tensor, int]:
    """The first item of ``images`` that can be read, as ``(image, index)`` (e.g. the probe
    image an analysis runs once to learn shapes); the unreadable ones before it are recorded in
    ``skipped`` (and warned about once a readable one is found: when none is, the UsageError
    "no readable images in DATA: N skipped, e.g. ..." is the only line the user sees).

    Args:
        images: the dataset.
        skipped: where unreadable files are recorded (strict: the first one raises); None: a
            fresh, non-strict record.
    """
    record = SkippedImages() if skipped is None else skipped
    pending: list[BadImage] = []
    for index in range(len(images)):
        item = images.read(index)
        if not isinstance(item, BadImage):
            for bad in pending:
                record.add(bad)
            return item
        if record.strict:
            record.add(item)  # raises
        pending.append(item)
    if not len(images):
        raise UsageError(f"no images in {record.source or images.where}")
    for bad in pending:
        record.add(bad, warn=False)
    raise record.none_readable(images)


def _image_files(root: str | os.PathLike) -> list[Path]:
    """The image files under the folder ``root``, sorted: searched recursively, following
    symlinked folders (as torchvision's ImageFolder does; a symlinked class folder used to be
    left out without a word) but never round a symlink loop, and leaving out hidden files and
    folders (``.ipynb_checkpoints``, ``.git``, ...: a checkpoint copy used to count as an image and
    ``.ipynb_checkpoints`` as a class). A broken symlink with an image name is kept, so reading it
    says it is missing. Unreadable folders are passed over, as ``os.walk`` does.

    Args:
        root: the folder.
    """
    found: list[Path] = []

    def walk(folder: Path, ancestors: frozenset[str]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows a symlink
                real = os.path.realpath(path)
                if real not in ancestors:  # a link back up the tree would never end
                    walk(path, ancestors | {real})
            elif is_image_file(path) and (entry.is_file() or entry.is_symlink()):
                found.append(path)

    walk(Path(root), frozenset({os.path.realpath(root)}))
    return sorted(found)


def _listed_files(listing: Path) -> list[Path]:
    """The image files a UTF-8 text file lists, one per line, in its order (see :func:`image_list`);
    none listed, a missing one or one listed twice is a UsageError.

    Args:
        listing: the text file; relative paths are relative to its folder.
    """
    try:  # utf-8-sig: a byte-order mark (Windows editors) would become part of the first path
        lines = [line.strip() for line in listing.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise UsageError(f"--data {listing} is neither a folder nor a UTF-8 text file of image paths") from None
    listed = [
        (number, Path(line) if Path(line).is_absolute() else listing.parent / line)
        for number, line in enumerate(lines, 1)
        if line and not line.startswith("#")
    ]
    paths = [path for _, path in listed]
    if not paths:
        raise UsageError(f"no image paths listed in {listing}")
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{len(missing)} image(s) listed in {listing} do not exist, e.g. {missing[0]}")
    first_line: dict[str, int] = {}
    for number, path in listed:  # the same file twice would be two images: twice a top9 winner
        earlier = first_line.setdefault(os.path.realpath(path), number)
        if earlier != number:
            raise UsageError(
                f"{listing} lists the same image twice, on lines {earlier} and {number} ({path}); list each image once"
            )
    return paths


def image_list(source: str | os.PathLike, preprocess: Preprocess | None = None) -> ImageList:
    """The images under ``source``: a folder, an ImageFolder tree, or a text file of paths.

    Order is deterministic (sorted paths; the text file's own order), so indices are stable.

    Args:
        source: a folder (searched recursively, symlinked folders followed, hidden files and
            folders such as ``.ipynb_checkpoints`` left out: see :func:`_image_files`; an
            ImageFolder tree when every image is in a sub-folder, whose names become the classes),
            or a UTF-8 text file of image paths, one per line (relative to the file's folder; blank
            lines and ``#`` comments skipped; a byte-order mark is ignored; a file listed twice is a
            UsageError, since a scan would count it as two images).
        preprocess: how the dataset's items are preprocessed; None: the ImageNet default.
    """
    root = Path(source)
    preprocess = preprocess or Preprocess()
    if not root.exists():
        raise UsageError(f"data not found: {root}")
    if root.is_file() and is_image_file(root):
        raise UsageError(f"--data {root} is one image; --data takes a folder or a text file of paths (use --image)")
    if root.is_file():
        return ImageList(_listed_files(root), preprocess=preprocess, source=str(root))
    paths = _image_files(root)
    if not paths:
        raise UsageError(f"no images found under {root}")
    subfolders = sorted({p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1})
    loose = [p for p in paths if len(p.relative_to(root).parts) == 1]
    if subfolders and not loose:  # an ImageFolder tree: class = first sub-folder
        index = {name: i for i, name in enumerate(subfolders)}
        targets = [index[p.relative_to(root).parts[0]] for p in paths]
        return ImageList(paths, subfolders, targets, preprocess, str(root))
    return ImageList(paths, preprocess=preprocess, source=str(root))


def images_per_class(folder: str | os.PathLike, per_class: int, seed: int = 0, limit: int | None = None) -> list[Path]:
    """Training images drawn evenly from a folder: with class sub-folders (an ImageFolder or a
    Caltech-101 tree), ``per_class`` images drawn (seeded, without replacement) from each
    (sorted within the class); otherwise every image of ``folder``. At most ``limit`` in all;
    a missing folder or one without images is a UsageError. Hidden files and folders are left
    out, as :func:`image_list` leaves them.

    Args:
        folder: the folder.
        per_class: images drawn from each class folder.
        seed: the draw's seed.
        limit: keep at most this many (the first ones).
    """
    import torch

    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"--data {root}: no such folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    generator = torch.Generator().manual_seed(seed)
    chosen: list[Path] = []
    if classes:
        for directory in classes:
            files = _image_files(directory)
            order = torch.randperm(len(files), generator=generator).tolist()
            chosen.extend(sorted(files[i] for i in order[:per_class]))
    else:
        chosen = _image_files(root)
    if limit is not None:
        chosen = chosen[:limit]
    if not chosen:
        raise UsageError(f"--data {root}: no images in it or its class folders")
    return chosen
