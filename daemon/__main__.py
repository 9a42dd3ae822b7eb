"""`python -m daemon` runs the reka-sync command line."""

import sys

from daemon.cli import main

sys.exit(main())
