"""The ADN paper's figures (Zeiler, Taylor & Fergus, ICCV 2011, Figs. 2-4).

* ``projections_layer<l>.png``: for every feature map of layer l, its strongest activation over
  the images searched, projected to pixels by the top-down reconstruction through that image's
  inferred switches (for layer 1 this is the filter itself, scaled; above, the pixel-space
  "filters" of the paper). Each tile is cropped around the projection's support.
* ``reconstructions.png``: images and their reconstructions ``R_l p_l`` from each layer.

Grey is zero; both signs shown (the codes are signed), each tile scaled to its own maximum.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .model import load_adn_model
from .network import AdnNetwork
from .reconstruction import reconstruct, reconstruct_unpooled
from .training import TrainSettings, load_prepared, training_images


@dataclass
class Strongest:
    """Where a map's strongest activation is: image, position, value."""

    image: int = -1
    y: int = 0
    x: int = 0
    value: float = 0.0


def strongest_activations(network: AdnNetwork, images: Tensor, batch_size: int = 16) -> list[list[Strongest]]:
    """Per layer, per unpooled map: the largest |z| over ``images`` and where it is."""
    best = [[Strongest() for _ in range(k)] for k in network.config.maps[: network.trained_layers]]
    for start in range(0, images.shape[0], batch_size):
        codes = network.infer(images[start : start + batch_size])
        for layer, code in enumerate(codes):
            magnitude = code.z.abs()
            _, k, h, w = magnitude.shape
            values, flat = magnitude.permute(1, 0, 2, 3).reshape(k, -1).max(dim=1)
            for m in range(k):
                if float(values[m]) > abs(best[layer][m].value):
                    i, rest = divmod(int(flat[m]), h * w)
                    yy, xx = divmod(rest, w)
                    best[layer][m] = Strongest(start + i, yy, xx, float(code.z[i, m, yy, xx]))
    return best


def project(
    network: AdnNetwork, image: Tensor, layer: int, unit: Strongest, map_index: int, codes: list | None = None
) -> Tensor:
    """The pixel-space projection ``[H, W]`` of one unpooled activation of layer ``layer``
    (1-based): that activation alone, reconstructed down through the image's inferred switches
    (``codes``: the image's inferred codes, when already at hand)."""
    codes = (network.infer(image[None], layers=layer) if codes is None else codes)[:layer]
    z = torch.zeros_like(codes[-1].z)
    z[0, map_index, unit.y, unit.x] = unit.value
    below = [code.switches for code in codes[:-1]]
    return reconstruct_unpooled(z, network.filters[:layer], below)[0, 0]


