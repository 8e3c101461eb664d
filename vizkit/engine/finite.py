"""Non-finite activations: the cheap checks, and the error that names where NaN/inf came from.

The recorder checks the model's output (or the ``until`` layer's) and every activation read with
one ``isfinite().all()`` each (:func:`all_finite`). When one fails it runs the forward again with
:attr:`Settings.locate <vizkit.engine.settings.Settings.locate>`: its hooks check every layer's
output as it appears and raise :class:`FoundNonFinite` at the first bad one. :func:`input_error`
and :func:`activation_error` turn what that found into the error the user sees:
:class:`NonFiniteInput` (the input itself was not finite) or :class:`NonFiniteActivation` (the
first layer that produced them, and the images affected).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from vizkit.errors import UsageError, VizkitError

RowName = Callable[[int], str | None]  # names the input image of a batch row, when it can


class NonFiniteActivation(VizkitError):
    """A layer produced NaN or infinite activations although the weights and input are finite
    (an overflow, a log of a negative, a division by zero inside the model).

    ``layer`` is the first layer whose output holds them (None: none of the layers did, the
    model's own ``forward`` code did), ``rows`` the batch positions affected (of ``batch``),
    ``images`` their names (a file name where the input could be matched to one, else None).
    It is a property of the model, not a mistake on the command line: the CLI exits with 1.
    """

    def __init__(
        self,
        layer: str | None,
        kinds: str,
        rows: list[int],
        images: list[str | None],
        batch: int,
        layer_type: str = "",
        what: str = "",
    ) -> None:
        self.layer, self.kinds, self.rows, self.images, self.batch = layer, kinds, rows, images, batch
        where = f"layer '{layer}'" if layer else "the model's output"
        names = [name or f"#{row}" for row, name in zip(rows, images)]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        on = f"image{'s' if len(names) > 1 else ''} {shown}"
        if any(name is None for name in images):
            on += f" of a batch of {batch}"
        on += f" ({what})" if what else ""
        kind = f"a {layer_type} module; " if layer_type else ""
        cause = (
            f"{kind}its input was finite: it overflows or computes an invalid value (0/0, log of a negative, ...)"
            if layer
            else "no layer's output did: the model's own forward code produced them"
        )
        super().__init__(f"{where} produced {kinds} activations on {on} ({cause}); check the model and its weights")


class NonFiniteInput(UsageError):
    """The input batch itself holds NaN or inf (e.g. an extreme ``--mean`` / ``--std``): a usage
    error, raised where :class:`NonFiniteActivation` would otherwise blame the first layer."""


class FoundNonFinite(BaseException):
    """Raised from a hook while locating: ``layer``'s output is the first non-finite one (a
    BaseException, like the recorder's early stop, so that a model whose ``forward`` catches
    every ``Exception`` does not swallow it)."""

    def __init__(self, layer: str, output: Tensor) -> None:
        super().__init__(layer)
        self.layer = layer
        self.output = output


def floating_tensors(value: Any) -> Iterator[Tensor]:
    """The floating-point tensors in a model output (a tensor, or tuples/lists/dicts of them)."""
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex():
            yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from floating_tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from floating_tensors(item)


def all_finite(value: Any) -> bool:
    """One ``isfinite().all()`` per floating tensor in ``value``."""
    return all(bool(torch.isfinite(t).all()) for t in floating_tensors(value))


def non_finite_kinds(tensor: Tensor) -> str:
    """What ``tensor`` holds that is not finite: "NaN", "inf" or "NaN and inf"."""
    nan, inf = bool(torch.isnan(tensor).any()), bool(torch.isinf(tensor).any())
    return "NaN and inf" if nan and inf else ("NaN" if nan else "inf")


def bad_rows(tensor: Tensor, batch: int) -> list[int]:
    """Batch positions whose part of ``tensor`` is not finite (every one when the tensor has
    no batch dimension)."""
    if tensor.dim() == 0 or tensor.shape[0] != batch:
        return list(range(batch))
    return [int(i) for i in (~torch.isfinite(tensor)).reshape(batch, -1).any(1).nonzero().flatten()]


def batch_size(x: Tensor) -> int:
    """The rows of an input batch (1 for a scalar)."""
    return int(x.shape[0]) if x.dim() > 0 else 1


def input_error(x: Tensor, name_row: RowName) -> NonFiniteInput | None:
    """:class:`NonFiniteInput` naming the rows of ``x`` that are not finite (at most three by
    name), or None when ``x`` is finite (or not floating point)."""
    if not x.is_floating_point() or bool(torch.isfinite(x).all()):
        return None
    rows = bad_rows(x, batch_size(x))
    shown = [name_row(row) or f"#{row}" for row in rows[:3]]
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    return NonFiniteInput(
        f"the input image{'s' if len(rows) > 1 else ''} {', '.join(shown)}{more} "
        f"hold{'' if len(rows) > 1 else 's'} {non_finite_kinds(x)} values after preprocessing: "
        "check --mean and --std (or the input tensor)"
    )


def activation_error(
    found: FoundNonFinite | None,
    output: Any,
    batch: int,
    layer_types: Mapping[str, str],
    name_row: RowName,
    what: str = "",
) -> NonFiniteActivation:
    """The error for a located forward: the layer ``found`` stopped at, else (no layer's output
    was not finite: the model's own code, or a different second forward) the model's ``output``.

    Args:
        found: what the locating forward's hooks raised, or None when it ran to its end.
        output: that forward's output (None when it stopped early).
        batch: the rows of its input.
        layer_types: the type name of every layer it ran (:attr:`LayerInfo.type`).
        name_row: names an input row (the first three affected are named).
        what: how the input was made from the images (e.g. "occluded at (8, 16)").
    """
    if found is not None:
        bad: Tensor | None = found.output
        layer: str | None = found.layer
    else:
        bad = next((t for t in floating_tensors(output) if not bool(torch.isfinite(t).all())), None)
        layer = None
    kinds = non_finite_kinds(bad) if bad is not None else "NaN/inf"
    rows = bad_rows(bad, batch) if bad is not None else list(range(batch))
    names = [name_row(row) for row in rows[:3]] + [None] * max(0, len(rows) - 3)
    return NonFiniteActivation(layer, kinds, rows, names, batch, layer_types.get(layer or "", ""), what)
