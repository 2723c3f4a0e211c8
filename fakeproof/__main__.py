"""``python -m fakeproof``: the ``fakeproof`` command (torch's elastic launcher runs it this way)."""

import sys

from fakeproof.cli import main

sys.exit(main())
