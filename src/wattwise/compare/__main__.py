"""`python -m wattwise.compare <folder>`."""

import sys

from wattwise.compare.cli import main

sys.exit(main())
