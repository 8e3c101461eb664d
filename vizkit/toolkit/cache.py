"""Where vizkit keeps what it may reuse across runs (feature caches, downloaded sample images)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VIZKIT_CACHE"


def cache_folder() -> Path:
    """vizkit's cache root: ``$VIZKIT_CACHE``, else ``~/.cache/vizkit``; each user of it keeps
    its own sub-folder (``features`` for the probes, ``samples`` for downloaded images)."""
    given = os.environ.get(CACHE_ENV)
    return Path(given).expanduser() if given else Path.home() / ".cache" / "vizkit"
