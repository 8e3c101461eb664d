"""Benchmark: deconvnet projections of k maps, vizkit vs captum NeuronDeconvolution, same run.

    python bench/deconv.py [--layer features.12] [--maps 9] [--repeats 3]

Uses the real SqueezeNet and a real image from ../shared (VIZKIT_SHARED). vizkit projects all k
maps in one batched forward/backward; captum's NeuronDeconvolution takes one neuron per call.
Prints the median seconds of each and the ratio, and the largest relative difference between
vizkit (divided by the activation value) and captum.
"""

from __future__ import annotations

import argparse
import warnings

import torch

import vizkit
from common import POMERANIAN, median_time, squeezenet
from vizkit.engine.deconv import project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="features.12")
    parser.add_argument("--maps", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image", default=str(POMERANIAN))
    args = parser.parse_args()
    from captum.attr import NeuronDeconvolution

    model = squeezenet()
    x = vizkit.load_images([args.image], vizkit.Preprocess())
    with vizkit.instrument(model) as im:
        im(x)
        act = im.activation(args.layer)
        channels = act.flatten(2).amax(2)[0].argsort(descending=True)[: args.maps].tolist()
        t_auto, ours = median_time(lambda: project(im, x, args.layer, channels), args.repeats)
        t_expl, _ = median_time(lambda: project(im, x, args.layer, channels, method="explicit"), args.repeats)
    module = dict(model.named_modules())[args.layer]

    def captum_all():
        deconv = NeuronDeconvolution(model, module)
        return [
            deconv.attribute(x, neuron_selector=(c, *ours.positions[0, j].tolist())) for j, c in enumerate(channels)
        ]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_captum, theirs = median_time(captum_all, args.repeats)
    error = max(
        float((ours.images[0, j] / ours.values[0, j] - theirs[j][0]).norm() / theirs[j][0].norm())
        for j in range(len(channels))
    )
    print(f"squeezenet1_0 {args.layer}, {len(channels)} maps, torch threads {torch.get_num_threads()}")
    print(f"  vizkit autograd : {t_auto:.3f} s")
    print(f"  vizkit explicit : {t_expl:.3f} s")
    print(f"  captum          : {t_captum:.3f} s")
    print(f"  ratio captum / vizkit autograd = {t_captum / t_auto:.2f}x; explicit = {t_captum / t_expl:.2f}x")
    print(f"  max relative difference vizkit vs captum: {error:.1e}")


if __name__ == "__main__":
    main()
