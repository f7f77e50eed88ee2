"""``python -m pihub`` runs the ``pihub`` command."""

import sys

from pihub.cli import main

sys.exit(main())
