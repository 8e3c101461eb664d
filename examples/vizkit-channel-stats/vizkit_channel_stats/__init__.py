"""``channel-stats``: per-feature-map activation statistics of one layer (an example vizkit plugin).

For ``--layer L`` this runs the model over the ``--image`` inputs (and/or the ``--data`` images)
and records, for every feature map (channel) of L's output:

* ``mean``: the map's mean activation over its positions, averaged over the images;
* ``max``: the map's largest activation in an image, averaged over the images;
* ``positive_fraction``: the fraction of the map's units that are > 0, averaged over the images.

A map that is never positive (on any image, at any position) is counted as dead. Fully connected
layers ([N, C] outputs) are treated as C maps of one unit each.

The plugin uses only vizkit's public API (``vizkit`` only), exactly as any
third-party package would: the ``register_analyses`` hook below is found through the
``vizkit`` entry-point group declared in this package's ``pyproject.toml``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

import vizkit

__version__ = "0.1.0"

TOP = 10  # how many maps `top_channels` names
LABELLED_BARS = 48  # up to this many channels every bar gets its channel number on the x axis


def _batches(ctx: vizkit.RunContext) -> Iterator[torch.Tensor]:
    """The preprocessed inputs, ``ctx.batch_size`` images at a time, on ``ctx.device``."""
    size = max(1, ctx.batch_size)
    if ctx.image_paths or ctx.image_tensors is not None:
        images = ctx.images()
        for start in range(0, images.shape[0], size):
            yield images[start : start + size]
    if ctx.data is not None:
        dataset = ctx.dataset()
        for start in range(0, len(dataset), size):
            yield torch.stack([dataset[i][0] for i in range(start, min(start + size, len(dataset)))]).to(ctx.device)


def channel_stats(activation: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and channel: mean, max and fraction of positive units, each [N, C] float64."""
    if activation.dim() < 2:
        raise vizkit.UsageError(
            f"layer '{layer}' has no channels (output shape {tuple(activation.shape)}); pick a conv or fc layer"
        )
    flat = activation.detach().double().flatten(2) if activation.dim() > 2 else activation.detach().double()[:, :, None]
    return flat.mean(dim=2), flat.amax(dim=2), (flat > 0).double().mean(dim=2)


def run(ctx: vizkit.RunContext, layer: str) -> vizkit.Result:
    im = ctx.instrumented
    sums: list[torch.Tensor] | None = None
    count = 0
    with im.configured(layers=[layer], switches=False):  # record only this layer, for this block
        for x in _batches(ctx):
            with torch.no_grad():
                im(x)
            stats = channel_stats(im.activation(layer), layer)  # unknown layer -> vizkit.VizkitError
            batch_sums = [s.sum(dim=0) for s in stats]
            sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums)]
            count += x.shape[0]
    if sums is None or count == 0:
        raise vizkit.UsageError("channel-stats got no images; give --image FILE or --data PATH")

    mean, maximum, positive = (s.div(count).cpu().numpy().astype(np.float32) for s in sums)
    name = im.resolve_alias(layer)
    order = np.argsort(-mean, kind="stable")  # highest mean first; ties keep channel order
    top = [int(c) for c in order[:TOP]]
    result = vizkit.Result(
        summary={
            "layer": name,
            "channels": int(mean.shape[0]),
            "dead_channels": int(np.count_nonzero(positive == 0)),
            "top_channels": top,
            "top_means": [float(mean[c]) for c in top],
            "images": count,
        },
        arrays={"mean": mean, "max": maximum, "positive_fraction": positive},
    )
    result.figures["channel_stats"] = _figure(mean, order, name, count)
    return result


def _figure(mean: np.ndarray, order: np.ndarray, layer: str, images: int):
    """A bar chart of the per-channel mean activation, sorted descending."""
    channels = mean.shape[0]
    figure = vizkit.new_figure(min(16.0, max(6.0, 0.12 * channels + 2.0)), 4.0)
    ax = figure.add_subplot(1, 1, 1)
    positions = np.arange(channels)
    ax.bar(positions, mean[order], width=0.85, color="tab:blue")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlim(-0.6, channels - 0.4)
    if channels <= LABELLED_BARS:
        ax.set_xticks(positions)
        ax.set_xticklabels([str(int(c)) for c in order], fontsize=7, rotation=90)
        ax.set_xlabel("feature map (sorted by mean activation)")
    else:  # too many bars to label each: list the strongest maps in a corner
        strongest = ", ".join(str(int(c)) for c in order[:TOP])
        ax.text(
            0.99,
            0.95,
            f"strongest maps: {strongest}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8},
        )
        ax.set_xlabel("feature maps, sorted by mean activation (rank)")
    ax.margins(y=0.1)
    ax.set_ylabel("mean activation")
    plural = "s" if images != 1 else ""
    ax.set_title(f"Per-channel mean activation of layer {layer} ({channels} maps, {images} image{plural})")
    figure.tight_layout()
    return figure


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="channel-stats",
            description="Per-feature-map activation statistics of a layer: mean, max, fraction positive, dead maps",
            run=run,
            inputs="any",
            options=[
                vizkit.Option(
                    "layer",
                    str,
                    required=True,
                    help="layer whose feature maps to summarise (see `vizkit layers MODEL`)",
                ),
            ],
            demo={"layer": "conv5"},
        )
    )
