"""``python -m hpsh_tf2``: the command line (the same as ``hpsh`` and ``python cli.py``)."""

import sys

from hpsh_tf2.cli import main

if __name__ == "__main__":
    sys.exit(main())
