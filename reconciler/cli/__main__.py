"""``python -m reconciler.cli``: the ``reconciler`` command."""

import sys

from reconciler.cli import main

sys.exit(main())
