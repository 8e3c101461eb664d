#!/usr/bin/env bash
# A torchvision model with your own weights, from the command line: list its layers, project a
# layer's strongest feature maps with the deconvnet, map its occlusion sensitivity, and build one
# HTML page over both results.
#
#   bash examples/torchvision_cli.sh [OUT]          # default OUT: torchvision-cli-out
#
# Everything is a variable with a default (set it in the environment to change it):
#   MODEL    torchvision:squeezenet1_0              any torchvision:<builder>
#   WEIGHTS  $SHARED/models/squeezenet1_0_imagenet.pt   a state_dict for it (torch.save(model.state_dict(), f))
#   LABELS   $SHARED/data/imagenet_classes.txt      class names, one per line or wnid<TAB>name ("" for none)
#   IMAGE    $SHARED/data/imagenet-samples/n02112018_Pomeranian.jpg
#   LAYER    features.12                            a layer name from `vizkit layers MODEL`
#   TARGET   auto                                   occlusion's true class: auto (top-1), an index or a label
#   TOP      4                                      how many maps deconvnet projects
#   STRIDE   16                                     occluder step in pixels (smaller: finer and slower)
#   SHARED   $VIZKIT_SHARED or ../shared            where the data and weights live
#   VIZKIT   vizkit                                 the vizkit command (e.g. .venv/bin/vizkit)
# Weights are read with torch.load(weights_only=True): a file that needs arbitrary unpickling is
# refused unless you add --trust-weights.
set -euo pipefail

SHARED=${SHARED:-${VIZKIT_SHARED:-../shared}}
MODEL=${MODEL:-torchvision:squeezenet1_0}
WEIGHTS=${WEIGHTS:-$SHARED/models/squeezenet1_0_imagenet.pt}
LABELS=${LABELS-$SHARED/data/imagenet_classes.txt}
IMAGE=${IMAGE:-$SHARED/data/imagenet-samples/n02112018_Pomeranian.jpg}
LAYER=${LAYER:-features.12}
TARGET=${TARGET:-auto}
TOP=${TOP:-4}
STRIDE=${STRIDE:-16}
VIZKIT=${VIZKIT:-vizkit}
OUT=${1:-torchvision-cli-out}

if [[ ! -f $WEIGHTS ]]; then
    echo "torchvision_cli.sh: weights not found: $WEIGHTS (set WEIGHTS=your_state_dict.pt)" >&2
    exit 2
fi
model=(--model "$MODEL" --weights "$WEIGHTS")
if [[ -n $LABELS ]]; then
    model+=(--labels "$LABELS")
fi

mkdir -p "$OUT"
echo "== the layers of $MODEL (first 12 of them; all in $OUT/layers.txt)"
"$VIZKIT" layers "$MODEL" --weights "$WEIGHTS" >"$OUT/layers.txt"
head -n 14 "$OUT/layers.txt"

echo "== deconvnet: the $TOP strongest maps of $LAYER, projected to pixel space"
"$VIZKIT" run deconvnet "${model[@]}" --image "$IMAGE" --layer "$LAYER" --top "$TOP" \
    --out "$OUT/deconvnet" --overwrite

echo "== occlusion: a 48 px grey square every $STRIDE px, true class: $TARGET"
"$VIZKIT" run occlusion "${model[@]}" --image "$IMAGE" --layer "$LAYER" --target "$TARGET" \
    --size 48 --stride "$STRIDE" --out "$OUT/occlusion" --overwrite

"$VIZKIT" report "$OUT"
echo "== open $OUT/index.html"
