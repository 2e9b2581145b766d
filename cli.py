#!/usr/bin/env python3
"""hpsh-tf2 command line: a thin face over hpsh_tf2.cli (same as the `hpsh` console script)."""

import sys

from hpsh_tf2.cli import main

if __name__ == "__main__":
    sys.exit(main())
