"""``python -m fxsnn.cli ...``: the ``fxsnn`` command."""

import os
import sys

# `python -m` puts the working directory first on sys.path, so a torchvision.py there would shadow the real one;
# the command imports from the working directory only the module a --model spec names (issue 9, item 2).
if not getattr(sys.flags, "safe_path", False) and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .commands import main  # noqa: E402

sys.exit(main())
