"""The README's Python snippets, read from README.md and run as written (only the file names are
pointed at real files): "Python in ten lines" on the bundled model, and the "Python" section's
SqueezeNet example where ../shared has its weights. Each projects a map that fires on its image
(chosen, not a constant), so nothing warns that a map is silent."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from helpers import LABELS, REPO, SQUEEZENET_WEIGHTS, needs_shared, sample


def python_block(heading: str) -> str:
    """The first ```python block after the line ``heading`` in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = re.search(rf"^{re.escape(heading)}$", text, re.M)
    assert start, f"README.md has no heading {heading!r}"
    block = re.search(r"```python\n(.*?)```", text[start.end() :], re.S)
    assert block, f"no python block under {heading!r}"
    return block.group(1)


def run_snippet(code: str, replacements: dict[str, str], name: str) -> tuple[dict, list[warnings.WarningMessage]]:
    for old, new in replacements.items():
        assert old in code, f"the README snippet no longer mentions {old}"
        code = code.replace(old, new)
    namespace: dict = {"__name__": "readme_snippet"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, f"README.md ({name})", "exec"), namespace)
    return namespace, caught


def test_python_in_ten_lines(photo_path, tmp_path):
    code = python_block("### Python in ten lines")
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    assert "channel=17" not in code and "channel=channel" in code  # chosen, not a constant
    replacements = {'"photo.jpg"': repr(str(photo_path)), '"out/occlusion"': repr(str(tmp_path / "occlusion"))}
    namespace, caught = run_snippet(code, replacements, "Python in ten lines")
    assert not [w for w in caught if "im.project" in str(w.message)]
    assert namespace["projection"].shape == (1, 3, 144, 144) and namespace["projection"].abs().sum() > 0
    picture = namespace["picture"]
    assert picture.shape == (144, 144, 3) and np.ptp(picture) > 0.5  # not a flat grey picture
    assert (tmp_path / "occlusion" / "result.json").is_file()


def test_python_section_on_squeezenet(tmp_path, monkeypatch):
    needs_shared(SQUEEZENET_WEIGHTS, LABELS)
    dog = sample("golden_retriever")
    code = python_block("## Python")
    replacements = {
        '"../shared/models/squeezenet1_0_imagenet.pt"': repr(str(SQUEEZENET_WEIGHTS)),
        '"../shared/data/imagenet_classes.txt"': repr(str(LABELS)),
        '"dog.jpg"': repr(str(dog)),
        '"out/deconv"': repr(str(tmp_path / "deconv")),
    }
    monkeypatch.chdir(tmp_path)
    namespace, caught = run_snippet(code, replacements, "Python")
    assert not [w for w in caught if "im.project" in str(w.message)]
    assert namespace["proj"].shape == (1, 3, 224, 224) and namespace["proj"].abs().sum() > 0
    assert namespace["image"].shape == (224, 224, 3)
    assert Path(tmp_path / "deconv" / "result.json").is_file()
