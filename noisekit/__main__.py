"""`python -m noisekit` (and `accelerate launch -m noisekit ...`): the command line."""

import sys

from .cli import main

sys.exit(main())
