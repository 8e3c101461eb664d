"""The ``filters`` analysis: first-layer filter diagnostics (paper Fig. 6).

For the first convolution that sees the image (or ``--layer``): the filters as an image grid;
each filter's RMS; "dead" filters (RMS below ``--dead-fraction`` of the median, or, when images
are given, never active: the convolution's output never exceeds 0 on the sample, so its ReLU
never fires); dominance (the share of the summed RMS held by the ``--top`` largest filters); and
each filter's energy in low / mid / high spatial-frequency bands (thirds of the radial frequency
up to Nyquist, from the 2-D power spectrum zero-padded to 32x32). AlexNet's 11x11 stride-4 first
layer in the paper showed a mix of very high and very low frequency filters and many dead ones;
feature scale clipping keeps any filter from dominating. Unreadable ``--data`` files are skipped
(counted in result.json) or, with ``--strict``, stop the run.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

import vizkit
from vizkit.toolkit.figures import new_figure

SPECTRUM_SIZE = 32
BANDS = ("low", "mid", "high")


def first_conv(
    model: nn.Module, im: vizkit.Instrumented, probe: torch.Tensor, layer: str | None
) -> tuple[str, nn.Conv2d]:
    modules = dict(model.named_modules())
    if layer:
        name = im.resolve_alias(layer)
        module = modules.get(name)
        if not isinstance(module, nn.Conv2d):
            valid = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
            raise vizkit.UsageError(f"--layer {name} is not a Conv2d module; convolutions: {', '.join(valid[:20])}")
        return name, module
    for name, module in im.convolutions(probe):
        # 1: a model that sees the image grey (the CDBN and ADN plugins' models)
        if module.in_channels in (probe.shape[1], 1):
            return name, module
    raise vizkit.UsageError("no convolution applied to the input image found; pass --layer")


def band_energy(weight: torch.Tensor) -> np.ndarray:
    """[F, 3] fraction of each filter's spectral energy in the low / mid / high bands."""
    filters = weight.detach().float().cpu()
    spectrum = torch.fft.fft2(filters, s=(SPECTRUM_SIZE, SPECTRUM_SIZE)).abs().pow(2).sum(dim=1)  # [F, S, S]
    frequencies = torch.fft.fftfreq(SPECTRUM_SIZE)
    radius = (frequencies[:, None].pow(2) + frequencies[None, :].pow(2)).sqrt() / 0.5  # 1 = Nyquist
    edges = [0.0, 1 / 3, 2 / 3, math.inf]
    total = spectrum.sum(dim=(1, 2)).clamp(min=1e-30)
    return torch.stack(
        [spectrum[:, (radius >= lo) & (radius < hi)].sum(dim=1) / total for lo, hi in itertools.pairwise(edges)], dim=1
    ).numpy()


def _sample_batches(ctx: vizkit.RunContext) -> Iterator[tuple[torch.Tensor, bool]]:
    """(batch, whether it comes from --data): the --image inputs, then the readable --data
    images in batches, one batch in memory at a time (unreadable files are skipped and recorded
    in ``ctx.skipped``)."""
    if ctx.image_paths or ctx.image_tensors is not None:
        yield ctx.images(), False
    if ctx.data is not None:
        for images, _ in ctx.batches():
            yield images, True


def activity(ctx: vizkit.RunContext, layer: str) -> tuple[np.ndarray | None, int]:
    """Per filter, the largest output of the convolution over the sample images (None: no
    sample), and how many images the sample held."""
    im = ctx.instrumented
    peak, count, from_data = None, 0, 0
    if ctx.data is not None:
        ctx.first_image()  # a --data without one readable image: one error line, before any warning
    with im.configured(layers=[layer], switches=False), torch.no_grad():
        for batch, data in _sample_batches(ctx):
            out = im(batch, until=layer)
            value = out.transpose(0, 1).flatten(1).amax(dim=1)
            peak = value if peak is None else torch.maximum(peak, value)
            count += batch.shape[0]
            from_data += batch.shape[0] if data else 0
    if ctx.data is not None and len(ctx.data) and not from_data:  # not one --data image was readable
        raise ctx.skipped.none_readable(ctx.dataset())
    return (None if peak is None else peak.float().cpu().numpy()), count


