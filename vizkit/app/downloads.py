"""Real photographs of the bundled model's classes, fetched once into vizkit's cache.

The images cannot ship inside the package (they are ImageNet photographs, under ImageNet's terms
of access, not an open licence), so ``vizkit samples --download`` fetches the validation split of
fast.ai's Imagenette (160 px; the same ten classes ``zfnet-compact`` was trained on) for the user,
checks the archive's MD5, keeps only ``val/`` and deletes the archive. :func:`vizkit.sample_images`
and the demo find the result there without any setting.

Where: ``$VIZKIT_CACHE/samples`` (default ``~/.cache/vizkit/samples``). The
tree appears in one rename once it is complete, so an interrupted download or extraction never
leaves a half tree that looks finished; the archive is written as ``<name>.part`` and renamed
once whole, and one whose MD5 is not the expected one is fetched again. The download shows its
progress on stderr (a bar on a terminal, else a line every ~10 s).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vizkit.errors import VizkitError
from vizkit.toolkit.cache import cache_folder
from vizkit.toolkit.progress import progress_bar
from vizkit.version import __version__

TREE_NAME = "imagenette2-160-val"  # the finished tree under <cache>/samples


@dataclass(frozen=True)
class Archive:
    """Where a sample set comes from, and how to check it."""

    url: str
    md5: str
    member_prefix: str  # the archive folder whose files are kept, e.g. "imagenette2-160/val/"
    source: str  # in words, with its terms, for messages and the README
    approx_mb: int  # download size, said before downloading


# The URL and checksum are fast.ai's (torchvision's Imagenette dataset lists the same pair; a test
# checks that they still agree).
IMAGENETTE_160_VAL = Archive(
    url="https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
    md5="e793b78cc4c9e9a4ccc0c1155377a412",
    member_prefix="imagenette2-160/val/",
    source="fast.ai Imagenette v2, 160 px, val split (ImageNet photographs; ImageNet terms of access)",
    approx_mb=94,
)


def downloaded_samples() -> Path | None:
    """The downloaded class tree (``<cache>/samples/imagenette2-160-val``) if it is there."""
    tree = cache_folder() / "samples" / TREE_NAME
    return tree if tree.is_dir() else None


def download_samples(
    archive: Archive | None = None, echo: Callable[[str], None] = print, progress: bool = True
) -> Path:
    """Fetch the Imagenette validation images into vizkit's cache (once) and return the class tree.

    Already there: returned at once, nothing fetched. Otherwise the archive (about 94 MB) is
    downloaded (MD5 checked), its ``val/`` files are extracted (regular files only, no paths
    outside the tree) and the archive is deleted.

    Args:
        archive: what to fetch; None: Imagenette 160 px (:data:`IMAGENETTE_160_VAL`).
        echo: where the two lines before and after go.
        progress: show the download's progress on stderr (a bar on a terminal, else a line
            every ~10 s).

    Raises:
        VizkitError: the download failed or the archive is not the expected one; nothing is left
            that a later call would mistake for a finished tree.
    """
    archive = archive or IMAGENETTE_160_VAL
    samples = cache_folder() / "samples"
    tree = samples / TREE_NAME
    if tree.is_dir():
        return tree
    try:
        samples.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VizkitError(f"cannot create the sample cache {samples}: {error.strerror or error}") from None
    name = archive.url.rsplit("/", 1)[-1]
    archive_path = samples / name
    if not (archive_path.is_file() and md5_of(archive_path) == archive.md5):
        echo(f"downloading {archive.source}: about {archive.approx_mb} MB from {archive.url}")
        try:
            fetch(archive.url, archive_path, progress)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
            if isinstance(error, urllib.error.HTTPError):
                reason = f"HTTP {error.code} {reason}"
            raise VizkitError(
                f"could not download {archive.url}: {reason} (check the connection, or point "
                "VIZKIT_SAMPLES at images you have)"
            ) from None
        if md5_of(archive_path) != archive.md5:
            archive_path.unlink(missing_ok=True)
            raise VizkitError(
                f"the file downloaded from {archive.url} is not the expected archive (MD5 differs "
                f"from {archive.md5}); it was deleted, try again later"
            )
    count = extract_tree(archive_path, archive.member_prefix, tree)
    archive_path.unlink(missing_ok=True)
    echo(f"kept {count} images in {tree} (the archive was deleted)")
    return tree


def fetch(url: str, target: Path, progress: bool = True) -> None:
    """Download ``url`` into ``target``: written as ``<target>.part``, renamed when whole (a partial
    file is removed on any error), with its progress in MB on stderr.

    Raises:
        urllib.error.URLError, OSError: the server or the connection failed (an HTTPError for an
            HTTP status).
    """
    import urllib.request

    partial = target.with_name(target.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": f"vizkit/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(partial, "wb") as file:
            length = response.headers.get("Content-Length", "")
            total = round(int(length) / 1e6, 1) if length.isdigit() else None
            bar = progress_bar(total=total, desc=f"downloading {target.name}", unit="MB", enabled=progress)
            try:
                while chunk := response.read(1_000_000):
                    file.write(chunk)
                    bar.update(len(chunk) / 1e6)
            finally:
                bar.close()
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def md5_of(path: Path) -> str:
    """The MD5 of a file, read in 1 MB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def extract_tree(archive_path: Path, member_prefix: str, tree: Path) -> int:
    """Extract the regular files under ``member_prefix`` of a tar archive into ``tree`` (which must
    not exist yet), atomically: into a temporary sibling first, renamed when complete. Returns how
    many files were kept; an archive without any is refused."""
    partial = Path(tempfile.mkdtemp(prefix=f".{tree.name}-", dir=tree.parent))
    try:
        with tarfile.open(archive_path) as tar:
            kept = [
                member
                for member in tar
                if member.isfile() and member.name.startswith(member_prefix) and safe_relative(member.name)
            ]
            for member in kept:
                member.name = member.name[len(member_prefix) :]
            if not kept:
                raise VizkitError(f"{archive_path} holds no files under {member_prefix}")
            tar.extractall(partial, members=kept, filter="data")
        os.replace(partial, tree)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise VizkitError(f"cannot unpack {archive_path}: {error}; delete it and try again") from None
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return len(kept)


def safe_relative(name: str) -> bool:
    """True for an archive member name that stays inside the folder it is extracted to."""
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts


REACHABLE_TIMEOUT = 2.0  # seconds the demo waits to learn whether it may offer the download


def samples_reachable(archive: Archive | None = None, timeout: float = REACHABLE_TIMEOUT) -> bool:
    """Whether the sample archive's server answers a HEAD request for it (a 2xx or 3xx status)
    within ``timeout`` seconds in all, name lookup included: the demo offers the download only
    then. Nothing is downloaded.

    Args:
        archive: whose URL to ask about; None: Imagenette 160 px (:data:`IMAGENETTE_160_VAL`).
        timeout: seconds to wait at most; a slow name lookup or server counts as unreachable.
    """
    import threading
    import urllib.request

    url = (archive or IMAGENETTE_160_VAL).url
    answer: list[bool] = []

    def ask() -> None:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": f"vizkit/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer.append(200 <= response.status < 400)
        except (urllib.error.URLError, OSError, ValueError):
            answer.append(False)

    # in a thread: urlopen's timeout does not bound the name lookup, which can take far longer offline
    asking = threading.Thread(target=ask, name="vizkit-samples-reachable", daemon=True)
    asking.start()
    asking.join(timeout)
    return bool(answer and answer[0])
