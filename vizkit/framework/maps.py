"""Map methods: the ways vizkit has of explaining one class score of one image with an
input-sized map (the deconvnet and its sibling rules, captum's attributions, occlusion, or a
plugin's own). An analysis that asks of *every* map the same question (``sanity``: does the map
depend on the model, on the class?) takes them from here, so a plugin's method is checked like
vizkit's own.

A plugin contributes one with the ``register_map_methods`` hook::

    @vizkit.hookimpl
    def register_map_methods(register):
        register(vizkit.MapMethod("edges", "image gradient magnitude (ignores the model)", edges))

where ``edges(request: vizkit.MapRequest) -> Tensor`` returns an [N, H, W] map per image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vizkit.errors import VizkitError


@dataclass(frozen=True)
class MapRequest:
    """What a map method is asked: explain ``targets`` of ``model`` on ``x``.

    Attributes:
        model: the model, in eval mode (during a sanity check, a randomized copy). A method may
            run it, hook it inside a ``with`` block, or copy it; it must leave it as it was.
        x: the [N, 3, H, W] preprocessed images.
        targets: the [N] class index each image's map explains.
        layer: the module the layer methods (Grad-CAM) look at, by name.
        baseline: the [3] normalised colour of "removed" pixels (occlusion, integrated gradients).
        batch_size: how many images one forward may hold.
        seed: the seed of whatever the method draws at random (noise, orders).
        options: method settings by name (``steps`` of integrated gradients, ``window`` and
            ``stride`` of occlusion); a method reads those it knows and ignores the rest.
    """

    model: nn.Module
    x: Tensor
    targets: Tensor
    layer: str
    baseline: Tensor = field(default_factory=lambda: torch.zeros(3))
    batch_size: int = 32
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class MapMethod:
    """One way of drawing an input-sized map that explains a class score.

    Attributes:
        name: its name on the command line (``--method``).
        description: one line for ``vizkit list`` and ``--help``.
        compute: ``compute(request) -> Tensor``: [N, H, W] maps, one per image, signed where the
            method has a sign (channels summed, as captum's figures show them).
        needs_layer: whether the method reads ``request.layer``.
        plugin: the plugin that registered it (set by the registry).
    """

    name: str
    description: str
    compute: Callable[[MapRequest], Tensor]
    needs_layer: bool = False
    plugin: str = field(default="", compare=False)

    def __call__(self, request: MapRequest) -> Tensor:
        """The method's maps, checked: [N, H, W] for the N images, finite."""
        maps = self.compute(request)
        n, _, height, width = request.x.shape
        if not isinstance(maps, Tensor) or tuple(maps.shape) != (n, height, width):
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise VizkitError(f"map method '{self.name}' returned {shape}, not [{n}, {height}, {width}] maps")
        if not bool(torch.isfinite(maps).all()):
            raise VizkitError(f"map method '{self.name}' gave non-finite maps")
        return maps.detach().float().cpu()
