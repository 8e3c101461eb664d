"""Ship a training run's weights as the bundled zfnet-compact model.

    python scripts/bundle_weights.py RUN_DIR [--names ../shared/data/imagenet_classes.txt] [--which best|last]

writes vizkit/models/weights/zfnet_compact_imagenette.{pt,json} (fp16 state_dict of the best
validation epoch, ``--which last`` for the last; classes, preprocessing, epoch, validation accuracy,
the validation curve, when the rate was cut and the training command in the JSON).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vizkit.models.bundled import COMPACT_WEIGHTS
from vizkit_plugins.train import export_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="folder written by `vizkit train`")
    parser.add_argument("--names", type=Path, help="wnid<TAB>name lines giving readable class names")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="best validation epoch or last")
    args = parser.parse_args()
    names = None
    if args.names:
        names = dict(line.split("\t", 1) for line in args.names.read_text().splitlines() if "\t" in line)
    meta = export_weights(args.run, COMPACT_WEIGHTS.with_suffix(""), names=names, which=args.which)
    size = COMPACT_WEIGHTS.stat().st_size / 2**20
    print(f"bundled epoch {meta['epoch']} (val top-1 {meta['val_accuracy']:.4f}) -> {COMPACT_WEIGHTS} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
