"""`python -m policyload.plan ...`: see `policyload.plan.cli`."""

import sys

from .cli import main

sys.exit(main())
