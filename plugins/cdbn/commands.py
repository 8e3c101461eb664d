"""``vizkit cdbn ...``: the CDBN plugin's own command group (train, figures, caltech)."""

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


def _per_layer(text: str, kind: type, what: str, layers: int) -> tuple:
    values = _numbers(text, kind, what)
    if len(values) < layers:
        raise UsageError(f"{what} needs a value for each of the {layers} layers, got {len(values)}")
    return values[:layers]


def _progress(quiet: bool):
    from vizkit.toolkit import progress_bar

    return lambda description, total: progress_bar(total=total, desc=description, enabled=not quiet, unit="images")


@click.group("cdbn")
def cdbn_group() -> None:
    """The convolutional deep belief network (Lee, Grosse, Ranganath & Ng, ICML 2009): train
    one, draw its bases, measure it on Caltech-101. A trained run is the model cdbn:RUN."""


@cdbn_group.command("train")
@click.option("--data", required=True, type=click.Path(), help="a folder of images, or of class folders")
@click.option("--layers", type=click.IntRange(1, 4), default=2, show_default=True, help="how many layers in all")
@click.option("--epochs", type=int, default=20, show_default=True, help="epochs per layer")
@click.option("--out", type=click.Path(file_okay=False), default="vizkit-cdbn", show_default=True)
@click.option("--resume", is_flag=True, help="continue the run in --out after its last finished epoch")
@click.option(
    "--below",
    type=click.Path(file_okay=False),
    default=None,
    help="keep the finished layers of this run as the lower layers and train only the ones above "
    "(the paper's object parts: layer 1 from natural images, layers 2-3 on one class)",
)
@click.option(
    "--keep", type=click.IntRange(1), default=None, help="keep only this many of --below's layers (default: all it has)"
)
@click.option("--per-class", type=int, default=30, show_default=True, help="images drawn from each class folder")
@click.option("--limit", type=int, default=None, help="at most this many images")
@click.option("--size", type=int, default=150, show_default=True, help="image side (resize + centre crop), grey")
@click.option("--patch", type=int, default=70, show_default=True, help="layer 1 trains on random crops this size")
@click.option("--bases", default="24,100,100,100", show_default=True, help="bases per layer")
@click.option("--filter-size", "filter_sizes", default="10,10,10,10", show_default=True, help="filter side per layer")
@click.option(
    "--sparsity", default="0.002,0.005,0.005,0.005", show_default=True, help="target mean activation per layer"
)
@click.option("--learning-rates", default="0.05,30,3,3", show_default=True, help="learning rate per layer")
@click.option(
    "--weight-decay", "weight_decays", default="0.01,1e-5,1e-5,1e-5", show_default=True, help="weight decay per layer"
)
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="no progress output")
def train_command(
    data: str,
    layers: int,
    epochs: int,
    out: str,
    resume: bool,
    below: str | None,
    keep: int | None,
    per_class: int,
    limit: int | None,
    size: int,
    patch: int,
    bases: str,
    filter_sizes: str,
    sparsity: str,
    learning_rates: str,
    weight_decays: str,
    batch_size: int,
    seed: int,
    quiet: bool,
) -> None:
    """Train a CDBN layer by layer (CD-1, sparsity, weight decay); per-epoch reconstruction
    error and sparsity in OUT/metrics.jsonl; resumable."""
    from .network import CdbnConfig, CdbnNetwork
    from .training import TrainSettings, finished_network, train

    lower: CdbnNetwork | None = None
    frozen = 0
    base_values = _per_layer(bases, int, "--bases", layers)
    filter_values = _per_layer(filter_sizes, int, "--filter-size", layers)
    if below is not None and not resume:
        lower = finished_network(Path(below))
        if keep is not None:
            if keep > len(lower.layers):
                raise UsageError(f"--keep {keep}: --below {below} has only {len(lower.layers)} finished layer(s)")
            lower.layers, lower.config = lower.layers[:keep], lower.config.truncated(keep)
        frozen = len(lower.layers)
        if frozen >= layers:
            raise UsageError(f"--below {below} already has {frozen} layer(s); ask for more with --layers")
        kept = lower.config
        base_values = kept.bases + base_values[frozen:]
        filter_values = kept.filters + filter_values[frozen:]
        size, patch = kept.image_size, kept.patch
    try:
        config = CdbnConfig(
            bases=base_values,
            filters=filter_values,
            pools=(2,) * layers,
            sparsity=_per_layer(sparsity, float, "--sparsity", layers),
            learning_rates=_per_layer(learning_rates, float, "--learning-rates", layers),
            weight_decays=_per_layer(weight_decays, float, "--weight-decay", layers),
            image_size=size,
            patch=patch,
            batch_size=batch_size,
            seed=seed,
            frozen=frozen,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    if lower is not None:
        kept = lower.config
        config = CdbnConfig(
            **{
                **config.to_dict(),
                "sparsity": kept.sparsity + config.sparsity[frozen:],
                "learning_rates": kept.learning_rates + config.learning_rates[frozen:],
                "weight_decays": kept.weight_decays + config.weight_decays[frozen:],
                "scale": kept.scale,
                "sigma": kept.sigma,
            }
        )
    settings = TrainSettings(epochs=epochs, per_class=per_class, limit=limit)
    say = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    try:
        train(Path(data), Path(out), config, settings, resume=resume, below=lower, progress=_progress(quiet), log=say)
    except KeyboardInterrupt:
        click.echo(f"cdbn: stopped; the finished epochs are in {out}; continue with --resume", err=True)
        raise  # vizkit's main exits with 130
    click.echo(str(Path(out)))


@cdbn_group.command("figures")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(), default=None, help="images for the combined-inference figure")
@click.option("--images", type=int, default=4, show_default=True, help="how many images it shows")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="default: RUN/figures (the first run)")
@click.option("--seed", type=int, default=1, show_default=True)
def figures_command(runs: tuple[str, ...], data: str | None, images: int, out: str | None, seed: int) -> None:
    """Every layer's bases in pixel space; with several runs (one class each) the object-part
    figure; with --data, layer-1 reconstructions from feed-forward and combined inference."""
    from .figures import draw_figures

    if images < 1:
        raise UsageError("--images must be at least 1")
    paths = [Path(r) for r in runs]
    target = Path(out) if out else paths[0] / "figures"
    for path in draw_figures(paths, target, Path(data) if data else None, images, seed):
        click.echo(str(path))


@cdbn_group.command("caltech")
@click.argument("run", type=click.Path(file_okay=False))
@click.option(
    "--data", required=True, type=click.Path(), help="the Caltech-101 folder (101 classes + BACKGROUND_Google)"
)
@click.option("--features", "which", type=click.Choice(["1", "1+2"]), default="1+2", show_default=True)
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
@click.option("--patch", type=int, default=8, show_default=True, help="descriptor patch, in layer-1 pooling units")
@click.option("--stride", type=int, default=4, show_default=True, help="descriptor spacing, in layer-1 pooling units")
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
    patch: int,
    stride: int,
    seed: int,
    quiet: bool,
) -> None:
    """Caltech-101 with the CDBN's pooling maps as Spatial Pyramid Matching descriptors (the
    pipeline the ADN's `caltech` command uses)."""
    from .caltech import evaluate_run

    target = Path(out) if out else Path(run) / f"caltech-{which.replace('+', '-')}.json"
    summary = evaluate_run(
        Path(run),
        Path(data),
        which,
        splits,
        train_count,
        test_count,
        words,
        classes,
        seed,
        target,
        progress=not quiet,
        patch=patch,
        stride=stride,
    )
    click.echo(summary)
