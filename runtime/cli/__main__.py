"""`python -m worldwalk.runtime.cli`."""

import sys

from .main import main

sys.exit(main())
