"""`python -m birdsed.cli`."""

import sys

from birdsed.cli import main

sys.exit(main())
