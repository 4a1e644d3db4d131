"""``python -m benchmarks``: the gazemix benchmark suite (see :mod:`benchmarks.main`)."""

import sys

from benchmarks.main import main

sys.exit(main())
