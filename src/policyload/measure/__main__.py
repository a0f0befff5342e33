"""`python -m policyload.measure serve`: the fresh-process server's internal command line
(started by `FreshProcessServer`; not meant to be run by hand)."""

import sys

from .fresh_process import serve

if sys.argv[1:] != ["serve"]:
    sys.exit("usage: python -m policyload.measure serve  (internal: the fresh-process server)")
serve()
