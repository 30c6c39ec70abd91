"""Allow ``python -m services.cli``; ``oee up`` starts its children this way."""

import sys

from services.cli import main

sys.exit(main())
