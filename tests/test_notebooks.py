"""Notebooks: a Result and an instrumented model show themselves in Jupyter (``_repr_html_``), and
every notebook in examples/notebooks runs top to bottom in a fresh kernel of this environment's
Python (nbclient) and shows those views, while the committed notebooks carry no outputs."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import ClassVar

import numpy as np
import pytest
import torch

import vizkit
from helpers import REPO, shipped_photos
from vizkit.framework.results import HTML_FIGURE_PIXELS, HTML_FIGURES, figure_png
from vizkit.toolkit.figures import new_figure

NOTEBOOKS = sorted((REPO / "examples" / "notebooks").glob("*.ipynb"))
KERNEL = "vizkit-test-python"
IMAGE = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"')


# ------------------------------------------------------------------------------ Result._repr_html_
def _figure(width: float = 4, height: float = 3):
    figure = new_figure(width, height)
    figure.add_subplot().plot([0, 1], [1, 0])
    return figure


def test_a_result_shows_its_summary_arrays_and_figures_inline():
    result = vizkit.Result(
        analysis="demo<x>",
        summary={
            "layer": "conv5",
            "accuracy": np.float32(0.123456),
            "channels": [3, 1, 2],
            "scores": list(range(100)),
            "rows": [{"label": "tench", "p": 0.9}, {"label": "<b>dog</b>", "p": 0.1}],
            "nested": {"a": {"b": {"c": {"d": 1}}}},
            "missing": float("nan"),
        },
        arrays={"maps": np.zeros((2, 3, 4), np.float32)},
        figures={"first": _figure(), "second": _figure(20, 4)},
        meta={"model": {"spec": "zfnet-compact"}, "seconds": 1.25, "params": {"top": 9}},
    )
    text = result._repr_html_()
    assert "demo&lt;x&gt;" in text and "<code>zfnet-compact</code>" in text and "1.25 s" in text
    assert text.count("<table") >= 3  # summary, its records, the parameters
    assert "<th" in text and ">conv5<" in text and "0.1235" in text and "[3, 1, 2]" in text
    assert "100 values: [0, 1, 2, 3, 4, 5, …]; 0 to 99" in text  # a long list is summarised
    assert "&lt;b&gt;dog&lt;/b&gt;" in text and "<b>dog" not in text  # every string is escaped
    assert "1 entries" in text  # nesting past HTML_DEPTH is summarised
    assert "<code>maps</code> [2, 3, 4] float32" in text
    assert len(IMAGE.findall(text)) == 2 and "<code>first</code>" in text and "<code>second</code>" in text
    assert result.figures["first"].get_dpi() == 100  # drawing it inline leaves the figure as it was
    json.dumps(result.to_json())  # and the summary still saves


def test_inlined_figures_are_bounded_and_counted():
    import io

    from PIL import Image

    wide = _figure(40, 2)  # 4000 px at its own dpi
    image = Image.open(io.BytesIO(figure_png(wide)))
    assert image.width <= HTML_FIGURE_PIXELS
    figures = {f"f{i}": _figure(1, 1) for i in range(HTML_FIGURES + 2)}
    text = vizkit.Result(analysis="many", figures=figures)._repr_html_()
    assert len(IMAGE.findall(text)) == HTML_FIGURES and "2 more figures" in text and "<code>f13</code>" in text


def test_a_result_that_cannot_be_drawn_says_so_instead_of_raising():
    class Broken:
        def get_size_inches(self):
            raise RuntimeError("no canvas")

    text = vizkit.Result(analysis="odd", summary={}, figures={"bad": Broken(), "good": _figure()})._repr_html_()
    assert "cannot be drawn: RuntimeError: no canvas" in text and len(IMAGE.findall(text)) == 1
    assert "no summary values" in text


# ------------------------------------------------------------------------------ Instrumented._repr_html_
def test_an_instrumented_model_lists_the_layers_of_its_last_forward():
    model = vizkit.load_model("zfnet-compact")
    x = vizkit.load_images(shipped_photos()[:1], model)
    with vizkit.instrument(model, layers=["conv5"]) as im:
        before = im._repr_html_()
        im(x)
        during = im._repr_html_()
    after = im._repr_html_()
    assert "no forward yet" in before and "<table" not in before and "hooks on" in before
    assert "hooks on" in during and "hooks off" in after
    assert "the activations of 1 layer and pooling switches" in during
    rows = re.findall(r"<tr>(.*?)</tr>", during)
    assert len(rows) == len(im.layers) + 1  # a header, then a row per layer
    cells = {re.sub("<.*?>", "", row.split("</td>")[1]): row for row in rows[1:]}
    assert set(cells) == set(im.layers)
    assert "[1, 128, 4, 4]" in cells["conv5"] and cells["conv5"].count(">yes<") == 1  # kept, no switches
    assert "MaxPool2d" in cells["conv1.pool"] and cells["conv1.pool"].count(">yes<") == 1  # switches, not kept
    assert f"of an input [1, 3, {x.shape[2]}, {x.shape[3]}]" in during


def test_the_layer_table_shows_aliases_and_functional_layers():
    class Net(torch.nn.Module):
        vizkit_aliases: ClassVar[dict[str, str]] = {"top": "conv"}

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)

    with vizkit.instrument(Net()) as im:
        im(torch.randn(1, 3, 8, 8))
        text = im._repr_html_()
    assert "<code>conv</code> (top)" in text and "F.max_pool2d" in text and "[1, 4, 3, 3]" in text


# ------------------------------------------------------------------------------ the notebooks
def test_the_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "your_own_model", "write_a_plugin"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_carry_no_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"
        assert not cell.metadata.get("execution"), f"{path.name}: a cell keeps its execution timings"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec running this environment's Python (whatever kernels the machine has), found
    through JUPYTER_PATH; the kernel's runtime and IPython folders are the test's own."""
    pytest.importorskip("ipykernel")
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::FutureWarning")
    return KERNEL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_vizkits_views(path, kernel, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    book = nbformat.read(path, as_version=4)
    work = tmp_path / "work"  # the kernel's working folder: what the notebook saves goes there
    work.mkdir()
    client = nbclient.NotebookClient(book, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(work)}})
    start = time.perf_counter()
    client.execute()  # a cell that raises fails the test with its traceback (CellExecutionError)
    seconds = time.perf_counter() - start
    print(f"{path.name}: executed in {seconds:.1f} s")

    outputs = [output for cell in book.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    results = [text for text in html if 'class="vizkit-result"' in text]
    assert results, f"{path.name} shows no vizkit.Result"
    assert all("<table" in text and IMAGE.search(text) for text in results)
    if path.stem in ("quickstart", "your_own_model"):
        assert any('class="vizkit-instrumented"' in text and "<table" in text for text in html)
    saved = list(work.rglob("result.json"))
    if path.stem in ("quickstart", "write_a_plugin"):
        assert saved, f"{path.name} saved no result under its working folder"
