"""Allow ``python -m cli``; ``oee up`` starts its children this way."""

import sys

from cli import main

sys.exit(main())
