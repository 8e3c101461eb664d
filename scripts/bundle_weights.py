"""Ship a training run's weights as the bundled zfnet-compact model.

    python scripts/bundle_weights.py RUN_DIR [--names ../shared/data/imagenet_classes.txt]
        [--which best|last|best+last|...] [--verify ../shared/data/imagenette]

writes vizkit/models/weights/zfnet_compact_imagenette.{pt,json} (fp16 state_dict of the best
validation epoch, ``--which last`` for the last, ``--which best+last`` for the average of the
two (``+`` joins any of best, last and snapshot epoch numbers); classes, preprocessing, epoch,
validation accuracy, the validation curve, when the rate was cut and the training command in the
JSON). An average was never evaluated by the training loop, so it needs ``--verify``.

``--verify DATA`` then measures the shipped weights outside the training loop: loaded through
``vizkit.load_model("zfnet-compact")`` (fp16 storage, fp32 compute) on every image of
``DATA/val``, read by torchvision's ImageFolder with torchvision's own resize/crop/normalise, and
records the result in the JSON as ``val_accuracy_measured``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchvision import datasets, transforms

import vizkit
from vizkit.models.bundled import COMPACT_WEIGHTS
from vizkit_plugins.train import export_weights


def measure(data: Path, meta: dict, batch_size: int = 200) -> tuple[int, int]:
    """(correct, total) of the bundled model on the whole ImageFolder ``data/val``."""
    p = meta["preprocess"]
    pipeline = transforms.Compose(
        [
            transforms.Resize(p["resize"]),
            transforms.CenterCrop(p["crop"]),
            transforms.ToTensor(),
            transforms.Normalize(p["mean"], p["std"]),
        ]
    )
    folder = datasets.ImageFolder(data / "val", pipeline)
    if folder.classes != meta["class_folders"]:
        raise SystemExit(f"{data}/val has classes {folder.classes}, the weights {meta['class_folders']}")
    model = vizkit.load_model("zfnet-compact").eval()
    loader = torch.utils.data.DataLoader(folder, batch_size=batch_size, num_workers=2)
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="folder written by `vizkit train`")
    parser.add_argument("--names", type=Path, help="wnid<TAB>name lines giving readable class names")
    parser.add_argument(
        "--which", default="best", help="best (validation epoch), last, or an average such as best+last or 30+best+last"
    )
    parser.add_argument("--verify", type=Path, help="an ImageFolder root with val/: measure the shipped weights")
    parser.add_argument(
        "--trained-with-commit", help="the vizkit commit whose `vizkit train` made the run (for bit-exact reproduction)"
    )
    args = parser.parse_args()
    if "+" in args.which and not args.verify:
        parser.error(f"--which {args.which} averages epochs the training loop never evaluated: pass --verify DATA")
    names = None
    if args.names:
        names = dict(line.split("\t", 1) for line in args.names.read_text().splitlines() if "\t" in line)
    meta = export_weights(args.run, COMPACT_WEIGHTS.with_suffix(""), names=names, which=args.which)
    if args.trained_with_commit:
        meta["trained_with_commit"] = args.trained_with_commit
        vizkit.framework.write_atomic(
            COMPACT_WEIGHTS.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode()
        )
    size = COMPACT_WEIGHTS.stat().st_size / 2**20
    what = f"average of epochs {meta['averaged_epochs']}" if "averaged_epochs" in meta else f"epoch {meta['epoch']}"
    loop = "" if meta["val_accuracy"] is None else f" (val top-1 {meta['val_accuracy']:.4f} in the training loop)"
    print(f"bundled {what}{loop} -> {COMPACT_WEIGHTS} ({size:.1f} MiB)")
    if args.verify:
        correct, total = measure(args.verify, meta)
        meta["val_accuracy_measured"] = {
            "top1": correct / total,
            "correct": correct,
            "images": total,
            "how": "torchvision ImageFolder + Resize/CenterCrop/Normalize, fp16 weights via vizkit.load_model",
        }
        if meta["val_accuracy"] is None:  # an average: this is its only measurement
            meta["val_accuracy"] = correct / total
        vizkit.framework.write_atomic(
            COMPACT_WEIGHTS.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode()
        )
        print(f"measured: {correct}/{total} = {correct / total:.4f} top-1 on {args.verify}/val")


if __name__ == "__main__":
    main()
