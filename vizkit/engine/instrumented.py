"""``vizkit.instrument(model)``: a model that records its forwards and projects what it saw.

:class:`Instrumented` is a :class:`~vizkit.engine.recorder.Recorder` (activations, switches,
scoped settings) with the deconvnet projection of its last input one call away. Every hook is
removed when its ``with`` block ends, also on error; :func:`hook_counts` checks that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn

from vizkit.engine.deconv import project
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
        """
        if self.input is None:
            raise VizkitError("run a forward pass first: project() projects the last input")
        channels = [channel] if isinstance(channel, int) else list(channel)
        result = project(self, self.input, layer, channels, **options)
        return result.images[:, 0] if isinstance(channel, int) else result.images

    def __enter__(self) -> Instrumented:
        super().__enter__()
        return self


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
