"""Progress bars for long loops: shown on a terminal, silent otherwise or with --quiet."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None = None, desc: str = "", enabled: bool = True, initial: int = 0) -> tqdm:
    """A tqdm bar on stderr; ``enabled=False`` gives a silent one with the same interface.

    Args:
        total: how many steps make the whole loop; None: unknown (a counter without a bar).
        desc: the label shown before the bar.
        enabled: False gives a silent bar (e.g. for --quiet).
        initial: the steps already done, when a loop resumes (e.g. from a checkpoint).
    """
    return tqdm(
        total=total, desc=desc, initial=initial, disable=not enabled, file=sys.stderr, leave=False, dynamic_ncols=True
    )
