"""``channel-stats``: per-feature-map activation statistics of one layer (an example vizkit plugin).

This package is a template for a third-party vizkit plugin: copy it, rename it, keep the hooks
you need (see its README.md). It uses every kind of registration a plugin usually needs:

* ``register_analyses``: the ``channel-stats`` analysis, with its own options (``--layer``,
  ``--top``, ``--sort``, ``--project``, ``--rule``), two figures and its own report view (a
  ranked table of the strongest maps in ``vizkit report``);
* ``register_models``: a named model, ``tinycnn`` (with its own preprocessing, 64x64);
* ``register_model_sources``: a model spec form, ``tinycnn:<width>``;
* ``register_rules``: a projection rule, ``leaky-deconvnet``, which then is a valid ``--rule`` of
  every analysis that projects (``vizkit run deconvnet --rule leaky-deconvnet``).

What the analysis computes: for ``--layer L`` it runs the model over the ``--image`` inputs
(and/or the ``--data`` images) and records, for every feature map (channel) of L's output:

* ``mean``: the map's mean activation over its positions, averaged over the images;
* ``max``: the map's largest activation in an image, averaged over the images;
* ``positive_fraction``: the fraction of the map's units that are > 0, averaged over the images.

A map that is never positive (on any image, at any position) is counted as dead. Fully connected
layers ([N, C] outputs) are treated as C maps of one unit each. The ``--project`` strongest maps
(ranked by ``--sort``) are then projected to pixel space on the first image with ``--rule``.

The plugin uses only vizkit's public API (``vizkit`` only), exactly as any third-party package
would: the hooks below are found through the ``vizkit`` entry-point group declared in this
package's ``pyproject.toml``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

import vizkit

if TYPE_CHECKING:  # a plugin is imported at every `vizkit` start: keep heavy imports out of its top level
    from matplotlib.figure import Figure

__version__ = "0.2.0"

TOP = 10  # default of --top: how many maps `top_channels` names
PROJECT = 4  # default of --project: how many of them are projected to pixel space
LABELLED_BARS = 48  # up to this many channels every bar gets its channel number on the x axis
STATISTICS = ("mean", "max", "positive")  # what --sort ranks the maps by
ARRAY_OF = {"mean": "mean", "max": "max", "positive": "positive_fraction"}
AXIS_LABEL = {"mean": "mean activation", "max": "largest activation", "positive": "fraction of units > 0"}


# ------------------------------------------------------------------------------ the analysis
def _batches(ctx: vizkit.RunContext) -> Iterator[torch.Tensor]:
    """The preprocessed inputs, ``ctx.batch_size`` images at a time, on ``ctx.device``.

    ``--image`` files arrive through ``ctx.images()`` (one preprocessed batch); a ``--data``
    folder arrives as ``ctx.dataset()``, a torch Dataset of ``(image, index)`` pairs already
    preprocessed with the model's preprocessing; ``ctx.batches()`` batches it, leaving out (and
    reporting in result.json) files that cannot be read, or stopping at the first with --strict.
    """
    size = max(1, ctx.batch_size)
    if ctx.image_paths or ctx.image_tensors is not None:
        images = ctx.images()
        for start in range(0, images.shape[0], size):
            yield images[start : start + size]
    if ctx.data is not None:
        for images, _indices in ctx.batches():
            yield images


def channel_stats(activation: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and channel: mean, max and fraction of positive units, each [N, C] float64.

    Args:
        activation: a layer's output, [N, C, ...] (conv maps) or [N, C] (a fully connected layer).
        layer: the layer's name, for the error message when it has no channels.
    """
    if activation.dim() < 2:
        raise vizkit.UsageError(
            f"layer '{layer}' has no channels (output shape {tuple(activation.shape)}); pick a conv or fc layer"
        )
    flat = activation.detach().double().flatten(2) if activation.dim() > 2 else activation.detach().double()[:, :, None]
    return flat.mean(dim=2), flat.amax(dim=2), (flat > 0).double().mean(dim=2)


