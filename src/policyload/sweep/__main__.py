"""`python -m policyload.sweep ...` (and `tox -e sweep`): see `policyload.sweep.cli`."""

import sys

from .cli import main

sys.exit(main())
