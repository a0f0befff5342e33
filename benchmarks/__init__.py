"""Load benchmarks: run with `pytest benchmarks` (never under xdist), see conftest.py for options."""
