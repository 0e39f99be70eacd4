"""`python -m tui.cli`: what torchrun and branch processes run."""

import sys

from tui.cli import main

sys.exit(main())
