"""The Adaptive Deconvolutional Network (Zeiler, Taylor & Fergus, ICCV 2011): the learned
top-down model vizkit's switches come from, as a plugin written as a third-party one would be.

* ``vizkit adn train --data DIR --layers N --epochs E --out RUN``: layer-wise training (ISTA
  inference of sparse codes with 3D max pooling, conjugate-gradient filter updates), resumable,
  ``metrics.jsonl`` per epoch;
* ``--model adn:RUN``: the trained network as a model whose forward is inference, so
  ``deconvnet`` and ``top9`` project its features to pixels through the inferred switches (the
  ADN's own top-down reconstruction);
* ``vizkit adn figures RUN``: the paper's figures (each map's strongest feature projected to the
  image, reconstructions from each layer);
* ``vizkit adn caltech RUN``: layer-1 (and 1+2) maps as Spatial Pyramid Matching descriptors on
  Caltech-101 (:mod:`vizkit.toolkit.spm`).

One job per module: :mod:`.pooling` (3D max-|z| pooling, switches, unpooling),
:mod:`.reconstruction` (the top-down operator R_l, its adjoint, its norm), :mod:`.inference`
(shrinkage, the cost, ISTA), :mod:`.learning` (filters by conjugate gradients),
:mod:`.contrast` (the input's contrast normalisation), :mod:`.network` (settings, filters,
layer-wise inference), :mod:`.training` (the resumable training loop), :mod:`.ops` and
:mod:`.model` (the engine's view: ``adn:RUN``), :mod:`.figures`, :mod:`.caltech`,
:mod:`.commands` (the CLI group).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import vizkit

from .inference import cost, ista, shrink, update_switches
from .learning import cg_filters, cg_filters_batched, normalise_filters
from .pooling import Switches, gather, pool, pooled_size, unpool
from .reconstruction import (
    adjoint,
    adjoint_unpooled,
    analyse,
    lipschitz,
    operator_norm_squared,
    reconstruct,
    reconstruct_unpooled,
    synthesise,
)

if TYPE_CHECKING:  # pragma: no cover
    import click
    from torch import nn

    from vizkit.models import ModelSource

__all__ = [
    "Switches",
    "adjoint",
    "adjoint_unpooled",
    "analyse",
    "cg_filters",
    "cg_filters_batched",
    "cost",
    "gather",
    "ista",
    "lipschitz",
    "normalise_filters",
    "operator_norm_squared",
    "pool",
    "pooled_size",
    "reconstruct",
    "reconstruct_unpooled",
    "register_commands",
    "register_model_sources",
    "shrink",
    "synthesise",
    "unpool",
    "update_switches",
]

USAGE = "adn:<run folder of `vizkit adn train`>"


def build_model(rest: str) -> nn.Module:
    """The model spec ``adn:RUN``: the run's finished layers, inference as the forward."""
    from .model import load_adn_model

    if not rest:
        raise vizkit.UsageError(f"no run folder named; use {USAGE}")
    run = Path(rest).expanduser()
    if not run.is_dir():
        raise vizkit.UsageError(f"adn:{rest}: no such run folder (train one with `vizkit adn train`)")
    return load_adn_model(run)


@vizkit.hookimpl
def register_model_sources(register: Callable[[ModelSource], None]) -> None:
    register(
        vizkit.ModelSource(
            name="adn",
            prefix="adn",
            build=build_model,
            usage=USAGE,
            description="an Adaptive Deconvolutional Network trained by `vizkit adn train` (inference is its forward)",
        )
    )


@vizkit.hookimpl
def register_commands(cli: click.Group) -> None:
    from .commands import adn_group

    cli.add_command(adn_group)
