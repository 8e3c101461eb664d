"""``python -m vizkit`` (also what ``torchrun -m vizkit`` runs)."""

import sys

from vizkit.cli import main

sys.exit(main())
