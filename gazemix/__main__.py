"""``python -m gazemix ...`` (also what ``torchrun -m gazemix train`` runs)."""

import sys

from gazemix.cli import main

sys.exit(main())
