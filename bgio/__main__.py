"""Run the ``bgio`` command line as ``python -m bgio``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
