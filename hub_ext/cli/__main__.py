"""``python -m hub_ext.cli``: the ``shipyard`` command."""

import sys

from hub_ext.cli.main import main

sys.exit(main())