def run(ctx: vizkit.RunContext, layer: str, top: int, sort: str, project: int, rule: str) -> vizkit.Result:
    """The analysis: statistics over every input, then projections of the strongest maps.

    vizkit calls it with the run's context and the resolved options (one keyword per
    ``vizkit.Option``), and removes every hook afterwards, also when it raises.
    """
    if top < 1:
        raise vizkit.UsageError(f"--top must be at least 1, not {top}")
    if project < 0:
        raise vizkit.UsageError(f"--project must be 0 (no projections) or more, not {project}")
    projection_rule = ctx.rule(rule)  # any registered rule: vizkit's or a plugin's (ours below)
    im = ctx.instrumented
    sums: list[torch.Tensor] | None = None
    count = 0
    first: torch.Tensor | None = None
    with im.configured(layers=[layer], switches=False):  # record only this layer, for this block
        for x in _batches(ctx):
            first = x[:1] if first is None else first
            with torch.no_grad():
                im(x)
            stats = channel_stats(im.activation(layer), layer)  # unknown layer -> vizkit.VizkitError
            batch_sums = [s.sum(dim=0) for s in stats]
            sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums)]
            count += x.shape[0]
    if sums is None or first is None or count == 0:
        raise vizkit.UsageError("channel-stats got no images; give --image FILE or --data PATH")

    mean, maximum, positive = (s.div(count).cpu().numpy().astype(np.float32) for s in sums)
    arrays = {"mean": mean, "max": maximum, "positive_fraction": positive}
    ranked = arrays[ARRAY_OF[sort]]
    name = im.resolve_alias(layer)
    order = np.argsort(-ranked, kind="stable")  # highest first; ties keep channel order
    chosen = [int(c) for c in order[:top]]
    result = vizkit.Result(
        summary={
            "layer": name,
            "channels": int(mean.shape[0]),
            "dead_channels": int(np.count_nonzero(positive == 0)),
            "ranked_by": sort,
            "top_channels": chosen,
            "top_values": [float(ranked[c]) for c in chosen],
            "top_means": [float(mean[c]) for c in chosen],
            "images": count,
        },
        arrays=arrays,
    )
    result.figures["channel_stats"] = _bar_figure(ranked, order, name, count, sort)

    if project:
        maps = chosen[:project]
        # the deconvnet engine runs its own forward (with switches) and one pass down per map
        projection = vizkit.project(im, first, layer, maps, rule=projection_rule)
        result.summary["projected"] = {
            "rule": projection_rule.name,
            "channels": maps,
            "activations": [float(v) for v in projection.values[0]],
        }
        result.arrays["projections"] = projection.images[0].cpu().numpy().astype(np.float32)  # [k, 3, H, W]
        image = ctx.preprocess.denormalize(first[0].cpu())
        result.figures["channel_stats_projections"] = _projection_figure(image, projection, name, projection_rule)
    return result


def _bar_figure(values: np.ndarray, order: np.ndarray, layer: str, images: int, sort: str) -> Figure:
    """A bar chart of the per-channel statistic ``sort`` ranks by, sorted descending."""
    channels = values.shape[0]
    figure = vizkit.toolkit.figures.new_figure(min(16.0, max(6.0, 0.12 * channels + 2.0)), 4.0)  # never pyplot
    ax = figure.add_subplot(1, 1, 1)
    positions = np.arange(channels)
    ax.bar(positions, values[order], width=0.85, color="tab:blue")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlim(-0.6, channels - 0.4)
    if channels <= LABELLED_BARS:
        ax.set_xticks(positions)
        ax.set_xticklabels([str(int(c)) for c in order], fontsize=7, rotation=90)
        ax.set_xlabel(f"feature map (sorted by {AXIS_LABEL[sort]})")
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
        ax.set_xlabel(f"feature maps, sorted by {AXIS_LABEL[sort]} (rank)")
    ax.margins(y=0.1)
    ax.set_ylabel(AXIS_LABEL[sort])
    plural = "s" if images != 1 else ""
    ax.set_title(f"Per-channel {AXIS_LABEL[sort]} of layer {layer} ({channels} maps, {images} image{plural})")
    figure.tight_layout()
    return figure


