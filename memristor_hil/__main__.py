"""``python -m memristor_hil`` is the ``memristor-hil`` command."""

import sys

from memristor_hil.cli import main

sys.exit(main())
