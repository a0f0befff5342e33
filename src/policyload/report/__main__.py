"""`python -m policyload.report ...`: see `policyload.report.cli`."""

import sys

from .cli import main

sys.exit(main())
