"""``python -m cortex``: the ``cortex`` command line."""

import sys

from cortex.cli import main

sys.exit(main())
