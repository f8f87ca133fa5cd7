"""`python -m rnnext ...`: the same command line as the `rnnext` console script (rnnext.cli)."""
import sys

from .cli import main

sys.exit(main())
