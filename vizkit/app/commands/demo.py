"""``vizkit demo`` (every analysis on the bundled model, then the report) and ``vizkit samples``
(real images of the bundled model's classes)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vizkit.app.commands.common import pass_app
from vizkit.errors import UsageError, VizkitError
from vizkit.framework.registry import App


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="vizkit-demo",
    show_default=True,
    help="the demo's folder; a rerun replaces the demo's own results there",
)
@click.option(
    "--data",
    help="your images: a folder, ImageFolder tree or text file of paths (default: `vizkit samples`)",
)
@click.option("--quick", is_flag=True, help="fewer images and lighter settings (well under a minute)")
@click.option("--overwrite", is_flag=True, help="also write into an --out that the demo did not make")
@pass_app
def demo_command(app: App, out: str, data: str | None, quick: bool, overwrite: bool) -> None:
    """Run every analysis that declares a demo on the bundled zfnet-compact, then write the report.

    Each analysis's result goes to OUT/<analysis>; a failing one is reported and the others
    still run (the exit status is then 1). Evolution needs a training run: ./vizkit-train or
    $VIZKIT_TRAIN_RUN.
    """
    from vizkit.app.demo import run_demo

    if not out.strip():
        raise UsageError("--out is empty; give the demo's folder (default: vizkit-demo)")
    summary = run_demo(app, Path(out), data, quick, overwrite, echo=click.echo, progress=True)
    if summary.failed:
        raise VizkitError(f"demo: {len(summary.failed)} analysis(es) failed: {', '.join(summary.failed)}")


@click.command("samples")
@click.option("--per-class", type=int, default=2, show_default=True, help="images per class")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output, with each image's class")
@click.option(
    "--download",
    is_flag=True,
    help="first fetch Imagenette's validation images into vizkit's cache (once; about 94 MB)",
)
def samples_command(per_class: int, as_json: bool, download: bool) -> None:
    """Print real images of the bundled model's classes, one path a line (for --image / --data).

    Looked for in $VIZKIT_SAMPLES, then $VIZKIT_SHARED/data/imagenette/val, then the images
    `--download` fetched into $VIZKIT_CACHE/samples (default ~/.cache/vizkit/samples); else
    matplotlib's sample photograph, with a note on stderr. Nothing is copied into the package.
    """
    from vizkit.app.demo import FALLBACK_HINT, class_name, find_samples
    from vizkit.app.downloads import download_samples

    if download:
        download_samples(echo=lambda line: click.echo(f"vizkit: {line}", err=True))
    found = find_samples(per_class)
    if found.fallback:
        click.echo(f"vizkit: note: {FALLBACK_HINT}", err=True)
    if as_json:
        images = [{"path": str(p), "class": class_name(f), "folder": f} for p, f in zip(found.paths, found.folders)]
        click.echo(json.dumps({"source": found.source, "fallback": found.fallback, "images": images}, indent=2))
        return
    for path in found.paths:
        click.echo(str(path))