def _projection_figure(
    image: torch.Tensor, projection: vizkit.Projection, layer: str, rule: vizkit.ProjectionRule
) -> Figure:
    """The first image beside each chosen map's projection from its strongest activation."""
    k = len(projection.channels)
    figure = vizkit.toolkit.figures.new_figure(2.2 * (k + 1), 2.6)
    vizkit.toolkit.figures.show(figure.add_subplot(1, k + 1, 1), image, "input (first image)", fontsize=9)
    for j, channel in enumerate(projection.channels):
        shown = vizkit.to_image(projection.images[0, j])  # [H, W, 3] in [0, 1], zero = grey
        value = float(projection.values[0, j])
        vizkit.toolkit.figures.show(
            figure.add_subplot(1, k + 1, j + 2), shown, f"map {channel} (max {value:.3g})", fontsize=9
        )
    figure.suptitle(f"{rule.title} of the strongest maps of layer {layer}", fontsize=10)
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------ the report view
REPORT_CSS = """
.channel-stats td.bar{min-width:120px}
.channel-stats td.bar span{display:block;height:8px;margin-top:5px;background:var(--accent);border-radius:2px}
"""


def report_view(page: vizkit.framework.ReportPage) -> tuple[str, set[str]]:
    """How ``vizkit report`` shows a channel-stats result: the named maps ranked in a table, each
    with a bar of its statistic relative to the strongest, the dead maps counted in the caption.

    It returns its HTML and the summary keys that HTML shows; vizkit's generic rendering shows the
    others (``layer``, ``images``, ``projected``) after it, and the figures follow. ``page.document``
    is the result.json as read: check its shape (an older or hand-edited result may differ) and
    escape every value that goes into the page (``vizkit.toolkit.report.esc``, or one of its
    renderers, which escape for you).
    """
    report = vizkit.toolkit.report
    document = page.document
    channels, values, means = (document.get(key) for key in ("top_channels", "top_values", "top_means"))
    if not (isinstance(channels, list) and isinstance(values, list) and isinstance(means, list)):
        return "", set()  # nothing this view knows: the generic rendering shows every key
    if not len(channels) == len(values) == len(means):
        return "", set()
    finite = [abs(v) for v in values if report.is_number(v) and np.isfinite(v)]
    peak = max(finite, default=0.0) or 1.0
    rows = []
    for rank, (channel, value, mean) in enumerate(zip(channels, values, means), 1):
        width = 100 * abs(value) / peak if report.is_number(value) and np.isfinite(value) else 0.0
        rows.append(
            f"<tr><td>{rank}</td><th>map {report.esc(channel)}</th><td>{report.render_value(value)}</td>"
            f'<td class="bar"><span style="width:{width:.0f}%"></span></td><td>{report.render_value(mean)}</td></tr>'
        )
    statistic = AXIS_LABEL.get(str(document.get("ranked_by")), "statistic")
    dead, total = document.get("dead_channels"), document.get("channels")
    caption = f"The {len(channels)} strongest maps by {statistic}"
    if report.is_number(dead) and report.is_number(total):
        caption += f"; {dead} of {total} maps never positive (dead)"
    head = f"<tr><th>rank</th><th>map</th><th colspan='2'>{report.esc(statistic)}</th><th>mean activation</th></tr>"
    html = (
        f'<h3>Strongest maps</h3><table class="records channel-stats"><caption>{report.esc(caption)}</caption>'
        f"{head}{''.join(rows)}</table>"
    )
    return html, {"top_channels", "top_values", "top_means", "ranked_by", "dead_channels", "channels"}


# ------------------------------------------------------------------------------ a projection rule
class LeakyDeconvnetRule(vizkit.ProjectionRule):
    """The deconvnet rule, except that each ReLU lets ``slope`` times the negative part of the
    signal through, so what inhibits a map shows faintly too (``slope=0`` is the paper's rule).

    A rule is one class: ``relu_down`` says what crosses a ReLU going down, and both projection
    paths (autograd and explicit) read it; ``passes_normalisation`` (inherited: True) lets the
    signal through LRN / BatchNorm unchanged, as the paper does.
    """

    name = "leaky-deconvnet"
    title = "Leaky-deconvnet projections"
    description = "the deconvnet, but 10% of the negative signal crosses each ReLU"
    uses_forward_input = False  # relu_down ignores the forward input: do not keep it in memory

    def __init__(self, slope: float = 0.1) -> None:
        self.slope = slope

    def relu_down(self, signal: torch.Tensor, forward_input: torch.Tensor | None) -> torch.Tensor:
        return torch.where(signal > 0, signal, self.slope * signal)


