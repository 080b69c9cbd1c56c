"""``python -m heatgate``: the ``heatgate`` command."""

import sys

from heatgate.agent.cli import main

sys.exit(main())
