"""``python -m gaave_fast.cli``: the ``gaave`` command."""

import sys

from gaave_fast.cli import main

sys.exit(main())
