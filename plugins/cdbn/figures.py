"""The CDBN paper's figures (Lee et al., ICML 2009, Figs. 2 and 3), drawn from a trained run.

* ``bases_layer<l>.png``: every basis of layer l in pixel space. Layer 1's are its filters (in
  the whitened space the layer sees); a basis of layer l > 1 is drawn, as the paper draws them,
  as the weighted combination of the bases below it: its weights on the layer-below's pooling
  units spread over each pooling cell, then through that layer's filters, down to pixels.
* ``object_parts.png`` (several runs, one class each): each run's top-layer bases in a row.
* ``inference.png`` (with images): each image's layer-1 reconstruction ``E[v | h1]`` from
  feed-forward inference and from the combined bottom-up / top-down inference, which lets the
  layer above reshape layer 1's posterior (Sec. 3.6).

Grey is zero; each tile is scaled to its own largest magnitude.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .network import CdbnNetwork
from .training import RUN_JSON, finished_network, load_images


def pixel_bases(network: CdbnNetwork, layer: int) -> Tensor:
    """Layer ``layer``'s (1-based) bases in pixel space ``[K, S, S]``: the filters for layer 1;
    above, each basis's weights on the pooling units below, spread over their cells (each pooling
    unit's weight to every detection unit of its cell) and through the lower filters."""
    signal = network.layers[layer - 1].weight  # [K, C_below, k, k]
    for below in reversed(network.layers[: layer - 1]):
        spread = signal.repeat_interleave(below.pool, dim=-2).repeat_interleave(below.pool, dim=-1)
        signal = F.conv_transpose2d(spread, below.weight)
    return signal[:, 0]


def _tile_grid(tiles: Tensor, columns: int) -> Tensor:
    """``[K, S, S]`` tiles, each scaled to its own max |value| into [-1, 1], on a grid with
    1-pixel gaps (the gaps at 0, grey)."""
    k, s, _ = tiles.shape
    scaled = tiles / tiles.flatten(1).abs().amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    rows = math.ceil(k / columns)
    grid = torch.zeros(rows * (s + 1) + 1, columns * (s + 1) + 1)
    for i in range(k):
        r, c = divmod(i, columns)
        grid[1 + r * (s + 1) : 1 + r * (s + 1) + s, 1 + c * (s + 1) : 1 + c * (s + 1) + s] = scaled[i]
    return grid


def _label(run: Path) -> str:
    try:
        data = json.loads((run / RUN_JSON).read_text()).get("data", "")
    except (OSError, ValueError):
        return run.name
    return f"{Path(data).parent.name}/{Path(data).name} ({run.name})" if data else run.name


def draw_bases(network: CdbnNetwork, out: Path, title: str) -> list[Path]:
    """``bases_layer<l>.png`` for every layer of ``network``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for layer in range(1, len(network.layers) + 1):
        tiles = pixel_bases(network, layer).detach().float()
        columns = min(12, tiles.shape[0]) if layer == 1 else min(10, tiles.shape[0])
        grid = _tile_grid(tiles, columns)
        side = tiles.shape[-1]
        width = min(12.0, 0.9 + columns * (0.55 if side < 20 else 1.0))
        height = width * grid.shape[0] / grid.shape[1] + 0.6
        fig, ax = plt.subplots(figsize=(width, height))
        ax.imshow(grid.numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        what = "filters (whitened space)" if layer == 1 else "as combinations of the bases below"
        ax.set_title(f"{title}: layer {layer}, {tiles.shape[0]} bases of {side}x{side} px, {what}", fontsize=9)
        fig.tight_layout()
        path = out / f"bases_layer{layer}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def draw_object_parts(runs: list[Path], out: Path) -> Path:
    """One row per run: its top layer's bases (the paper's Fig. 3: faces, cars, elephants, chairs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = [finished_network(run) for run in runs]
    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 2.9 * len(runs)), squeeze=False)
    for row, (run, network) in enumerate(zip(runs, networks)):
        top = len(network.layers)
        for column, layer in enumerate((top - 1, top)):
            ax = axes[row][column]
            ax.set_axis_off()
            if layer < 1:
                continue
            tiles = pixel_bases(network, layer).detach().float()
            ax.imshow(_tile_grid(tiles, 8).numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"{_label(run)}: layer {layer} ({tiles.shape[0]} bases, {tiles.shape[-1]} px)", fontsize=9)
    fig.suptitle("Object-part bases: layers 2 and 3 trained on one Caltech-101 class each", fontsize=10)
    fig.tight_layout()
    path = out / "object_parts.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_inference(network: CdbnNetwork, images: Tensor, out: Path, iterations: int = 10) -> tuple[Path, dict]:
    """``inference.png``: whitened image, layer-1 reconstruction from feed-forward inference and
    from combined inference; returns the path and how much the top-down signal moved layer 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = network.visible(images)
    forward = network.infer(images)
    combined = network.infer_combined(images, iterations)
    first = network.layers[0]
    rec_forward = first.visible_mean(forward[0][0])
    rec_combined = first.visible_mean(combined[0][0])
    change = float((combined[0][0] - forward[0][0]).abs().sum() / forward[0][0].abs().sum().clamp(min=1e-12))
    errors = {
        "feed_forward": float((rec_forward - v).pow(2).sum() / v.pow(2).sum()),
        "combined": float((rec_combined - v).pow(2).sum() / v.pow(2).sum()),
    }
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        for j, (tile, name) in enumerate(
            (
                (v[i, 0], "whitened image"),
                (rec_forward[i, 0], "E[v|h1], feed-forward"),
                (rec_combined[i, 0], "E[v|h1], combined"),
            )
        ):
            m = float(v[i, 0].abs().max())
            axes[i][j].imshow(tile.numpy(), cmap="gray", vmin=-m, vmax=m)
            axes[i][j].set_axis_off()
            if i == 0:
                axes[i][j].set_title(name, fontsize=9)
    fig.suptitle(
        f"Layer-1 reconstructions; top-down changes layer 1's posterior by {100 * change:.1f} % "
        f"(relative errors {errors['feed_forward']:.3f} vs {errors['combined']:.3f})",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "inference.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, {"posterior_change": change, "relative_errors": errors, "iterations": iterations}


def draw_figures(runs: list[Path], out: Path, data: Path | None = None, images: int = 4, seed: int = 1) -> list[Path]:
    """Every figure for ``runs`` into ``out`` (a sub-folder per run when there are several)."""
    from vizkit.data import images_per_class

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary: dict = {}
    for run in runs:
        network = finished_network(run)
        folder = out if len(runs) == 1 else out / run.name
        folder.mkdir(parents=True, exist_ok=True)
        written += draw_bases(network, folder, _label(run))
        if data is not None and len(network.layers) >= 2:
            paths = images_per_class(data, 1, seed, None)
            chosen = [
                paths[i]
                for i in torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))[:images].tolist()
            ]
            path, numbers = draw_inference(network, load_images(chosen, network.config.image_size), folder)
            written.append(path)
            summary[str(run)] = numbers
    if len(runs) > 1:
        written.append(draw_object_parts(runs, out))
    if summary:
        (out / "inference.json").write_text(json.dumps(summary, indent=2) + "\n")
    return written
