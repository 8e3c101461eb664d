"""``vizkit.instrument(model)``: a model that records its forwards and projects what it saw.

:class:`Instrumented` is a :class:`~vizkit.engine.recorder.Recorder` (activations, switches,
scoped settings) with the deconvnet projection of its last input one call away. Every hook is
removed when its ``with`` block ends, also on error; :func:`hook_counts` checks that.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn

from vizkit.engine.deconv import Projection, project
from vizkit.engine.recorder import Recorder
from vizkit.errors import VizkitError


class Instrumented(Recorder):
    """An instrumented model: call it like the model; read activations, switches, projections.

    Create it with :func:`instrument` and use it as a context manager.
    """

    def project(self, layer: str, channel: int | Sequence[int], **options: Any) -> Tensor:
        """Deconvnet projection of the last input's ``layer``/``channel`` to pixel space.

        ``channel`` an int gives [B,3,H,W]; a list gives [B,k,3,H,W]. Options are those of
        :func:`vizkit.project` (``position``, ``target``, ``method``, ``rule``).

        A map that is silent on an image (no activation above zero there, or a zero unit at
        ``position``) projects to all zeros, a mid-grey picture: that is said in one
        ``UserWarning`` per call, naming the layer, the maps and the images, and how to pick the
        strongest map instead. (:func:`vizkit.project` does not warn: its ``values`` are 0 there.)
        """
        if self.input is None:
            raise VizkitError("run a forward pass first: project() projects the last input")
        channels = [channel] if isinstance(channel, int) else list(channel)
        result = project(self, self.input, layer, channels, **options)
        info = next((i for i in self.layer_infos() if i.name == self.resolve_alias(layer)), None)
        spatial = info is None or info.shape is None or len(info.shape) > 2
        _warn_if_silent(result, layer, spatial, options.get("position") is not None)
        return result.images[:, 0] if isinstance(channel, int) else result.images

    def __enter__(self) -> Instrumented:
        super().__enter__()
        return self

    def _repr_html_(self) -> str:
        """In a notebook: the layers of the last forward (name, type, output shape, whether the
        activation was kept and the pooling switches recorded) and what forwards record now."""
        from vizkit.engine.display import recorder_html

        return recorder_html(self)


def _warn_if_silent(result: Projection, layer: str, spatial: bool, at_position: bool) -> None:
    """One warning for the maps whose projection is all zero because they are silent on the image
    (their projected activation is 0): the user would otherwise see a grey picture and no reason."""
    zero = result.images.flatten(2).abs().amax(dim=2) == 0  # [B, k]
    silent = ((result.values == 0) & zero).nonzero().tolist()
    if not silent:
        return
    rows: list[list[int]] = [
        [int(c) for c in row]
        for row in (result.channels if isinstance(result.channels[0], list) else [result.channels])
    ]
    maps = sorted({rows[b if len(rows) > 1 else 0][j] for b, j in silent})
    images = sorted({b for b, _ in silent})
    several = len(maps) > 1
    subject = f"map{'s' if several else ''} {_some(maps)} of layer '{layer}'"
    where = f" on image{'s' if len(images) > 1 else ''} {_some(images)}" if result.images.shape[0] > 1 else ""
    outcome = f"so {'their projections are' if several else 'its projection is'} all zero (mid-grey in vizkit.to_image)"
    if at_position:
        message = (
            f"{subject} {'are' if several else 'is'} 0 at the given position{where}, {outcome}; "
            "leave position out to project each map's strongest unit"
        )
    else:
        scores = ".flatten(1).amax(1)" if spatial else ""
        message = (
            f"{subject} {'are' if several else 'is'} silent{where} (no activation above 0), {outcome}; "
            f"project a map that fires, e.g. the strongest: "
            f"channel=int(im.activation({layer!r})[{images[0]}]{scores}.argmax())"
        )
    warnings.warn(f"im.project: {message}", UserWarning, stacklevel=3)


def _some(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:8])) + (f" and {len(numbers) - 8} more" if len(numbers) > 8 else "")


def instrument(
    model: nn.Module,
    layers: str | Iterable[str] | None = "all",
    switches: bool = True,
    check_finite: bool = True,
) -> Instrumented:
    """Instrument ``model`` for the duration of a ``with`` block.

    ``layers``: "all" (default), None, or the names whose activations to record (clones).
    ``switches``: record the argmax indices of every max-pool (needed by the explicit deconvnet).
    ``check_finite``: a forward whose output (or ``until`` layer) holds NaN or inf, and an
    activation read that does, raise :class:`vizkit.NonFiniteActivation` naming the first layer
    that produced them (one ``isfinite().all()`` per output and per activation read; the
    layer-by-layer search runs only then). False lets them through.
    """
    return Instrumented(model, layers=layers, switches=switches, check_finite=check_finite)


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Number of hooks of each kind left on ``model`` and its submodules (0 when clean)."""
    kinds = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_always_called",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
    )
    counts = {kind: 0 for kind in kinds}
    for module in model.modules():
        for kind in kinds:
            counts[kind] += len(getattr(module, kind, {}) or {})
    return counts
