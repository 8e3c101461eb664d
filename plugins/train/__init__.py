"""``vizkit train``: a ZF-topology backbone trained with the paper's recipe (PAPER.md §1).

A command, contributed through the ``register_commands`` hook like any plugin's.

SGD with momentum 0.9, learning rate annealed (x0.1) when validation error plateaus, dropout 0.5
on fc6/fc7 (in the model), random crops and flips, small-Gaussian initialisation (in the model),
and feature scale clipping of every conv filter after every step (switchable off). Each epoch
appends a line to ``metrics.jsonl`` (``best`` marks a new best validation accuracy), writes
``checkpoint.pt`` (model, optimiser, scheduler, epoch, best so far) atomically, keeps ``best.pt``
(the weights of the best validation epoch) and a copy of the weights at the snapshot epochs;
``resume`` continues from the checkpoint.

Interruption and exact resume: each sample's crop and flip are drawn from a generator seeded by
(seed, epoch, sample index) and each epoch's order from (seed, epoch), so what a batch holds does
not depend on the number of workers or on where a run was stopped; the checkpoint (also written
every ``checkpoint_seconds`` inside an epoch, and when SIGINT or SIGTERM arrives, between two
steps) holds the model, optimiser, scheduler, every random generator and the position in the
epoch. A resumed run therefore gives the same weights as an uninterrupted one. ``--schedule cosine`` anneals to 0 over ``--epochs``
instead of cutting on plateaus; ``--patience`` and ``--min-epochs-before-decay`` tune the plateau
rule (the bundled model's note: the rate was cut while validation accuracy was still rising).
``--shuffle-labels`` trains on the training labels permuted once by a seeded permutation (Adebayo
et al. 2018's label randomization check): the checkpoint keeps the permuted labels, and the run's
files and export say ``shuffled_labels``; ``--no-augment`` (centre crops, no flips) lets a short
run memorise them.

The package, one job per module: :mod:`.config` (the settings and the learning-rate schedule),
:mod:`.data` (the seeded loaders), :mod:`.checkpoint` (what resuming needs), :mod:`.loop` (the
training loop, :func:`train`), :mod:`.export` (:func:`export_weights`); the command is
registered here.
"""

from __future__ import annotations

import click
import torch

import vizkit
from vizkit import UsageError

from .config import SCHEDULES, TrainConfig
from .export import export_weights
from .loop import train, untrained_model

__all__ = ["SCHEDULES", "TrainConfig", "export_weights", "register_commands", "train", "untrained_model"]


