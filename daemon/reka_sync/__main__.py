"""`python -m reka_sync` runs the reka-sync command line."""

import sys

from reka_sync.cli import main

sys.exit(main())
