"""``python -m nodeflow``: the ``nodeflow`` command."""

import os
import sys

# `python -m` puts the current folder first on sys.path, so a file such as networkx.py lying
# there would be imported instead of the real library. Drop it (as `python -P` would), unless
# the current folder is the one nodeflow itself is imported from (a source checkout's root).
if not sys.flags.safe_path and sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath("."):
    _home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.realpath(_home) != os.path.realpath("."):
        del sys.path[0]

from nodeflow.cli import main  # noqa: E402

raise SystemExit(main())
