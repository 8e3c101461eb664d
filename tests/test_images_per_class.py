"""vizkit.data.images_per_class: the even, seeded draw of training images the unsupervised
plugins (adn, cdbn) train on."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import vizkit
from vizkit.data import images_per_class


def _tree(root: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(folder / f"{i:03d}.png")
        (folder / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.new("RGB", (4, 4)).save(root / ".hidden" / "x.png")


def test_draws_per_class_without_replacement_seeded_and_sorted(tmp_path):
    _tree(tmp_path, {"a": 5, "b": 2, "c": 4})
    drawn = images_per_class(tmp_path, 3, seed=7)
    by_class = {name: [p for p in drawn if p.parent.name == name] for name in "abc"}
    assert [len(v) for v in by_class.values()] == [3, 2, 3]  # a class with fewer gives all it has
    assert all(v == sorted(set(v)) for v in by_class.values())
    assert all(p.suffix == ".png" and ".hidden" not in p.parts for p in drawn)
    assert images_per_class(tmp_path, 3, seed=7) == drawn
    assert any(images_per_class(tmp_path, 3, seed=s) != drawn for s in range(8))
    assert images_per_class(tmp_path, 3, seed=7, limit=4) == drawn[:4]


def test_a_flat_folder_gives_every_image(tmp_path):
    for i in range(3):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{i}.jpg")
    assert images_per_class(tmp_path, 1) == sorted(tmp_path.glob("*.jpg"))


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_no_images_is_a_usage_error(tmp_path, make):
    folder = tmp_path / "data"
    if make == "empty":
        (folder / "class").mkdir(parents=True)
    with pytest.raises(vizkit.UsageError, match="--data"):
        images_per_class(folder, 2)
