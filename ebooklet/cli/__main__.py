"""``python -m ebooklet.cli``, as ``python -m ebooklet``."""

import sys

from . import main

sys.exit(main())
