"""``python -m fxsnn.cli ...``: the ``fxsnn`` command."""

import sys

from .commands import main

sys.exit(main())
