"""``python -m mlharness``: the same as the ``mlx`` command."""

import sys

from mlharness.cli import main

if __name__ == "__main__":
    sys.exit(main())
