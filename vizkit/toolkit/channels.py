"""Selections as users write them: feature maps (``all``, ``0-63``, ``3,7,9``, or a mix) and
lists of layers (``conv5,fc7``)."""

from __future__ import annotations

from collections.abc import Sequence

from vizkit.errors import UsageError


def _indices(text: str) -> list[int]:
    channels: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                low, high = part.split("-", 1)
                channels.extend(range(int(low), int(high) + 1))
            else:
                channels.append(int(part))
    except ValueError:
        raise UsageError(f"--channels expects all, a range like 0-63 or a list like 3,7,9; not '{text}'") from None
    if not channels or any(c < 0 for c in channels):
        raise UsageError(f"--channels must name non-negative feature maps, not '{text}'")
    return list(dict.fromkeys(channels))  # duplicates dropped, order kept


def parse_channel_spec(text: str | None) -> str | None:
    """Check a selection's syntax as soon as it is given (the layer's size is known later).

    Returns the selection stripped, or None for an empty one; bad syntax is a UsageError.

    Args:
        text: ``all``, a range like ``0-63``, a list like ``3,7,9``, or a mix; None or blank: none given.
    """
    if text is None or str(text).strip() == "":
        return None
    text = str(text).strip()
    if text != "all":
        _indices(text)
    return text


def select_channels(spec: str | None, n_channels: int) -> list[int]:
    """The feature maps a selection names in a layer of ``n_channels`` maps (None: all).

    Args:
        spec: a selection as :func:`parse_channel_spec` accepts it; None or ``all``: every map.
        n_channels: how many feature maps the layer has; a map beyond it is a UsageError.
    """
    if spec is None or spec == "all":
        return list(range(n_channels))
    channels = _indices(spec)
    if max(channels) >= n_channels:
        raise UsageError(f"channel {max(channels)} is out of range: the layer has {n_channels} feature maps")
    return channels


def parse_layers(value: str | Sequence[str] | None) -> list[str]:
    """A list of layer names from ``"conv5,fc7"`` (the CLI) or a list (Python), order kept.

    Args:
        value: comma-separated names, or a sequence of names.
    """
    names = value.split(",") if isinstance(value, str) else list(value or [])
    layers = list(dict.fromkeys(str(name).strip() for name in names if str(name).strip()))
    if not layers:
        raise UsageError("--layers needs at least one layer name, e.g. --layers conv1,fc7")
    return layers
