"""``python -m rtml ...``: the same as the ``rtml`` command."""

import sys

from rtml.cli import main

sys.exit(main())
