"""Make the README's gallery: docs/gallery/*.png.

    python scripts/make_gallery.py [--shared ../shared] [--out docs/gallery]

Every figure is computed on the real ImageNet SqueezeNet of ``../shared/models`` (only the figures
it makes are committed, never the weights) and on openly licensed photographs that ship with
vizkit's own dependencies, so no image of ``../shared/data`` ends up in the repository:
matplotlib's ``grace_hopper.jpg`` (US Navy photograph, public domain) and scikit-learn's
``china.jpg`` and ``flower.jpg`` (CC BY 2.0, credits in ``docs/gallery/CREDITS.md``).
Figures are downscaled to at most ``--width`` pixels wide to keep the repository small.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import matplotlib.cbook
import sklearn.datasets
from PIL import Image

import vizkit

CREDITS = """# Gallery credits

The figures in this folder are made by `scripts/make_gallery.py` from these photographs (none of
`../shared/data` is used) and the ImageNet SqueezeNet v1.0 of `../shared/models` (BSD licence).

- `grace_hopper.jpg`: Rear Admiral Grace M. Hopper, US Navy photograph (public domain), as shipped
  with matplotlib's sample data.
- `china.jpg`: photograph by danielbuechele, https://www.flickr.com/photos/danielbuechele/6061409035,
  CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/), as shipped with scikit-learn.
- `flower.jpg`: photograph by vultilion, https://www.flickr.com/photos/vultilion/6056698931,
  CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/), as shipped with scikit-learn.

The figures are derived works of those photographs under the same terms.
"""


def photographs() -> dict[str, Path]:
    """The openly licensed photographs the gallery is made from."""
    images = Path(sklearn.datasets.__file__).parent / "images"
    return {
        "grace_hopper": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
        "china": images / "china.jpg",
        "flower": images / "flower.jpg",
    }


def save_small(figure, path: Path, width: int) -> None:
    """``figure`` as a PNG at most ``width`` pixels wide (palette-quantised: a third of the bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "gallery")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--only", action="append", help="make only this analysis's figures (repeat)")
    args = parser.parse_args()
    model = vizkit.load_model(
        "torchvision:squeezenet1_0",
        weights=args.shared / "models" / "squeezenet1_0_imagenet.pt",
        labels=args.shared / "data" / "imagenet_classes.txt",
    )
    photos = photographs()
    hopper, china, flower = photos["grace_hopper"], photos["china"], photos["flower"]
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {
        "deconvnet": dict(images=[hopper], layer="features.7", top=9, maps_per_page=9, pages=1),
        "occlusion": dict(images=[hopper], size=48, stride=8),
        "attribution": dict(images=[hopper, china], method="saliency,guidedbackprop,integratedgradients,occlusion"),
        "filters": dict(),
        "invariance": dict(images=[flower], layers="features.0,features.7,features.12", steps=8),
        "sanity": dict(
            images=[hopper], method="deconvnet,guided,gradient,integratedgradients,layergradcam", metrics="none"
        ),
    }
    for name, options in runs.items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        result = vizkit.run(name, model, **options)
        for figure_name, figure in result.figures.items():
            if name in ("attribution", "sanity") and figure_name != name:
                continue  # the comparison plots and curves are for the report; the gallery shows the maps
            save_small(figure, args.out / f"{figure_name}.png", args.width)
            print(f"{args.out / figure_name}.png ({time.perf_counter() - started:.0f} s)")
    (args.out / "CREDITS.md").write_text(CREDITS)


if __name__ == "__main__":
    main()
