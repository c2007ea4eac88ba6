"""``python -m gradforge``: the same command line as the ``gradforge`` script."""
import sys

from .cli import main

sys.exit(main())
