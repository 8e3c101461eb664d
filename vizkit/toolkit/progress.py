"""Progress bars for long loops: shown on a terminal, silent otherwise or with --quiet."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None = None, desc: str = "", enabled: bool = True, initial: int = 0) -> tqdm:
    """A tqdm bar on stderr; ``enabled=False`` gives a silent one with the same interface."""
    return tqdm(
        total=total, desc=desc, initial=initial, disable=not enabled, file=sys.stderr, leave=False, dynamic_ncols=True
    )
