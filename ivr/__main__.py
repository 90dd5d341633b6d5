"""``python -m ivr``: the same as the ``ivr`` console script."""

import sys

from ivr.cli import main

sys.exit(main())
