"""`python -m benchmarks` is the same as the `litbench` command."""

import sys

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
