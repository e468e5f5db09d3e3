"""`python -m facelens.cli`, as the single-module cli.py allowed."""

import sys

from facelens.cli import main

sys.exit(main())
