"""The convolutional deep belief network (Lee, Grosse, Ranganath & Ng, ICML 2009): convolutional
RBMs with probabilistic max-pooling, stacked greedily, as a plugin written as a third-party one
would be.

* ``vizkit cdbn train --data DIR --layers N --epochs E --out RUN``: CD-1 with the paper's sparsity
  regulariser and weight decay, layer by layer, resumable, ``metrics.jsonl`` per epoch;
  ``--below RUN`` keeps another run's lower layers (object parts: layer 1 from natural images,
  layers 2-3 on one class);
* ``--model cdbn:RUN``: the trained network as a model whose forward is feed-forward inference
  through vizkit's probabilistic max-pooling op, so ``deconvnet`` (``--switches argmax|expected|
  sampled``), ``top9`` and ``filters`` run on it;
* ``vizkit cdbn figures RUN``: the bases of every layer (upper ones drawn as combinations of the
  bases below) and the combined bottom-up / top-down inference;
* ``vizkit cdbn caltech RUN``: layer-1 (and 1+2) pooling maps as Spatial Pyramid Matching
  descriptors on Caltech-101 (:mod:`vizkit.toolkit.spm`).

One job per module: :mod:`.whitening` (the input), :mod:`.rbm` (one CRBM: energy, conditionals,
Gibbs sampling, CD, the update, mean-field inference), :mod:`.network` (settings, the stack),
:mod:`.training` (the resumable greedy loop), :mod:`.model` (``cdbn:RUN``), :mod:`.figures`,
:mod:`.caltech`, :mod:`.commands` (the CLI group).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import vizkit

from .rbm import CdStep, Crbm, Gradients, contrastive_divergence, feed_forward_pass, mean_field, sample_pooled, update
from .whitening import prepare, whiten, whitening_filter

if TYPE_CHECKING:  # pragma: no cover
    import click
    from torch import nn

    from vizkit.models import ModelSource

__all__ = [
    "CdStep",
    "Crbm",
    "Gradients",
    "contrastive_divergence",
    "feed_forward_pass",
    "mean_field",
    "prepare",
    "register_commands",
    "register_model_sources",
    "sample_pooled",
    "update",
    "whiten",
    "whitening_filter",
]

USAGE = "cdbn:<run folder of `vizkit cdbn train`>"


def build_model(rest: str) -> nn.Module:
    """The model spec ``cdbn:RUN``: the run's finished layers, feed-forward inference as the forward."""
    from .model import load_cdbn_model

    if not rest:
        raise vizkit.UsageError(f"no run folder named; use {USAGE}")
    run = Path(rest).expanduser()
    if not run.is_dir():
        raise vizkit.UsageError(f"cdbn:{rest}: no such run folder (train one with `vizkit cdbn train`)")
    return load_cdbn_model(run)


@vizkit.hookimpl
def register_model_sources(register: Callable[[ModelSource], None]) -> None:
    register(
        vizkit.ModelSource(
            name="cdbn",
            prefix="cdbn",
            build=build_model,
            usage=USAGE,
            description="a convolutional deep belief network trained by `vizkit cdbn train` (probabilistic max-pooling)",
        )
    )


@vizkit.hookimpl
def register_commands(cli: click.Group) -> None:
    from .commands import cdbn_group

    cli.add_command(cdbn_group)
