import sys

from facelens.cli import main

sys.exit(main())