# ------------------------------------------------------------------------------ a model and a spec form
class TinyCNN(nn.Module):
    """Three conv stages and a linear classifier; any input size (the last pool is adaptive).

    Its layers are its attributes' names (``conv1``, ``relu1``, ``pool1``, ... ``fc``), which is
    what ``--layer`` takes (``vizkit layers tinycnn`` lists them).
    """

    vizkit_default_layer = "conv3"  # what analyses such as occlusion track when no --layer is given

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 5, stride=2, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.conv3(x))
        return self.fc(torch.flatten(self.pool(x), 1))


TINY_PREPROCESS = vizkit.Preprocess(resize=72, crop=64)


def tiny_cnn(width: int = 16) -> TinyCNN:
    """A TinyCNN with seeded random weights (the same every time) and its own 64x64 preprocessing."""
    with torch.random.fork_rng(devices=[]):  # never reseed the caller's global generator
        torch.manual_seed(width)
        model = TinyCNN(width)
    model.vizkit_info = vizkit.models.ModelInfo(preprocess=TINY_PREPROCESS)  # load_model keeps what the factory set
    return model


def build_tiny_cnn(rest: str) -> nn.Module:
    """What the spec ``tinycnn:<width>`` builds (``rest`` is the text after the colon)."""
    if not rest.isdigit() or not 1 <= int(rest) <= 512:
        raise vizkit.UsageError(f"tinycnn:<width> takes a width from 1 to 512, not '{rest}'")
    return tiny_cnn(int(rest))


# ------------------------------------------------------------------------------ the hooks
@vizkit.hookimpl
def register_analyses(register: Callable[[vizkit.Analysis], None]) -> None:
    register(
        vizkit.Analysis(
            name="channel-stats",
            description="Per-feature-map activation statistics of a layer: mean, max, fraction positive, dead maps",
            run=run,
            inputs="any",  # --image and/or --data ("images": --image only, "data": --data only)
            options=[
                vizkit.Option(
                    "layer",
                    str,
                    required=True,
                    help="layer whose feature maps to summarise (see `vizkit layers MODEL`)",
                ),
                vizkit.Option("top", int, TOP, help="how many of the strongest maps the summary names"),
                vizkit.Option("sort", STATISTICS, "mean", help="what ranks the maps: mean, max or positive fraction"),
                vizkit.Option(
                    "project",
                    int,
                    PROJECT,
                    help="project this many of the top maps to pixel space on the first image (0: none)",
                ),
                vizkit.Option(
                    "rule",
                    str,
                    "deconvnet",
                    registry="rules",  # any registered projection rule, e.g. this plugin's leaky-deconvnet
                    help="how the projections cross each ReLU going down",
                ),
            ],
            demo={"layer": "conv5"},  # `vizkit demo` runs it on the bundled model with these options
            view=vizkit.ReportView(report_view, css=REPORT_CSS),  # how `vizkit report` shows it
        )
    )


@vizkit.hookimpl
def register_models(register: Callable[[vizkit.ModelEntry], None]) -> None:
    register(
        vizkit.ModelEntry(
            name="tinycnn",
            factory=tiny_cnn,
            description="example plugin: a 3-conv CNN for 64x64 inputs, 10 classes, untrained (seeded weights)",
            preprocess=TINY_PREPROCESS,  # vizkit.run / load_images / the CLI feed it 64x64 crops
            tags=("example", "untrained"),
        )
    )


@vizkit.hookimpl
def register_model_sources(register: Callable[[vizkit.ModelSource], None]) -> None:
    register(
        vizkit.ModelSource(
            "tinycnn",
            build_tiny_cnn,
            "tinycnn:<width>",
            "example plugin: the tinycnn model with <width> conv1 channels",
            prefix="tinycnn",
        )
    )


@vizkit.hookimpl
def register_rules(register: Callable[[vizkit.ProjectionRule], None]) -> None:
    register(LeakyDeconvnetRule())
