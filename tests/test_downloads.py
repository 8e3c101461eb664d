"""`vizkit samples --download`: Imagenette's val images fetched once into vizkit's cache.

The real archive (94 MB from fast.ai) cannot be fetched here; a small archive with the same
layout is served over HTTP from this machine (a local ``http.server``) through the same code path
(torchvision's downloader, the MD5 check, the extraction), and the real URL and checksum are
checked against torchvision's.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
from pathlib import Path

import pytest
from PIL import Image

import vizkit
from vizkit.app import downloads
from vizkit.app.cli import main
from vizkit.app.downloads import Archive, download_samples, downloaded_samples

WNIDS = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079"]


def jpeg_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (shade, 90, 200 - shade)).save(buffer, "JPEG")
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def serve(tmp_path):
    """A local HTTP server over ``tmp_path/served``; yields the base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # silence the request log
        pass


def fake_imagenette(path: Path, base_url: str, hostile: bool = False) -> Archive:
    """An archive laid out like imagenette2-160.tgz: train/ and val/ class folders (2 val images
    a class); ``hostile`` adds members that must never be extracted (a path escaping the tree,
    an absolute path, a link)."""
    with tarfile.open(path, "w:gz") as tar:
        for i, wnid in enumerate(WNIDS):
            for split, count in (("train", 3), ("val", 2)):
                for k in range(count):
                    add(tar, f"imagenette2-160/{split}/{wnid}/{split}_{k}.JPEG", jpeg_bytes(20 * i + k))
        add(tar, "imagenette2-160/noisy_imagenette.csv", b"path,label\n")
        if hostile:
            add(tar, "imagenette2-160/val/../../escaped.txt", b"outside")
            add(tar, "/tmp/absolute-vizkit-test.txt", b"absolute")
            link = tarfile.TarInfo("imagenette2-160/val/n01440764/link.JPEG")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    return Archive(f"{base_url}/{path.name}", md5, "imagenette2-160/val/", "a test archive", 1)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VIZKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZKIT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.delenv("VIZKIT_SAMPLES", raising=False)
    return tmp_path / "cache"


def test_the_archive_is_the_one_torchvision_knows():
    from torchvision.datasets import Imagenette

    known = getattr(Imagenette, "_ARCHIVES", {}).get("160px")
    if known is None:
        pytest.skip("this torchvision no longer lists Imagenette's archives")
    assert (downloads.IMAGENETTE_160_VAL.url, downloads.IMAGENETTE_160_VAL.md5) == tuple(known)


def test_download_keeps_only_val_once_and_sample_images_find_it(tmp_path, serve, cache, monkeypatch, capsys):
    archive = fake_imagenette(tmp_path / "served" / "a.tgz", serve)
    monkeypatch.setattr(downloads, "IMAGENETTE_160_VAL", archive)
    with pytest.warns(UserWarning, match="samples --download"):  # nothing yet: the hint says how
        assert vizkit.sample_images() != []
    lines: list[str] = []
    tree = vizkit.download_samples(echo=lines.append)
    assert tree == cache / "samples" / "imagenette2-160-val" == downloaded_samples()
    assert sorted(p.name for p in tree.iterdir()) == WNIDS  # val only: no train/, no csv
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.JPEG")) == sorted(
        f"{w}/val_{k}.JPEG" for w in WNIDS for k in range(2)
    )
    assert not (cache / "samples" / "a.tgz").exists()  # the archive is deleted
    assert [p.name for p in (cache / "samples").iterdir()] == ["imagenette2-160-val"]  # no leftovers
    assert lines[0].startswith("downloading a test archive") and lines[1].startswith("kept 10 images")

    picked = vizkit.sample_images(1)  # found without any setting, one per class, in order
    assert picked == [tree / w / "val_0.JPEG" for w in WNIDS]

    (tmp_path / "served" / "a.tgz").unlink()  # a second call fetches nothing (the source is gone)
    assert download_samples(echo=lines.append) == tree and len(lines) == 2
    assert main(["samples", "--download", "--per-class", "2", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["source"] == str(tree) and not document["fallback"]
    assert [i["class"] for i in document["images"][:2]] == ["tench", "tench"]  # the bundled model's names


def test_a_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, serve, cache, monkeypatch, capsys):
    archive = fake_imagenette(tmp_path / "served" / "a.tgz", serve)
    wrong_md5 = Archive(archive.url, "0" * 32, archive.member_prefix, archive.source, 1)
    monkeypatch.setattr(downloads, "IMAGENETTE_160_VAL", wrong_md5)
    assert main(["samples", "--download"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vizkit: error: the file downloaded from") and "MD5" in err[-1]
    assert downloaded_samples() is None and not list((cache / "samples").iterdir())


def test_an_unreachable_source_is_one_line(tmp_path, serve, cache, monkeypatch, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    for url, reason in ((f"{serve}/missing.tgz", "HTTP 404"), (f"http://127.0.0.1:{closed_port}/a.tgz", "refused")):
        monkeypatch.setattr(downloads, "IMAGENETTE_160_VAL", Archive(url, "0" * 32, "x/", "nothing", 1))
        assert main(["samples", "--download"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"vizkit: error: could not download {url}: ") and reason in err[-1], err
        assert "VIZKIT_SAMPLES" in err[-1] and downloaded_samples() is None


def test_hostile_members_are_never_extracted(tmp_path, serve, cache):
    archive = fake_imagenette(tmp_path / "served" / "a.tgz", serve, hostile=True)
    tree = download_samples(archive, echo=lambda line: None)
    assert len(list(tree.rglob("*.JPEG"))) == 10 and not any(p.is_symlink() for p in tree.rglob("*"))
    assert not (cache / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/absolute-vizkit-test.txt").exists()


def test_an_interrupted_extraction_leaves_no_tree_and_is_redone(tmp_path, serve, cache, monkeypatch):
    archive = fake_imagenette(tmp_path / "served" / "a.tgz", serve)
    real_extractall = tarfile.TarFile.extractall

    def interrupted(self, path, members=None, **kwargs):
        real_extractall(self, path, members=list(members)[:3], **kwargs)  # part of it, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_samples(archive, echo=lambda line: None)
    assert downloaded_samples() is None
    assert [p.name for p in (cache / "samples").iterdir()] == ["a.tgz"]  # the verified archive stays
    monkeypatch.setattr(tarfile.TarFile, "extractall", real_extractall)
    (tmp_path / "served" / "a.tgz").unlink()  # redone from the kept archive, not fetched again
    tree = download_samples(archive, echo=lambda line: None)
    assert len(list(tree.rglob("*.JPEG"))) == 10


def test_an_archive_without_the_split_is_refused(tmp_path, serve, cache):
    archive = fake_imagenette(tmp_path / "served" / "a.tgz", serve)
    wrong = Archive(archive.url, archive.md5, "imagenette2-320/val/", "a test archive", 1)
    with pytest.raises(vizkit.VizkitError, match="holds no files under imagenette2-320/val/"):
        download_samples(wrong, echo=lambda line: None)
    assert downloaded_samples() is None
