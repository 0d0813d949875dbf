"""``python -m tuneplay_tui``: the same as the ``tuneplay`` command."""

import sys

from tuneplay_tui.launcher import main

sys.exit(main())
