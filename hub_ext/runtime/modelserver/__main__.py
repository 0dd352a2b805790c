"""``python -m hub_ext.runtime.modelserver``: see :mod:`.cli`."""

import sys

from hub_ext.runtime.modelserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