@vizkit.hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command("train")
    @click.option("--model", "model_spec", default="zfnet-compact", show_default=True, help="a ZF-topology model spec")
    @click.option(
        "--data", required=True, type=click.Path(file_okay=False), help="folder with train/ and val/ ImageFolder trees"
    )
    @click.option("--epochs", type=int, default=30, show_default=True)
    @click.option(
        "--batch-size",
        type=int,
        default=32,
        show_default=True,
        help="images per SGD step (the bundled zfnet-compact used 32; the paper 128)",
    )
    @click.option("--lr", type=float, default=0.01, show_default=True)
    @click.option(
        "--schedule",
        type=click.Choice(SCHEDULES),
        default="plateau",
        show_default=True,
        help="plateau: x0.1 when validation error stops falling; cosine: to 0 over --epochs",
    )
    @click.option(
        "--patience", type=int, default=2, show_default=True, help="plateau: epochs without improvement before a cut"
    )
    @click.option(
        "--min-epochs-before-decay", type=int, default=0, show_default=True, help="plateau: never cut before this epoch"
    )
    @click.option("--out", type=click.Path(file_okay=False), default="vizkit-train", show_default=True)
    @click.option("--resume", is_flag=True, help="continue from --out/checkpoint.pt")
    @click.option("--device", default="cpu", show_default=True)
    @click.option(
        "--snapshot-epochs", default="1,2,5,10,20,30,40,64", show_default=True, help="epochs whose weights are kept"
    )
    @click.option("--no-clip", is_flag=True, help="turn feature scale clipping off")
    @click.option("--clip-radius", type=float, default=0.1, show_default=True)
    @click.option("--crop", type=int, default=None, help="training crop size (default: the model's)")
    @click.option("--workers", type=int, default=2, show_default=True)
    @click.option(
        "--limit",
        type=int,
        default=None,
        help="train on a random subset of N training images (drawn with --seed; validation uses all of val/): "
        "for quick trials and tests",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option(
        "--shuffle-labels",
        is_flag=True,
        help="label randomization (Adebayo et al. 2018): train on the training images' labels permuted once "
        "(drawn with --seed, the same every epoch and on resume; class counts kept); validation uses the true "
        "labels. The run and its export are marked shuffled_labels",
    )
    @click.option(
        "--no-augment",
        is_flag=True,
        help="no random crops or flips: train on each image's centre crop, as validation sees it "
        "(e.g. to memorise --shuffle-labels in a short run)",
    )
    @click.option(
        "--checkpoint-seconds",
        type=float,
        default=60.0,
        show_default=True,
        help="inside an epoch, write the checkpoint at least this often (SIGINT/SIGTERM also write it)",
    )
    @click.option(
        "--quiet",
        is_flag=True,
        help="no progress output (a bar, or a line every ~10 s off a terminal) and no per-epoch metrics lines",
    )
    @click.pass_context
    def train_command(
        context: click.Context,
        model_spec: str,
        data: str,
        epochs: int,
        batch_size: int,
        lr: float,
        schedule: str,
        patience: int,
        min_epochs_before_decay: int,
        out: str,
        resume: bool,
        device: str,
        snapshot_epochs: str,
        no_clip: bool,
        clip_radius: float,
        crop: int | None,
        workers: int,
        limit: int | None,
        seed: int,
        shuffle_labels: bool,
        no_augment: bool,
        checkpoint_seconds: float,
        quiet: bool,
    ) -> None:
        """Train a ZF backbone with the paper's recipe (SGD, annealing, dropout, crops, clipping)."""
        try:
            snapshots = [int(v) for v in snapshot_epochs.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--snapshot-epochs expects e.g. 1,2,5,10; not '{snapshot_epochs}'") from None
        if any(epoch < 1 for epoch in snapshots):
            raise UsageError(f"--snapshot-epochs counts epochs from 1, not '{snapshot_epochs}'")
        if limit is not None and limit < 1:
            raise UsageError(f"--limit must be at least 1 (leave it out to use every training image), not {limit}")
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise UsageError("--epochs and --batch-size must be positive and --lr above 0")
        if workers < 0:
            raise UsageError(f"--workers must be 0 or more, not {workers}")
        if not checkpoint_seconds >= 0:
            raise UsageError(f"--checkpoint-seconds must be 0 or more, not {checkpoint_seconds}")
        if patience < 0 or min_epochs_before_decay < 0:
            raise UsageError("--patience and --min-epochs-before-decay must be 0 or more")
        torch.manual_seed(seed)  # a training command owns its process: the model's initialisation
        app = (context.find_root().obj or {}).get("app")
        model, preprocess = untrained_model(model_spec, app)
        config = TrainConfig(
            data=data,
            out=out,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            schedule=schedule,
            patience=patience,
            min_epochs_before_decay=min_epochs_before_decay,
            clip_radius=None if no_clip else clip_radius,
            crop=crop or preprocess.crop,
            resize=preprocess.resize,
            snapshot_epochs=snapshots,
            workers=workers,
            seed=seed,
            device=device,
            limit=limit,
            checkpoint_seconds=checkpoint_seconds,
            shuffle_labels=shuffle_labels,
            augment=not no_augment,
        )
        argv = (context.find_root().obj or {}).get("argv", [])
        metrics = train(
            model,
            config,
            preprocess,
            resume=resume,
            progress=not quiet,  # a bar on a terminal, else a line every ~10 s
            model_spec=model_spec,
            command=["vizkit", *argv],
        )
        shuffled = (
            f" (labels shuffled with seed {seed}: train accuracy {metrics.get('train_accuracy', 0):.4f} on them)"
            if shuffle_labels
            else ""
        )
        click.echo(
            f"train: epoch {metrics.get('epoch')} val accuracy {metrics.get('val_accuracy', 0):.4f}{shuffled}; "
            f"weights in {out}/weights.pt; best epoch {metrics.get('best_epoch')} in {out}/best.pt"
        )