def run(ctx: vizkit.RunContext, layer: str | None, dead_fraction: float, top: int) -> vizkit.Result:
    im = ctx.instrumented
    size = ctx.preprocess.crop
    name, conv = first_conv(ctx.model, im, torch.zeros(1, 3, size, size, device=ctx.device), layer)
    weight = conv.weight.detach().cpu().float()
    rms = weight.pow(2).mean(dim=(1, 2, 3)).sqrt().numpy()
    median = float(np.median(rms))
    tiny = rms < dead_fraction * median
    peak, sample_images = activity(ctx, name)
    silent = (peak <= 0) if peak is not None else np.zeros_like(tiny)
    dead = tiny | silent
    order = np.argsort(-rms)
    top = max(1, min(top, rms.size))
    bands = band_energy(weight)
    result = vizkit.Result(
        summary={
            "layer": name,
            "filters": int(rms.size),
            "kernel": list(conv.kernel_size),
            "stride": list(conv.stride),
            "rms_mean": float(rms.mean()),
            "rms_median": median,
            "rms_max": float(rms.max()),
            "rms_min": float(rms.min()),
            "dead": int(dead.sum()),
            "dead_low_rms": int(tiny.sum()),
            "dead_never_active": int(silent.sum()) if peak is not None else None,
            "sample_images": sample_images,  # readable ones
            "dominance_top": top,
            # in float64: float32 sums in two orders made all filters' share 0.99999994, not 1
            "dominance": float(rms[order[:top]].astype(np.float64).sum() / max(rms.astype(np.float64).sum(), 1e-30)),
            "rms_share_uniform": top / rms.size,
            "band_energy_mean": dict(zip(BANDS, bands.mean(axis=0).round(4).tolist())),
            "high_frequency_filters": int((bands[:, 2] > 0.5).sum()),
            "low_frequency_filters": int((bands[:, 0] > 0.8).sum()),
        },
        arrays={
            "weights": weight.numpy(),
            "rms": rms.astype(np.float32),
            "band_energy": bands.astype(np.float32),
            "dead": dead,
            "peak_activation": peak if peak is not None else np.zeros(0, dtype=np.float32),
        },
    )
    result.figures["filters"] = _grid(weight, rms, dead, name)
    result.figures["filter_diagnostics"] = _diagnostics(rms, bands, dead, dead_fraction * median, name, result.summary)
    return result


def _grid(weight: torch.Tensor, rms: np.ndarray, dead: np.ndarray, name: str):
    count, channels, kh, kw = weight.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    gap = 1
    canvas = np.ones((rows * (kh + gap) + gap, columns * (kw + gap) + gap, 3), dtype=np.float32)
    for index in range(count):
        # an RGB filter as colour; any other (a deeper layer's, a greyscale input's) as the mean
        # over its input channels, taken before the scaling: scaling each channel and then
        # averaging dozens of them left every tile a near-uniform grey
        w = weight[index] if channels == 3 else weight[index].mean(0, keepdim=True)
        w = w - w.mean()
        w = w / (2 * w.abs().max().clamp(min=1e-12)) + 0.5  # each filter contrast-normalised about grey
        tile = w.permute(1, 2, 0).numpy() if channels == 3 else np.repeat(w.permute(1, 2, 0).numpy(), 3, axis=2)
        r, c = divmod(index, columns)
        canvas[gap + r * (kh + gap) : gap + r * (kh + gap) + kh, gap + c * (kw + gap) : gap + c * (kw + gap) + kw] = (
            np.clip(tile, 0, 1)
        )
    figure = new_figure(7, 7 * rows / columns + 0.6)
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    how = "each scaled to its own range" if channels == 3 else f"mean over the {channels} input channels, each scaled"
    if kh * kw == 1:
        how = "1x1: no spatial pattern, every tile grey"
    ax.set_title(f"{name}: {count} filters {kh}x{kw} ({how}; {int(dead.sum())} dead)", fontsize=9)
    return figure


def _diagnostics(rms: np.ndarray, bands: np.ndarray, dead: np.ndarray, threshold: float, name: str, summary: dict):
    figure = new_figure(12, 3.8)
    order = np.argsort(-rms)
    ax = figure.add_subplot(1, 2, 1)
    colours = np.where(dead[order], "tab:red", "tab:blue")
    ax.bar(np.arange(rms.size), rms[order], color=colours, width=1.0)
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label=f"dead below {threshold:.3g}")
    ax.set_xlabel("filter (sorted by RMS)")
    ax.set_ylabel("RMS of weights")
    ax.set_title(
        f"{name}: top {summary['dominance_top']} hold {summary['dominance']:.0%} of the summed RMS "
        f"(uniform: {summary['rms_share_uniform']:.0%}); {summary['dead']} dead",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    ax = figure.add_subplot(1, 2, 2)
    by_high = np.argsort(bands[:, 2])
    bottom = np.zeros(rms.size)
    for band, colour in zip(range(3), ("tab:green", "tab:orange", "tab:purple")):
        ax.bar(np.arange(rms.size), bands[by_high, band], bottom=bottom, color=colour, width=1.0, label=BANDS[band])
        bottom += bands[by_high, band]
    ax.set_ylim(0, 1)
    ax.set_xlabel("filter (sorted by high-frequency share)")
    ax.set_ylabel("share of spectral energy")
    mean = summary["band_energy_mean"]
    ax.set_title(
        f"frequency bands (mean low {mean['low']:.2f} / mid {mean['mid']:.2f} / high {mean['high']:.2f})", fontsize=9
    )
    ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="filters",
            description="First-layer filter diagnostics: filter grid, RMS, dead filters, dominance, frequency bands (Fig. 6)",
            run=run,
            inputs="none",
            options=[
                vizkit.Option(
                    "layer", str, None, help="convolution to diagnose (default: the first one applied to the image)"
                ),
                vizkit.Option(
                    "dead_fraction",
                    float,
                    0.05,
                    help="a filter is dead below this fraction of the median RMS",
                    minimum=0,
                    maximum=1,
                ),
                vizkit.Option(
                    "top",
                    int,
                    5,
                    help="dominance: share of the summed RMS held by this many largest filters",
                    minimum=1,
                ),
            ],
            demo={},
            view=vizkit.ReportView(paper="Fig. 6", paper_order=6),  # the report's place: the generic rendering
        )
    )
