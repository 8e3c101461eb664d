"""``python -m vizkit`` (also what ``torchrun -m vizkit`` runs)."""

import sys

from vizkit.app.cli import main

sys.exit(main())