def _crop(projection: Tensor, size: int) -> Tensor:
    """A ``size`` x ``size`` window centred on the projection's support (zeros outside the image)."""
    support = (projection.abs() > 1e-6 * float(projection.abs().max().clamp(min=1e-30))).nonzero()
    if support.numel() == 0:
        centre = (projection.shape[0] // 2, projection.shape[1] // 2)
    else:
        centre = (int(support[:, 0].float().mean()), int(support[:, 1].float().mean()))
    half = size // 2
    padded = torch.nn.functional.pad(projection, (half, half, half, half))
    return padded[centre[0] : centre[0] + size, centre[1] : centre[1] + size]


def _extent(projection: Tensor) -> int:
    support = (projection.abs() > 1e-3 * float(projection.abs().max().clamp(min=1e-30))).nonzero()
    if support.numel() == 0:
        return 1
    return int(max(support[:, 0].max() - support[:, 0].min(), support[:, 1].max() - support[:, 1].min())) + 1


def _tile(ax, picture: Tensor, title: str | None = None) -> None:
    scale = float(picture.abs().max()) or 1.0
    ax.imshow(picture.numpy(), cmap="gray", vmin=-scale, vmax=scale, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, pad=2)


def draw_projections(network: AdnNetwork, images: Tensor, strongest: list[list[Strongest]], out: Path) -> list[Path]:
    """One PNG per layer: every map's strongest activation projected to pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    inferred: dict[int, list] = {}  # each winning image's codes, inferred once for all its maps

    def codes_of(index: int) -> list:
        if index not in inferred:
            inferred[index] = network.infer(images[index][None])
        return inferred[index]

    for layer, units in enumerate(strongest, start=1):
        projections = [
            project(network, images[u.image], layer, u, m, codes_of(u.image))
            if u.image >= 0
            else torch.zeros(images.shape[-2:])
            for m, u in enumerate(units)
        ]
        size = min(max(_extent(p) for p in projections) + 2, images.shape[-1])
        columns = math.ceil(math.sqrt(len(units) * 1.6))
        rows = math.ceil(len(units) / columns)
        width = max(columns * 0.9, 6.0)
        figure, axes = plt.subplots(rows, columns, figsize=(width, rows * 0.95 + 0.8), squeeze=False)
        for index, ax in enumerate(axes.flat):
            if index < len(units):
                _tile(ax, _crop(projections[index], size), f"{index}")
            else:
                ax.axis("off")
        title = (
            f"ADN layer {layer}: each of its {len(units)} maps' strongest activation over {images.shape[0]} "
            f"images, projected to pixels by R_{layer} through the image's switches ({size}x{size} px crops, grey = 0)"
        )
        figure.suptitle("\n".join(textwrap.wrap(title, int(width * 14))), fontsize=9)
        figure.tight_layout(rect=(0, 0, 1, 0.94))
        path = out / f"projections_layer{layer}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def draw_reconstructions(network: AdnNetwork, images: Tensor, out: Path, count: int = 4) -> Path:
    """Rows: images; columns: the input and its reconstruction from each layer, with the
    relative error ``||R_l p_l - y||^2 / ||y||^2``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = images[:count]
    codes = network.infer(y)
    layers = len(codes)
    figure, axes = plt.subplots(
        y.shape[0], layers + 1, figsize=(1.9 * (layers + 1), 2.0 * y.shape[0] + 0.4), squeeze=False
    )
    for row in range(y.shape[0]):
        _tile(axes[row, 0], y[row, 0], "input (contrast-normalised)" if row == 0 else None)
        for layer in range(1, layers + 1):
            switches = [code.switches for code in codes[:layer]]
            estimate = reconstruct(
                codes[layer - 1].p[row : row + 1], network.filters[:layer], [_one(s, row) for s in switches]
            )
            error = float((estimate[0, 0] - y[row, 0]).pow(2).sum() / y[row, 0].pow(2).sum())
            _tile(axes[row, layer], estimate[0, 0], f"layer {layer}: error {error:.2f}")
    figure.suptitle("Reconstructions R_l p_l from each layer's code alone", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    path = out / "reconstructions.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _one(switches, row: int):
    from .pooling import Switches

    return Switches(index=switches.index[row : row + 1], shape=switches.shape, region=switches.region)


def draw_figures(run: Path, data: Path, out: Path, count: int = 64, seed: int = 1) -> list[Path]:
    """The figures for the ADN in ``run``, searching ``count`` images of ``data``."""
    model = load_adn_model(run)
    network = model.network()
    out.mkdir(parents=True, exist_ok=True)
    classes = [p for p in Path(data).iterdir() if p.is_dir()] if Path(data).is_dir() else []
    per_class = max(1, math.ceil(count / max(len(classes), 1)))
    paths = training_images(Path(data), TrainSettings(per_class=per_class, limit=count), seed)
    images = load_prepared(paths, network.config.image_size)
    strongest = strongest_activations(network, images)
    written = draw_projections(network, images, strongest, out)
    written.append(draw_reconstructions(network, images, out))
    record = {
        "images": [str(p) for p in paths],
        "strongest": [[vars(u) for u in layer] for layer in strongest],
    }
    (out / "figures.json").write_text(json.dumps(record, indent=1) + "\n")
    return written
