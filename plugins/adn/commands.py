"""``vizkit adn ...``: the ADN plugin's own command group (train, figures, caltech)."""

from __future__ import annotations

from pathlib import Path

import click

from vizkit import UsageError


def _numbers(text: str, kind: type, what: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, not {text!r}") from None
    if not values:
        raise UsageError(f"{what} names no values")
    return values


def _progress(quiet: bool):
    from vizkit.toolkit import progress_bar

    return lambda description, total: progress_bar(total=total, desc=description, enabled=not quiet, unit="images")


@click.group("adn")
def adn_group() -> None:
    """The Adaptive Deconvolutional Network (Zeiler, Taylor & Fergus, ICCV 2011): train one,
    draw the paper's figures, measure it on Caltech-101. A trained run is the model adn:RUN."""


@adn_group.command("train")
@click.option(
    "--data", required=True, type=click.Path(), help="a folder of images, or of class folders (e.g. Caltech-101)"
)
@click.option(
    "--layers", type=click.IntRange(1, 4), default=4, show_default=True, help="how many of the paper's layers"
)
@click.option("--epochs", type=int, default=5, show_default=True, help="epochs per layer")
@click.option("--out", type=click.Path(file_okay=False), default="vizkit-adn", show_default=True)
@click.option("--resume", is_flag=True, help="continue the run in --out after its last finished epoch")
@click.option("--per-class", type=int, default=30, show_default=True, help="images drawn from each class folder")
@click.option("--limit", type=int, default=None, help="at most this many images (quick trials)")
@click.option("--size", type=int, default=150, show_default=True, help="image side (resize + centre crop), grey")
@click.option("--ista-steps", type=int, default=10, show_default=True, help="ISTA iterations per layer per image")
@click.option("--cg-steps", type=int, default=10, show_default=True, help="conjugate-gradient steps per filter update")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--maps", default="15,50,100,150", show_default=True, help="feature maps per layer")
@click.option(
    "--lambdas",
    default="2,0.5,0.5,0.5",
    show_default=True,
    help="lambda per layer; the paper's 2,0.1,0.005,0.001 leave layers 2-4 all zero on these images (see the README)",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="no progress output")
def train_command(
    data: str,
    layers: int,
    epochs: int,
    out: str,
    resume: bool,
    per_class: int,
    limit: int | None,
    size: int,
    ista_steps: int,
    cg_steps: int,
    batch_size: int,
    maps: str,
    lambdas: str,
    seed: int,
    quiet: bool,
) -> None:
    """Train an ADN layer by layer; per-epoch metrics in OUT/metrics.jsonl; resumable."""
    from .network import PAPER_REGIONS, AdnConfig
    from .training import TrainSettings, train

    map_counts = _numbers(maps, int, "--maps")
    weights = _numbers(lambdas, float, "--lambdas")
    if len(map_counts) < layers or len(weights) < layers:
        raise UsageError(f"--maps and --lambdas need a value for each of the {layers} layers")
    try:
        config = AdnConfig(
            maps=map_counts[:layers],
            lambdas=weights[:layers],
            regions=PAPER_REGIONS[:layers],
            image_size=size,
            ista_steps=ista_steps,
            seed=seed,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    settings = TrainSettings(epochs=epochs, cg_steps=cg_steps, batch_size=batch_size, per_class=per_class, limit=limit)
    say = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    try:
        train(Path(data), Path(out), config, settings, resume=resume, progress=_progress(quiet), log=say)
    except KeyboardInterrupt:
        click.echo(f"adn: stopped; the finished epochs are in {out}; continue with --resume", err=True)
        raise  # vizkit's main exits with 130
    click.echo(str(Path(out)))


@adn_group.command("figures")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", required=True, type=click.Path(), help="images to find each map's strongest feature in")
@click.option("--images", type=int, default=64, show_default=True, help="how many images (drawn per class) to search")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="default: RUN/figures")
@click.option("--seed", type=int, default=1, show_default=True)
def figures_command(run: str, data: str, images: int, out: str | None, seed: int) -> None:
    """The paper's figures: each map's strongest feature projected to pixels, per layer, and
    the images reconstructed from each layer."""
    from .figures import draw_figures

    written = draw_figures(Path(run), Path(data), Path(out) if out else Path(run) / "figures", images, seed)
    for path in written:
        click.echo(str(path))


@adn_group.command("caltech")
@click.argument("run", type=click.Path(file_okay=False))
@click.option(
    "--data", required=True, type=click.Path(), help="the Caltech-101 folder (101 classes + BACKGROUND_Google)"
)
@click.option("--features", "which", type=click.Choice(["1", "1+2"]), default="1", show_default=True)
@click.option("--splits", type=int, default=3, show_default=True)
@click.option("--train", "train_count", type=int, default=30, show_default=True, help="training images per class")
@click.option("--test", "test_count", type=int, default=50, show_default=True, help="test images per class (at most)")
@click.option("--words", type=int, default=200, show_default=True, help="k-means vocabulary")
@click.option("--classes", type=int, default=None, help="only the first N classes (quick trials)")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="the result JSON (default: RUN/caltech-<features>.json)",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True)
def caltech_command(
    run: str,
    data: str,
    which: str,
    splits: int,
    train_count: int,
    test_count: int,
    words: int,
    classes: int | None,
    out: str | None,
    seed: int,
    quiet: bool,
) -> None:
    """Caltech-101 with the ADN's maps as Spatial Pyramid Matching descriptors (Lazebnik et al.
    2006: dense descriptors, k-means words, a 3-level pyramid, an intersection-kernel SVM)."""
    from .caltech import evaluate_run

    target = Path(out) if out else Path(run) / f"caltech-{which.replace('+', '-')}.json"
    summary = evaluate_run(
        Path(run), Path(data), which, splits, train_count, test_count, words, classes, seed, target, progress=not quiet
    )
    click.echo(summary)
