"""``python -m g4g5`` (from ``bench/``): the G4/G5 gate."""

import sys

from .cli import main

sys.exit(main(prog="python -m g4g5"))
