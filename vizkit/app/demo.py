"""``vizkit demo``: every analysis that declares a demo, on the bundled model, plus a report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib.cbook

import vizkit
from vizkit.app.report import write_report
from vizkit.framework.plugins import App


def sample_image() -> Path:
    """A photograph that ships with matplotlib (Grace Hopper), so the demo runs offline."""
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def default_model(app: App) -> str:
    """The best bundled model: a trained one if a plugin ships weights, else zfnet."""
    trained = [name for name, entry in sorted(app.models.items()) if entry.weights is not None]
    return trained[0] if trained else "zfnet"


def run_demo(app: App, out: Path, model_spec: str | None, images: list[str], overwrite: bool) -> Iterator[str]:
    spec = model_spec or default_model(app)
    model = vizkit.load_model(spec, app=app)
    paths = [Path(p) for p in images] or [sample_image()]
    if getattr(model, "vizkit_weights", None) is None:
        yield f"demo: note: {spec} has no trained weights; the pictures show an untrained network"
    for analysis in sorted(app.analyses.values(), key=lambda a: a.name):
        if analysis.demo is None:
            continue
        target = out / analysis.name
        result = vizkit.run(analysis.name, model, images=paths, app=app, out=target, **analysis.demo)
        result.save(target, overwrite=overwrite)
        yield f"demo: {analysis.name} -> {target} ({result.meta.get('seconds', 0):.1f}s)"
    report, count = write_report(out)
    yield f"demo: report with {count} result(s): {report}"
